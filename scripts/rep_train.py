"""Stage `rep`: one REP adaptor per case, trained on ROME's key direction u (single-edit protocol).

    python scripts/rep_train.py job.split=valid
Writes <stage dir>/<split>.adaptors.pt ({"case_ids", "layer", "states": [adaptor_state per case]}) and
<split>.rep.jsonl (per case: pool counts, per-step losses, final gate statistics). Resumable: finished
cases are kept in <split>.adaptors.partial.pt and a rerun continues after them.
"""
from __future__ import annotations

from pathlib import Path

import torch
from common import model_dir, stage_app, stage_dir

from robustedit.io import atomic_path, read_json, read_jsonl, write_jsonl
from robustedit.models.load import load_model, resolve_device
from robustedit.rep import AdaptorConfig, RepTrainConfig, fit_rep_adaptor

SAVE_EVERY = 8  # cases between partial saves (a killed run loses at most this many)


def save_torch(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def rep_configs(rep: dict) -> tuple[AdaptorConfig, RepTrainConfig]:
    """Library configs from the `rep` group; the evaluation-only threshold is set at test time."""
    return (AdaptorConfig.from_dict({**rep["adaptor"], "threshold": rep["gate_threshold"]}),
            RepTrainConfig(**rep["train"]))


@stage_app("rep")
def main(cfg: dict, out_dir: Path) -> None:
    split, hw = cfg["job"]["split"], cfg["hardware"]
    cases = read_jsonl(stage_dir(cfg, "cases") / f"{split}.jsonl")
    templates = read_json(stage_dir(cfg, "templates") / "templates.json")
    edits = torch.load(stage_dir(cfg, "rome") / f"{split}.edits.pt", weights_only=True)
    if edits["case_ids"] != [c["case_id"] for c in cases]:
        raise ValueError(f"{split}: ROME edits do not match the cases file (rerun the rome stage)")
    acfg, tcfg = rep_configs(cfg["rep"])
    lm = load_model(model_dir(cfg), cfg["model"], hw["device"], hw["dtype"])
    device, layer = resolve_device(hw["device"]), edits["layer"]
    down_proj = lm.arch.module(lm.model, "down_proj", layer)

    partial = out_dir / f"{split}.adaptors.partial.pt"
    done = torch.load(partial, weights_only=False) if partial.exists() else {"states": [], "logs": []}
    if done["logs"]:
        print(f"[rep] resuming after {len(done['logs'])} of {len(cases)} cases", flush=True)
    for i in range(len(done["logs"]), len(cases)):
        case = cases[i]
        # the keys sit below the edited weight, so ROME's ΔW need not be applied to read them
        res = fit_rep_adaptor(lm.model, lm.tokenizer, down_proj, case, templates, edits["u"][i].to(device),
                              acfg=acfg, tcfg=tcfg, seed=cfg["seed"], device=device)
        if not all(torch.isfinite(t).all() for t in res.state["params"].values()):
            raise FloatingPointError(f"[rep] case_id {case['case_id']}: non-finite adaptor; nothing saved")
        done["states"].append(res.state)
        done["logs"].append({"case_id": case["case_id"], **res.log})
        if (i + 1) % SAVE_EVERY == 0 or i + 1 == len(cases):
            save_torch(done, partial)
            print(f"[rep] {i + 1}/{len(cases)} cases", flush=True)
    save_torch({"case_ids": [c["case_id"] for c in cases], "layer": layer, "states": done["states"]},
               out_dir / f"{split}.adaptors.pt")
    write_jsonl(out_dir / f"{split}.rep.jsonl", done["logs"])
    partial.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
