"""The Snakemake DAG and the stage scripts, run as a user runs them."""
import json
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, model_dir

PY = sys.executable
SNAKEMAKE = [PY, "-m", "snakemake", "--directory", str(REPO), "--snakefile", str(REPO / "Snakefile")]


def run(cmd, **kw):
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, **kw)


def test_dry_run_plans_every_stage_and_keeps_models_apart(tmp_path):
    res = run(SNAKEMAKE + ["-n", "--config", 'runs=["model=smollm2-135m", "model=gemma3-270m"]',
                           f"overrides=paths.results={tmp_path}/results"])
    assert res.returncode == 0, res.stderr + res.stdout
    out = res.stdout
    for split in ("valid", "test"):
        assert f"{tmp_path}/results/smollm2-135m/cases/" in out and f"/{split}.jsonl" in out
        assert f"{tmp_path}/results/gemma3-270m/cases/" in out


def test_bad_override_fails_before_running():
    res = run(SNAKEMAKE + ["-n", "--config", "overrides=model.layer=99"])
    assert res.returncode != 0
    assert "layer 99 is out of range" in res.stdout + res.stderr


def build_cases(tmp_path, *overrides):
    return run([PY, "scripts/cases.py", f"paths.results={tmp_path}/results", *overrides])


def test_corrupted_data_stops_with_the_file_named_and_writes_nothing(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(REPO / "resources" / "data", data)
    path = data / "rep" / "valid.counterfact_para_prompt_para_subject.json"
    path.write_text(path.read_text().replace("Danielle", "Daniela", 1))
    res = build_cases(tmp_path, f"paths.data={data}", "job.split=valid")
    assert res.returncode != 0
    assert "valid.counterfact_para_prompt_para_subject.json: sha256" in res.stdout + res.stderr
    assert not list((tmp_path / "results").rglob("*.jsonl"))


def test_malformed_record_stops_with_the_record_named(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(REPO / "resources" / "data", data)
    rel = "rep/valid.counterfact_para_prompt_para_subject.json"
    records = json.loads((data / rel).read_text())
    records[2]["subject"] = "Somebody Else"
    (data / rel).write_text(json.dumps(records))
    manifest = json.loads((data / "MANIFEST.json").read_text())
    from robustedit.manifest import sha256_file
    manifest[rel]["sha256"] = sha256_file(data / rel)  # a deliberately edited, re-hashed file
    (data / "MANIFEST.json").write_text(json.dumps(manifest))
    res = build_cases(tmp_path, f"paths.data={data}", "job.split=valid")
    assert res.returncode != 0
    cid = records[2]["case_id"]
    assert f"record 2 (case_id {cid}): subject 'Somebody Else' not found in prompt" in res.stdout + res.stderr
    assert not list((tmp_path / "results").rglob("*.jsonl"))


@pytest.mark.integration
def test_gemma_cases_land_in_their_own_directory(tmp_path):
    model_dir("gemma3-270m")
    model_dir("smollm2-135m")
    for model in ("smollm2-135m", "gemma3-270m"):
        res = build_cases(tmp_path, f"model={model}", "job.split=valid", "data.max_cases=12")
        assert res.returncode == 0, res.stdout + res.stderr
    smol = list((tmp_path / "results" / "smollm2-135m" / "cases").glob("*/valid.jsonl"))
    gem = list((tmp_path / "results" / "gemma3-270m" / "cases").glob("*/valid.jsonl"))
    assert len(smol) == 1 and len(gem) == 1
    stats = json.loads(gem[0].with_name("valid.stats.json").read_text())
    assert stats["n_records"] == 12 and 0 < stats["filter"]["kept"] <= 12
    lines = gem[0].read_text().splitlines()
    assert len(lines) == stats["n_cases"] == stats["filter"]["kept"]
    case = json.loads(lines[0])
    assert {"subject_rephrases", "shuffled_subjects", "long_context", "neighborhood_prompts"} <= set(case)
    saved = json.loads(gem[0].with_name("stage_config.json").read_text())
    assert saved["keys"]["model.name"] == "gemma3-270m" and gem[0].parent.name == saved["hash"]


STAGE_ORDER = ["cases", "stats", "templates", "rome", "eval_rome", "rep", "eval_rep", "fig_keys", "fig_unrelated",
               "fig_values", "eren_index", "eren_eval", "eren_scaling", "eren_suite", "tables", "figures"]


def planned_outputs(tmp_path, *config):
    """(rule, [outputs]) of every job a dry run plans."""
    res = run(SNAKEMAKE + ["-n", "--cores", "2", "--config", f"overrides=paths.results={tmp_path}/results", *config])
    assert res.returncode == 0, res.stderr + res.stdout
    jobs, rule = [], None
    for line in res.stdout.splitlines():
        if line.startswith("rule "):
            rule = line.split()[1].rstrip(":")
        elif line.strip().startswith("output:") and rule:
            jobs.append((rule, [p.strip() for p in line.split(":", 1)[1].split(",")]))
    return jobs


def test_changing_only_the_gate_threshold_reruns_only_evaluation(tmp_path):
    """Fake a finished default run (every output present, older stages older), then ask for another
    threshold: only eval_rep jobs and the tables that gather them may be planned."""
    import os

    model_dir("smollm2-135m")
    base = 1 + max(p.stat().st_mtime for p in [REPO / "resources/models/smollm2-135m/SOURCE.json",
                                                REPO / "resources/data/MANIFEST.json"])
    jobs = planned_outputs(tmp_path)
    assert "prepare_model" not in {r for r, _ in jobs}  # never fake (overwrite) a real model folder
    assert {"cases", "stats", "templates", "rome", "eval_rome", "rep", "eval_rep"} <= {r for r, _ in jobs}
    for _rule, outs in jobs:
        rank = next(i for i, s in enumerate(STAGE_ORDER) if f"/{s}/" in outs[0] or f"/{s}" in outs[0])
        for out in outs:
            path = REPO / out if not out.startswith("/") else __import__("pathlib").Path(out)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")
            os.utime(path, (base + rank,) * 2)
    assert planned_outputs(tmp_path) == []  # the fake run is complete
    rerun = planned_outputs(tmp_path, "runs=[\"model=smollm2-135m rep.gate_threshold=0.42\"]")
    assert rerun and {r for r, _ in rerun} <= {"eval_rep", "table1", "gate_threshold"}
    assert {r for r, _ in rerun} >= {"eval_rep", "table1"}
    new_eval = [o for r, outs in rerun if r == "eval_rep" for o in outs]
    assert len(new_eval) == 4  # results + summary for the valid and test splits at threshold 0.42


def test_snakemake_lint_is_clean():
    res = run(SNAKEMAKE + ["--lint"])
    assert res.returncode == 0, res.stdout + res.stderr
    assert "your workflow is in a good condition" in res.stdout + res.stderr, res.stdout + res.stderr
