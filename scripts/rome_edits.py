"""Stage `rome`: one ROME edit per case of a split (single-edit protocol), resumable.

    python scripts/rome_edits.py job.split=valid
Writes <stage dir>/<split>.edits.pt ({"case_ids", "layer", "u" [N, key], "v" [N, hidden]}) and
<split>.rome.jsonl (per case: v* losses, number of updates, early stop, norms). Finished chunks of
cases are kept in <split>.edits.partial/ (one file each, io.CasePieces) and a rerun continues after them.
"""
from __future__ import annotations

from pathlib import Path

import torch
from common import model_dir, stage_app, stage_dir

from robustedit.io import CasePieces, atomic_path, read_json, read_jsonl, write_jsonl
from robustedit.models.load import load_model, resolve_device
from robustedit.rome.compute_u import MomentSolver
from robustedit.rome.execute import execute_rome_detailed
from robustedit.rome.hparams import ROMEHyperParams


def save_torch(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


@stage_app("rome")
def main(cfg: dict, out_dir: Path) -> None:
    split, hw = cfg["job"]["split"], cfg["hardware"]
    cases = read_jsonl(stage_dir(cfg, "cases") / f"{split}.jsonl")
    templates = read_json(stage_dir(cfg, "templates") / "templates.json")
    hp = ROMEHyperParams.from_config(cfg["rome"])
    solver = None
    if hp.mom2_adjustment:
        C = torch.load(stage_dir(cfg, "stats") / "mom2.pt", weights_only=True)["moment"]
        solver = MomentSolver(C, device=resolve_device(hw["device"]))  # factorised once, on the run's device
    lm = load_model(model_dir(cfg), cfg["model"], hw["device"], hw["dtype"])
    device, layer = resolve_device(hw["device"]), cfg["model"]["layer"]

    # one piece per chunk of cases, each written once (O(N) writes); verified against the cases on resume
    pieces = CasePieces(out_dir / f"{split}.edits.partial", [c["case_id"] for c in cases], "rome")
    done = {"u": [], "v": [], "diag": []}
    for rec in pieces.load(mmap=False):
        for key in done:
            done[key].append(rec[key])
    if done["diag"]:
        print(f"[rome] resuming after {len(done['diag'])} of {len(cases)} cases", flush=True)
    for lo in range(len(done["diag"]), len(cases), hp.batch_cases):
        chunk = cases[lo: lo + hp.batch_cases]
        requests = [{k: c[k] for k in ("case_id", "prompt", "subject", "target_new")} for c in chunk]
        for case, (edit, res) in zip(chunk, execute_rome_detailed(
                lm.model, lm.tokenizer, lm.arch, requests, solver, templates, hp, device, layer)):
            if not (torch.isfinite(edit.u).all() and torch.isfinite(edit.v).all()):
                raise FloatingPointError(f"[rome] case_id {case['case_id']}: non-finite edit; nothing saved")
            done["u"].append(edit.u.float().cpu())
            done["v"].append(edit.v.float().cpu())
            done["diag"].append({"case_id": case["case_id"], "n_updates": res.n_updates,
                                 "stopped_early": res.stopped_early, "first_loss": res.losses[0],
                                 "final_loss": res.losses[-1], "delta_norm": float(res.delta.norm()),
                                 "v_init_norm": float(res.v_init.norm())})
        pieces.write(lo, [c["case_id"] for c in chunk], [{key: done[key][i] for key in done}
                                                         for i in range(lo, len(done["diag"]))])
        print(f"[rome] {len(done['diag'])}/{len(cases)} cases", flush=True)
    save_torch({"case_ids": [d["case_id"] for d in done["diag"]], "layer": layer,
                "u": torch.stack(done["u"]), "v": torch.stack(done["v"])}, out_dir / f"{split}.edits.pt")
    write_jsonl(out_dir / f"{split}.rome.jsonl", done["diag"])
    pieces.remove()


if __name__ == "__main__":
    main()
