"""Stage `rome`: one ROME edit per case of a split (single-edit protocol), resumable.

    python scripts/rome.py job.split=valid
Writes <stage dir>/<split>.edits.pt ({"case_ids", "layer", "u" [N, key], "v" [N, hidden]}) and
<split>.rome.jsonl (per case: v* losses, number of updates, early stop, norms). Finished chunks of
cases are kept in <split>.edits.partial/ (one file each, checkpoints.CasePieces) and a rerun continues after
them if they have this run's case_ids, stage hash and code version (checkpoints.checkpoint_stamp); a forced
rerun (job.fresh=true, passed by `snakemake --forcerun rome`) starts afresh.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import torch

from robustedit.checkpoints import CasePieces, checkpoint_stamp
from robustedit.io import read_json, read_jsonl, remove_stray_temps, save_torch, write_jsonl
from robustedit.models.load import load_model, resolve_device
from robustedit.rome.compute_u import MomentSolver
from robustedit.rome.execute import execute_rome_detailed
from robustedit.rome.hparams import ROMEHyperParams
from robustedit.pipeline.stage import model_dir, stage_app, stage_file
from robustedit.stages import file_name

STAMP_FILES = (__file__,)  # the script a checkpoint's code version covers (besides the library, pipeline glue included)


@stage_app("rome")
def main(cfg: dict, out_dir: Path) -> None:
    split, hw = cfg["job"]["split"], cfg["hardware"]
    remove_stray_temps(out_dir, f"{split}.")  # temporary files of this split's outputs left by a killed run
    cases = read_jsonl(stage_file(cfg, "cases", "cases"))
    templates = read_json(stage_file(cfg, "templates", "templates"))
    hp = ROMEHyperParams.from_config(cfg["rome"])
    solver = None
    if hp.mom2_adjustment:
        C = torch.load(stage_file(cfg, "stats", "moment"), weights_only=True)["moment"]
        solver = MomentSolver(C, device=resolve_device(hw["device"]))  # factorised once, on the run's device
    lm = load_model(model_dir(cfg), cfg["model"], hw["device"], hw["dtype"])
    device, layer = resolve_device(hw["device"]), cfg["model"]["layer"]

    def edit_chunk(chunk: list[dict]) -> list[dict]:
        requests = [{k: c[k] for k in ("case_id", "prompt", "subject", "target_new")} for c in chunk]
        results = execute_rome_detailed(lm.model, lm.tokenizer, lm.arch, requests, solver, templates, hp, device,
                                        layer)
        return [edit_record(case, edit, res) for case, (edit, res) in zip(chunk, results)]

    done = edit_cases(cases, edit_chunk, out_dir / file_name("rome", "partial", split=split), hp.batch_cases,
                      checkpoint_stamp("rome", out_dir, STAMP_FILES), fresh=bool(cfg["job"].get("fresh")))
    write_outputs(out_dir, split, layer, done)


def edit_record(case: dict, edit, res) -> dict:
    """One case's u, v (float32, CPU) and diagnostics; a non-finite edit stops the stage."""
    if not (torch.isfinite(edit.u).all() and torch.isfinite(edit.v).all()):
        raise FloatingPointError(f"[rome] case_id {case['case_id']}: non-finite edit; nothing saved")
    return {"u": edit.u.float().cpu(), "v": edit.v.float().cpu(),
            "diag": {"case_id": case["case_id"], "n_updates": res.n_updates, "stopped_early": res.stopped_early,
                     "first_loss": res.losses[0], "final_loss": res.losses[-1], "delta_norm": float(res.delta.norm()),
                     "v_init_norm": float(res.v_init.norm())}}


def edit_cases(cases: list[dict], edit_chunk: Callable[[list[dict]], list[dict]], partial_dir: Path,
               batch_cases: int, stamp: dict, fresh: bool = False) -> dict[str, list]:
    """Edit every case not yet in `partial_dir`, `batch_cases` at a time (edit_chunk(chunk) -> one
    {"u", "v", "diag"} per case), one piece per chunk, each written once (O(N) writes); return the
    lists "u", "v", "diag" of all cases in order. Pieces of another `stamp` (checkpoints.checkpoint_stamp) or case
    list are discarded; fresh=True discards any."""
    pieces = CasePieces(partial_dir, [c["case_id"] for c in cases], "rome", stamp=stamp)
    done: dict[str, list] = {"u": [], "v": [], "diag": []}
    for rec in pieces.resume(fresh, mmap=False):
        for key in done:
            done[key].append(rec[key])
    if done["diag"]:
        print(f"[rome] resuming after {len(done['diag'])} of {len(cases)} cases", flush=True)
    for lo in range(len(done["diag"]), len(cases), batch_cases):
        chunk = cases[lo: lo + batch_cases]
        records = edit_chunk(chunk)
        pieces.write(lo, [c["case_id"] for c in chunk], records)
        for rec in records:
            for key in done:
                done[key].append(rec[key])
        print(f"[rome] {len(done['diag'])}/{len(cases)} cases", flush=True)
    return done


def write_outputs(out_dir: Path, split: str, layer: int, done: dict[str, list]) -> None:
    """The edits file and the diagnostics; the partial folder is removed last."""
    edits = out_dir / file_name("rome", "edits", split=split)
    save_torch({"case_ids": [d["case_id"] for d in done["diag"]], "layer": layer,
                "u": torch.stack(done["u"]), "v": torch.stack(done["v"])}, edits)
    write_jsonl(out_dir / file_name("rome", "diagnostics", split=split), done["diag"])
    shutil.rmtree(out_dir / file_name("rome", "partial", split=split), ignore_errors=True)


if __name__ == "__main__":
    main()
