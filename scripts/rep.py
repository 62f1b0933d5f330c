"""Stage `rep`: one REP adaptor per case, trained on ROME's key direction u (single-edit protocol).

    python scripts/rep.py job.split=valid
Writes <stage dir>/<split>.adaptors.pt ({"case_ids", "layer", "states": [adaptor_state per case]}) and
<split>.rep.jsonl (per case: pool counts, per-step losses, final gate statistics). Resumable: each
finished case is written once to <split>.adaptors.partial/ (checkpoints.CasePieces: O(N) bytes in all, where
rewriting every state after each save was O(N²), ~0.5 TB for 400 LLaMA-2-7B cases) and a rerun
continues after the verified ones (same case_ids, stage hash and code version: checkpoints.checkpoint_stamp;
a forced rerun, job.fresh=true, starts afresh). The final file is assembled from the memory-mapped
pieces, so the adaptors are never all in memory at once.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch

from robustedit.checkpoints import CasePieces, checkpoint_stamp
from robustedit.evaluate.leakage import leak_guard
from robustedit.io import read_json, read_jsonl, remove_stray_temps, save_torch, write_jsonl
from robustedit.manifest import DataStore
from robustedit.models.load import load_model, resolve_device
from robustedit.pipeline.stage import model_dir, stage_app, stage_file
from robustedit.pipeline.wikitext import context_words, snippets
from robustedit.rep import AdaptorConfig, RepTrainConfig, fit_rep_adaptor
from robustedit.rome.compute_u import MomentSolver
from robustedit.seeding import py_rng
from robustedit.stages import file_name

PRINT_EVERY = 8  # cases between progress lines (every case is saved as soon as it is trained)
STAMP_FILES = (__file__,)  # the script a checkpoint's code version covers (besides the library, pipeline glue included)


def rep_configs(rep: dict) -> tuple[AdaptorConfig, RepTrainConfig]:
    """Library configs from rep.adaptor and rep.train. Not rep.gate_threshold: only eval_rep applies (and
    hashes) it, so the saved states and the logs' gate statistics use AdaptorConfig's default threshold
    (0.9, the release's cls_threshold) whatever a run sets, and one rep directory serves every threshold."""
    return AdaptorConfig.from_dict(dict(rep["adaptor"])), RepTrainConfig(**rep["train"])


@stage_app("rep")
def main(cfg: dict, out_dir: Path) -> None:
    split, hw = cfg["job"]["split"], cfg["hardware"]
    remove_stray_temps(out_dir, f"{split}.")  # temporary files of this split's outputs left by a killed run
    cases = read_jsonl(stage_file(cfg, "cases", "cases"))
    templates = read_json(stage_file(cfg, "templates", "templates"))
    edits = torch.load(stage_file(cfg, "rome", "edits"), weights_only=True)
    if edits["case_ids"] != [c["case_id"] for c in cases]:
        raise ValueError(f"{split}: ROME edits do not match the cases file (rerun the rome stage)")
    acfg, tcfg = rep_configs(cfg["rep"])
    lm = load_model(model_dir(cfg), cfg["model"], hw["device"], hw["dtype"])
    device, layer = resolve_device(hw["device"]), edits["layer"]
    down_proj = lm.arch.module(lm.model, "down_proj", layer)
    words = (context_words(DataStore(cfg["paths"]["data"]), cfg["data"]["long_context"])
             if tcfg.gate_loss_weight > 0 and tcfg.gate_negative_snippets > 0 else [])
    whiten = None
    if tcfg.objective == "distance_whitened":  # ROME's C = L Lᵀ, factorised once on the run's device
        moment = torch.load(stage_file(cfg, "stats", "moment"), weights_only=True)["moment"]
        whiten = MomentSolver(moment, device=device).factor

    def fit_case(i: int, case: dict):
        # the keys sit below the edited weight, so ROME's ΔW need not be applied to read them
        negatives = snippets(words, tcfg.gate_negative_snippets, tcfg.gate_negative_words,
                             py_rng(cfg["seed"], "rep_gate_negative_text", case["case_id"])) if words else []
        return fit_rep_adaptor(lm.model, lm.tokenizer, down_proj, case, templates, edits["u"][i].to(device),
                               leaks=leak_guard(lm.tokenizer, case), acfg=acfg, tcfg=tcfg, seed=cfg["seed"],
                               device=device, negative_texts=negatives, whiten=whiten)

    stamp = checkpoint_stamp("rep", out_dir, STAMP_FILES)
    states, logs = train_cases(cases, fit_case, out_dir / file_name("rep", "partial", split=split), stamp,
                               fresh=bool(cfg["job"].get("fresh")))
    write_outputs(out_dir, split, [c["case_id"] for c in cases], layer, states, logs)


def train_cases(cases: list[dict], fit_case, partial_dir: Path, stamp: dict,
                fresh: bool = False) -> tuple[list[dict], list[dict]]:
    """Fit every case not yet in `partial_dir` (fit_case(i, case) -> RepResult), saving each case once;
    return all adaptor states (memory-mapped from the pieces) and logs, in case order. Pieces of another
    `stamp` (checkpoints.checkpoint_stamp) or case list are discarded; fresh=True discards any."""
    pieces = CasePieces(partial_dir, [c["case_id"] for c in cases], "rep", stamp=stamp)
    n_done = len(pieces.resume(fresh))
    if n_done:
        print(f"[rep] resuming after {n_done} of {len(cases)} cases", flush=True)
    for i in range(n_done, len(cases)):
        case = cases[i]
        res = fit_case(i, case)
        if not all(torch.isfinite(t).all() for t in res.state["params"].values()):
            raise FloatingPointError(f"[rep] case_id {case['case_id']}: non-finite adaptor; nothing saved")
        pieces.write(i, [case["case_id"]], [{"state": res.state, "log": {"case_id": case["case_id"], **res.log}}])
        if (i + 1) % PRINT_EVERY == 0 or i + 1 == len(cases):
            print(f"[rep] {i + 1}/{len(cases)} cases", flush=True)
    records = pieces.load()
    if len(records) != len(cases):
        raise RuntimeError(f"[rep] {partial_dir}: {len(records)} saved cases of {len(cases)}; rerun the stage")
    return [r["state"] for r in records], [r["log"] for r in records]


def write_outputs(out_dir: Path, split: str, case_ids: list, layer: int, states: list, logs: list) -> None:
    """The final adaptors file, written once, then the logs; the partial folder is removed last."""
    adaptors = out_dir / file_name("rep", "adaptors", split=split)
    save_torch({"case_ids": case_ids, "layer": layer, "states": states}, adaptors)
    write_jsonl(out_dir / file_name("rep", "logs", split=split), logs)
    shutil.rmtree(out_dir / file_name("rep", "partial", split=split), ignore_errors=True)


if __name__ == "__main__":
    main()
