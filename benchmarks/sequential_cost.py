"""The sequential protocol's cost: measured on this machine (a sequential_eval summary), estimated on a GPU.

    python benchmarks/sequential_cost.py [results/<model>/sequential_eval/<hash>/test.sequential.summary.json]
        [--n-edits 1 10 50 107] [--methods rome rep memit alphaedit eren]

Measured: each sequence's seconds from the summary (editing, and scoring per method), per edit and per scored
case. Estimated: matrix-product FLOPs scaled from what benchmarks/bench_flops.py measured per case on SmolLM2
(an edit, and the pre + post evaluation, as gpu_hours_7b.py), divided by 50% of each GPU's dense peak:
- each weight-editing sequence (rome, memit, alphaedit) costs one edit per case (MEMIT and AlphaEdit are taken
  at ROME's edit cost: their z* is ROME's v* objective, one layer higher, and reading keys at five layers is
  small next to it);
- each scored method (rome, rep, memit, alphaedit) costs a post-only evaluation of the N cases at every
  checkpoint (the unedited pass is reused), ΣN cases in all; the unedited reference one pass of the largest N;
- EREN (generation, bound by memory bandwidth) and the perplexity probe (a few thousand tokens) are left out.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from gpu_hours_7b import PEAK, SHAPES, SUSTAINED, block_params

WEIGHT_EDITORS = ("rome", "memit", "alphaedit")
SCORED = ("rome", "rep", "memit", "alphaedit")


def tflop(name: str, n_edits: list[int], methods: list[str], edit_smol: float, eval_smol: float) -> float:
    """Matmul TFLOP of the sequential protocol on model `name` (SmolLM2's per-case figures scaled by blocks)."""
    _, _, _, n_layers, layer = SHAPES[name]
    _, _, _, s_layers, s_layer = SHAPES["SmolLM2-135M"]
    above = block_params(name) * (n_layers - layer) / (block_params("SmolLM2-135M") * (s_layers - s_layer))
    full = block_params(name) * n_layers / (block_params("SmolLM2-135M") * s_layers)
    edits = sum(m in methods for m in WEIGHT_EDITORS) * max(n_edits) * edit_smol * above
    post = eval_smol / 2 * full  # one phase of the evaluation
    return edits + (sum(m in methods for m in SCORED) * sum(n_edits) + max(n_edits)) * post


def measured(summary: dict) -> list[str]:
    n, total = max(summary["n_edits"]), sum(summary["n_edits"])
    lines = [f"measured ({summary['model']}, N = {summary['n_edits']}):",
             f"  unedited reference: {summary['seconds']['unedited']:.0f} s"]
    for run, s in summary["seconds"].items():
        if run == "unedited":
            continue
        scores = s["score"] if isinstance(s["score"], dict) else {run: s["score"]}
        edit = f"editing {s['edit']:.0f} s ({s['edit'] / n:.1f} s per edit), " if "edit" in s else ""
        lines.append(f"  {run}: {edit}scoring " + ", ".join(
            f"{m} {v:.0f} s ({v / total:.2f} s per scored case)" for m, v in scores.items()))
    everything = summary["seconds"]["unedited"] + sum(
        s.get("edit", 0) + (sum(s["score"].values()) if isinstance(s["score"], dict) else s["score"])
        for run, s in summary["seconds"].items() if run != "unedited")
    return lines + [f"  total: {everything:.0f} s = {everything / 3600:.2f} h"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("summary", nargs="?", type=Path, help="a sequential_eval summary (measured seconds)")
    ap.add_argument("--n-edits", type=int, nargs="+", default=[1, 10, 50, 107])
    ap.add_argument("--methods", nargs="+", default=[*SCORED, "eren"])
    ap.add_argument("--edit-tflop", type=float, default=1.080, help="SmolLM2 edit TFLOP per case (bench_flops)")
    ap.add_argument("--eval-tflop", type=float, default=0.611, help="SmolLM2 pre + post evaluation TFLOP per case")
    args = ap.parse_args()
    if args.summary:
        print("\n".join(measured(json.loads(args.summary.read_text()))) + "\n")
    print(f"estimated GPU time at {SUSTAINED:.0%} of dense peak, N = {args.n_edits}, methods {args.methods} "
          "(EREN and the probe left out):\n")
    print("| model | TFLOP | A100 bf16 | A100 fp32 | H100 bf16 | H100 fp32 |")
    print("|---|---|---|---|---|---|")
    for name in SHAPES:
        t = tflop(name, args.n_edits, args.methods, args.edit_tflop, args.eval_tflop)
        cells = [f"{t / (PEAK[gpu][dtype] * SUSTAINED) / 60:.1f} min" for gpu in ("A100", "H100")
                 for dtype in ("bfloat16", "float32")]
        print(f"| {name} | {t:.0f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
