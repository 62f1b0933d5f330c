"""wandb logging (robustedit.tracking, scripts/wandb_log.py) in offline mode: what was logged is in the
offline run folder. The run's records are read back from its .wandb file (a LevelDB-style log of
protobuf records, read with wandb's own protobuf definitions)."""
from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from robustedit.errors import ConfigError
from robustedit.tracking import start_run

BLOCK, HEADER = 32768, 7  # the .wandb log's block size and its file/record header length


def read_records(path: Path) -> list:
    """Every record of a .wandb file (checksums are not verified)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, out, parts = HEADER, [], b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        pos += HEADER
        if length == 0 and kind == 0:
            pos += left - HEADER
            continue
        chunk, pos = data[pos:pos + length], pos + length
        parts = chunk if kind in (1, 2) else parts + chunk  # full/first start, middle/last continue
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(parts)
            out.append(rec)
    return out


def logged(run_dir: Path) -> dict:
    """config, summary and history keys of an offline run, from its .wandb file."""
    records = read_records(next(run_dir.glob("run-*.wandb")))
    config, summary, history = {}, {}, set()
    for rec in records:
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            config.update({u.key: json.loads(u.value_json) for u in rec.run.config.update})
        elif kind == "config":
            config.update({u.key: json.loads(u.value_json) for u in rec.config.update})
        elif kind == "summary":
            for u in rec.summary.update:
                summary["/".join(u.nested_key) if u.nested_key else u.key] = json.loads(u.value_json)
        elif kind == "history":
            history |= {"/".join(i.nested_key) if i.nested_key else i.key for i in rec.history.item}
    return {"config": config, "summary": summary, "history": history}


def tiny_png(path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def cfg_for(tmp_path: Path, mode: str = "offline") -> dict:
    return {"seed": 3, "model": {"name": "tiny-llama", "layer": 1}, "job": {"split": "valid"},
            "tracking": {"mode": mode, "project": "robustedit-test", "entity": None, "dir": str(tmp_path / "wandb"),
                         "tags": ["unit"]}}


def test_offline_run_holds_config_metrics_table_and_image(tmp_path):
    png = tiny_png(tmp_path / "fig.png")
    with start_run(cfg_for(tmp_path), name="unit") as tracker:
        tracker.log_metrics({"table1/ROME/success": 87.5})
        tracker.log_table("tables/table1",
                          [{"method": "ROME", "success": "87.5"}, {"method": "Unedited", "success": "0"}])
        tracker.log_image("figures/fig", png)
    run_dir = tracker.run_dir
    assert run_dir.parent == tmp_path / "wandb" / "wandb" and run_dir.name.startswith("offline-run-")
    # wandb's writer process may still be flushing records after finish() returns (seen on a loaded machine)
    deadline = time.time() + 60
    while "seed" not in (got := logged(run_dir))["config"] and time.time() < deadline:
        time.sleep(0.5)
    assert got["config"]["seed"] == 3 and got["config"]["model"] == {"name": "tiny-llama", "layer": 1}
    assert "job" not in got["config"]  # per-job values are not part of a run's config
    assert got["config"]["tracking"]["mode"] == "offline"
    assert got["summary"]["table1/ROME/success"] == 87.5
    assert {"tables/table1/path", "figures/fig/path"} <= got["history"]
    (table,) = (run_dir / "files" / "media" / "table").glob("tables/table1_*.table.json")
    saved = json.loads(table.read_text())
    assert saved["columns"] == ["method", "success"] and saved["data"] == [["ROME", "87.5"], ["Unedited", "0"]]
    (image,) = (run_dir / "files" / "media" / "images").glob("figures/fig_*.png")
    assert hashlib.sha256(image.read_bytes()).digest() == hashlib.sha256(png.read_bytes()).digest()


def test_disabled_logs_nothing_and_bad_mode_is_named(tmp_path):
    with start_run(cfg_for(tmp_path, "disabled")) as tracker:
        tracker.log_metrics({"x": 1})
        tracker.log_table("t", [{"a": 1}])
        tracker.log_image("i", tmp_path / "missing.png")
    assert not tracker.enabled and tracker.run_dir is None and not (tmp_path / "wandb").exists()
    with pytest.raises(ConfigError, match="tracking.mode='sometimes'"):
        start_run(cfg_for(tmp_path, "sometimes"))


def summary(model: str, method: str, success: float, unedited: bool = True, generation: float | None = None) -> dict:
    cols = {"success": success, "locality": 90.0, "rephrase_id": None}
    block = {"n_cases": 2, "metric": "exact_match", "locality_metric": "argmax_agreement", "columns": cols}
    out = {"model": model, "method": method, "split": "test", "include_unedited": unedited,
           "summaries": {"pre/exact_match/micro": {**block, "columns": {**cols, "success": 0.0}},
                         "post/exact_match/micro": block}}
    if generation is not None:  # the generation protocol's block too
        gen = {**block, "metric": "generation_match", "columns": {**cols, "success": generation}}
        out["summaries"].update({"pre/generation_match/micro": gen, "post/generation_match/micro": gen})
    return out


def test_wandb_log_script_logs_each_run(tmp_path):
    """The pipeline's wandb_log step on stub summaries, tables and figures."""
    from robustedit.pipeline.config import compose
    from robustedit.pipeline.stage import stage_dir

    overrides = [f"paths.results={tmp_path}/results", "eval.report_split=test"]
    cfg = compose(overrides)
    for stage, method, unedited, gen in (("eval_rome", "ROME", True, 25.0), ("eval_rep", "ROME+REP", False, None)):
        path = stage_dir(cfg, stage, "test") / "test.summary.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(summary("smollm2-135m", method, 75.0, unedited, gen)))
    table = tmp_path / "table1.csv"
    table.write_text("model,method,success\nsmollm2-135m,ROME,75.0\n")
    png = tiny_png(tmp_path / "key_similarity.png")
    out = tmp_path / "results" / "wandb" / "wandb_log.json"
    res = subprocess.run([sys.executable, "scripts/wandb_log.py", "--run", " ".join(overrides), "--stages", "eval_rome",
                          "eval_rep", "--tables", str(table), "--figures", str(png), "--out", str(out)],
                         cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    marker = json.loads(out.read_text())
    (run,) = marker["runs"]
    assert run["mode"] == "offline" and run["overrides"] == overrides
    run_dir = Path(run["dir"])
    assert run_dir.parent == tmp_path / "results" / "wandb" / "wandb"
    got = logged(run_dir)
    assert got["summary"]["table1/ROME/success"] == 75.0 and got["summary"]["table1/Unedited/success"] == 0.0
    assert got["summary"]["table1/ROME+REP/locality"] == 90.0 and "table1/ROME/rephrase_id" not in got["summary"]
    assert got["summary"]["table1_generation/ROME/success"] == 25.0  # a summary without the protocol logs none
    assert not any(k.startswith("table1_generation/ROME+REP/") for k in got["summary"])
    assert got["config"]["paths"]["results"] == f"{tmp_path}/results"
    assert {"tables/table1/path", "figures/key_similarity/path"} <= got["history"]


def test_wandb_log_script_logs_the_sequential_table_without_table1_stages(tmp_path):
    """The sequential target's wandb_log_sequential: no Table 1 summaries, its table and figure in the group."""
    overrides = [f"paths.results={tmp_path}/results"]
    table = tmp_path / "sequential.csv"
    table.write_text("model,method,n_edits,success,perplexity\nsmollm2-135m,ROME,10,90.0,21.5\n")
    png = tiny_png(tmp_path / "sequential.png")
    out = tmp_path / "results" / "wandb" / "wandb_log_sequential.json"
    res = subprocess.run([sys.executable, "scripts/wandb_log.py", "--run", " ".join(overrides), "--group", "sequential",
                          "--tables", str(table), "--figures", str(png), "--out", str(out)],
                         cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    (run,) = json.loads(out.read_text())["runs"]
    got = logged(Path(run["dir"]))
    assert {"tables/sequential/path", "figures/sequential/path"} <= got["history"]
    assert not any(k.startswith("table1") for k in got["summary"])
