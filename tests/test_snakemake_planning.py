"""Planning-time behaviour of the Snakefile, checked with dry runs: a forced rule passes job.fresh=true to its
stage (which then deletes its resume checkpoint), and a target that reads a split its run does not build
fails at planning, naming the key."""
from __future__ import annotations

import pytest
from test_shell_quoting import dry_run, shell_commands


def test_forced_rule_passes_job_fresh_to_its_jobs_only(tmp_path):
    res = dry_run(tmp_path, [f"paths.results={tmp_path}/results"], "--printshellcmds", "--forcerun", "rome")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    commands = shell_commands(res.stdout)
    rome = [c for c in commands if "scripts/rome.py" in c]
    assert len(rome) == 2 and all("++job.fresh=true" in c for c in rome)
    assert not any("++job.fresh=true" in c for c in commands if c not in rome)  # only the forced rule
    res = dry_run(tmp_path, [f"paths.results={tmp_path}/results"], "--printshellcmds")
    assert "++job.fresh=true" not in res.stdout  # a plain run resumes (after the stamp checks)


@pytest.mark.parametrize("overrides,target,key", [
    (["data.splits=[valid]"], [], "eval.report_split"),  # the default target: Table 1 reports test
    (["data.splits=[test]", "eval.report_split=test"], ["gate_threshold"], "rep.sweep_splits"),
    (["data.splits=[test]", "eval.report_split=test"], ["figures"], "analysis.split"),
])
def test_target_reading_an_unbuilt_split_fails_at_planning(tmp_path, overrides, target, key):
    res = dry_run(tmp_path, [f"paths.results={tmp_path}/results", *overrides], *target)
    assert res.returncode != 0
    assert f"{key} reads split(s)" in res.stdout + res.stderr and "does not build" in res.stdout + res.stderr
    assert "Job stats" not in res.stdout  # nothing planned


def test_target_needing_only_built_splits_plans(tmp_path):
    """`figures` reads analysis.split=valid only, so data.splits=[valid] is enough (README's small run)."""
    res = dry_run(tmp_path, [f"paths.results={tmp_path}/results", "data.splits=[valid]"], "figures")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "/test.jsonl" not in res.stdout and "/valid.jsonl" in res.stdout
