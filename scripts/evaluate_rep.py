"""Stage `eval_rep`: the robustness evaluation of ROME+REP (each case's rank-one edit plus its adaptor).

    python scripts/evaluate_rep.py job.split=test rep.gate_threshold=0.8
Same outputs as eval_rome (<split>.results.jsonl, <split>.summary.json, method "ROME+REP"). The
unedited scores are reused from eval_rome's results of the same cases. Only this stage reads
rep.gate_threshold, so a threshold sweep reruns evaluation alone.
"""
from __future__ import annotations

from pathlib import Path

import torch
from common import stage_app, stage_dir
from evaluate_edits import evaluate_split

from robustedit.rep import RepEditBatch
from robustedit.seeding import torch_generator


def rep_edit_batch_fn(cfg: dict, adaptors_path: Path):
    saved = torch.load(adaptors_path, weights_only=True)
    split = cfg["job"]["split"]

    def make(lm, edits, device):
        if len(saved["states"]) != len(edits):
            raise ValueError(f"{adaptors_path}: {len(saved['states'])} adaptors for {len(edits)} edits (rerun rep)")
        # dropout at test time only with rep.adaptor.eval_dropout (the reference's quirk); seeded then
        gen = torch_generator(cfg["seed"], "rep_eval_dropout", split, device=device) if cfg["rep"]["adaptor"]["eval_dropout"] else None
        return RepEditBatch(lm.model, lm.arch, saved["layer"], edits, saved["states"], device,
                            threshold=cfg["rep"]["gate_threshold"], generator=gen)

    return make


@stage_app("eval_rep")
def main(cfg: dict, out_dir: Path) -> None:
    split = cfg["job"]["split"]
    name = cfg["rep"]["name"]
    method = "ROME+REP" if name == "default" else f"ROME+REP ({name})"
    evaluate_split(cfg, stage_dir(cfg, "rome") / f"{split}.edits.pt", out_dir, method,
                   edit_batch_fn=rep_edit_batch_fn(cfg, stage_dir(cfg, "rep") / f"{split}.adaptors.pt"),
                   pre_from=stage_dir(cfg, "eval_rome") / f"{split}.results.jsonl", include_unedited=False)


if __name__ == "__main__":
    main()
