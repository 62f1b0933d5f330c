"""benchmarks/gpu_smoke.py with --tiny on the CPU: every step of both families runs and prints one JSON line,
and a failing step is reported (ok: false) and sets the exit code.

The script runs in a subprocess as on a bare CUDA machine: the library from PYTHONPATH=workflow, and the
packages such a machine may lack made unimportable (sys.modules[name] = None: `import name` raises and
importlib.util.find_spec(name) returns None), so an import-time dependency on them fails here.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_smoke.py"
STEPS = ["init", "stats", "templates", "rome", "eval", "rep_fit", "rep_eval", "reader"]
KEYS = {"family", "step", "seconds", "peak_gpu_mem_gb", "ok"}
ABSENT = ("omegaconf", "hydra", "pandas", "faiss", "snakemake", "jsonschema", "datasets",
          "sentence_transformers", "matplotlib", "wandb", "scipy", "sklearn")
PRELUDE = ("import runpy, sys; sys.modules.update(dict.fromkeys({absent!r})); "
           "sys.argv = [{script!r}] + sys.argv[1:]; runpy.run_path({script!r}, run_name='__main__')")


def run_smoke(*args: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    code = PRELUDE.format(absent=ABSENT, script=str(SCRIPT))
    proc = subprocess.run([sys.executable, "-c", code, "--tiny", "--device", "cpu", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    return proc, [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def by_family(lines: list[dict], family: str) -> list[dict]:
    return [r for r in lines if r["family"] == family]


def test_tiny_cpu_run_reports_every_step_of_both_families():
    proc, lines = run_smoke("--family", "both")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert [r["step"] for r in lines] == ["setup"] + STEPS * 2 + ["total"]
    for rec in lines:
        assert KEYS <= set(rec), rec
        assert rec["ok"] is True and rec["peak_gpu_mem_gb"] is None, rec  # null on CPU
        assert isinstance(rec["seconds"], float) and rec["seconds"] >= 0, rec
    for family in ("llama", "mistral"):
        steps = {r["step"]: r for r in by_family(lines, family)}
        assert list(steps) == STEPS
        assert steps["init"]["layer"] == 1 and steps["init"]["vocab"] == steps["init"]["tokenizer_vocab"]
        assert steps["stats"]["docs"] == 50 and steps["stats"]["tokens"] > steps["stats"]["key_dim"] == 128
        assert steps["templates"]["templates"] == 21
        assert steps["rome"]["cases"] == 8 and steps["rome"]["v_steps"] == 3
        assert all(isinstance(steps["rome"][k], float) for k in ("vstar_loss_first", "vstar_loss_last"))
        assert steps["eval"]["cases"] == 8 and steps["eval"]["items"] > 8 * 10
        assert 0.0 <= steps["eval"]["success_em_post"] <= 100.0
        assert steps["rep_fit"]["cases"] == 8 and steps["rep_fit"]["rep_steps"] == 3
        assert steps["rep_eval"]["stack"] == 400 and steps["rep_eval"]["trained"] == 8
        assert steps["rep_eval"]["items"] == steps["eval"]["items"]
        assert steps["reader"]["prompts"] == 8
    assert lines[-1]["failed"] == []


def test_failing_step_is_reported_and_sets_the_exit_code():
    proc, lines = run_smoke("--family", "llama", "--fail-step", "rome")
    assert proc.returncode != 0
    steps = {r["step"]: r for r in by_family(lines, "llama")}
    assert list(steps) == STEPS
    assert all(steps[s]["ok"] for s in ("init", "stats", "templates"))
    assert steps["rome"]["ok"] is False and "injected failure" in steps["rome"]["error"]
    assert all(steps[s]["ok"] is False and steps[s]["error"].startswith("not run") for s in STEPS[4:])
    assert lines[-1]["step"] == "total" and lines[-1]["ok"] is False and lines[-1]["failed"] == ["llama/rome"]
    assert "RuntimeError: injected failure" in proc.stderr  # the traceback is printed, not swallowed
