"""The SLURM profile gives every model-loading job of the planned 7B DAG a GPU, and names only real rules."""
import re
import subprocess
import sys

import pytest
import yaml

from conftest import REPO

SNAKEMAKE = [sys.executable, "-m", "snakemake", "--directory", str(REPO), "--snakefile", str(REPO / "Snakefile")]
PAPER_7B = "model=llama2-7b hardware=gpu experiment=paper"
CPU_ONLY = {"prepare_model"}  # downloads / converts weights: memory and disk, no GPU (see the profile)


def planned_jobs(*args) -> list[dict]:
    """Every job of a dry run: {"rule", "threads", "resources": {name: value}}."""
    res = subprocess.run(SNAKEMAKE + ["-n", *args], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    jobs = []
    for line in res.stdout.splitlines():
        m = re.match(r"(?:local)?rule (\w+):$", line)
        if m:
            jobs.append({"rule": m.group(1), "threads": 1, "resources": {}})
        elif jobs and line.strip().startswith("threads:"):
            jobs[-1]["threads"] = int(line.split(":", 1)[1])
        elif jobs and line.strip().startswith("resources:"):
            pairs = (kv.split("=", 1) for kv in line.split(":", 1)[1].split(", "))
            jobs[-1]["resources"] = {k.strip(): v.strip() for k, v in pairs}
    assert jobs, res.stdout[-3000:]
    return jobs


@pytest.fixture(scope="module")
def profile():
    return yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())


def test_profile_names_only_existing_rules(profile):
    res = subprocess.run(SNAKEMAKE + ["--list-rules"], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    rules = set(res.stdout.split())
    for section in ("set-threads", "set-resources"):
        unknown = set(profile[section]) - rules
        assert not unknown, f"profiles/slurm {section} names rules that do not exist: {sorted(unknown)}"


def test_every_model_loading_job_of_the_7b_plan_gets_a_gpu(tmp_path):
    overrides = f"overrides={PAPER_7B} paths.results={tmp_path}/results"
    # model-loading rules take `threads: MODEL_THREADS` (every core Snakemake is given): 3 marks them here
    local = planned_jobs("--cores", "3", "--config", overrides)
    model_rules = {j["rule"] for j in local if j["threads"] == 3} - CPU_ONLY
    assert {"cases", "stats", "templates", "rome", "eval_rome", "rep", "eval_rep", "eren_index", "eren_eval",
            "eren_scaling", "eren_suite", "fig_keys", "fig_unrelated", "fig_values"} <= model_rules
    slurm = planned_jobs("--workflow-profile", str(REPO / "profiles" / "slurm"), "--config", overrides)
    assert {j["rule"] for j in slurm} == {j["rule"] for j in local}
    for job in slurm:
        res = job["resources"]
        if job["rule"] in model_rules:
            assert res.get("gpu") == "1" and res.get("slurm_partition") == "gpu", job
            assert int(res["mem_mb"]) >= 64000, job  # a 7B model is loaded on the host first
        else:
            assert res.get("gpu", "0") == "0", job
    # the paper preset plans all 400 test cases and the hub's WikiText-103 train for C
    assert "table1" in {j["rule"] for j in slurm}


def test_a_hub_model_must_be_pinned_to_a_commit():
    res = subprocess.run(SNAKEMAKE + ["-n", "--config", "overrides=model=llama2-7b model.source.revision=main"],
                         cwd=REPO, capture_output=True, text=True)
    assert res.returncode != 0
    assert "model.source.revision: 'main' does not match" in res.stdout + res.stderr
