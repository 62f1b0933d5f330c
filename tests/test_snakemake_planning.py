"""Planning-time behaviour of the Snakefile, checked with dry runs: a forced rule passes job.fresh=true to its
stage (which then deletes its resume checkpoint)."""
from __future__ import annotations

from test_shell_quoting import dry_run, shell_commands


def test_forced_rule_passes_job_fresh_to_its_jobs_only(tmp_path):
    res = dry_run(tmp_path, [f"paths.results={tmp_path}/results"], "--printshellcmds", "--forcerun", "rome")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    commands = shell_commands(res.stdout)
    rome = [c for c in commands if "scripts/rome_edits.py" in c]
    assert len(rome) == 2 and all("++job.fresh=true" in c for c in rome)
    assert not any("++job.fresh=true" in c for c in commands if c not in rome)  # only the forced rule
    res = dry_run(tmp_path, [f"paths.results={tmp_path}/results"], "--printshellcmds")
    assert "++job.fresh=true" not in res.stdout  # a plain run resumes (after the stamp checks)
