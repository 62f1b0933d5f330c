"""Estimated GPU time per stage for LLaMA-2-7B and Mistral-7B (README, "Run on a GPU cluster").

    python benchmarks/gpu_hours_7b.py [--edit-tflop 1.080 --eval-tflop 0.611 --tokens-per-row 106.4]

Nothing is run on a GPU: matrix-product FLOPs are scaled from what was measured on SmolLM2-135M on this
CPU and divided by a sustained rate (a fraction of each GPU's dense peak for the dtype used). Inputs:
- `--edit-tflop`, `--eval-tflop`: the protocol's matmul TFLOP per case on SmolLM2 (benchmarks/bench_flops.py
  --n-cases 8: v* forward+backward above the edit layer, and the pre+post evaluation with 1 held passage).
  Per-token matmul work scales with a decoder block's parameters times the blocks run, so a 7B case costs
  the SmolLM2 figure times (block params x blocks) of the 7B model over SmolLM2's (the lm_head is read only
  at target positions, so it is left out of the ratio).
- long prompts were 59% of the evaluation's tokens with 2 long prompts per case (1 held + the eval
  passage); experiment=paper scores all 5 held passages, 6 long prompts: 0.41 + 0.59 * 6 / 2 = 2.18x.
- statistics: `--tokens-per-row` (SmolLM2's tokens per non-empty WikiText line, 532,157 / 5,000) times
  100,000 rows, a forward through the blocks up to the edit layer, plus the fp64 outer products k kᵀ
  (2 D² FLOP per token), which dominate.
"""
from __future__ import annotations

import argparse

# (hidden, intermediate, kv width, layers, edit layer)
SHAPES = {"SmolLM2-135M": (576, 1536, 192, 30, 4), "LLaMA-2-7B": (4096, 11008, 4096, 32, 5),
          "Mistral-7B": (4096, 14336, 1024, 32, 5)}
# dense peak TFLOP/s by dtype (vendor figures: A100 SXM 80 GB, H100 SXM); fp32 without TF32 (torch's default)
PEAK = {"A100": {"bfloat16": 312, "float32": 19.5, "float64": 19.5},
        "H100": {"bfloat16": 989, "float32": 67, "float64": 67}}
SUSTAINED = 0.5  # fraction of peak a stage sustains (our CPU path reaches ~50% of its measured matmul peak)
N_CASES = 400  # the REP test split (experiment=paper keeps every case; the known-fact filter keeps fewer)
STATS_ROWS = 100_000  # the reference's mom2_n_samples
LONG_FACTOR = 0.41 + 0.59 * 6 / 2  # evaluation tokens with all 5 held passages (see the docstring)


def block_params(name: str) -> int:
    hidden, inter, kv, _, _ = SHAPES[name]
    return 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * inter  # q, o; k, v; gate, up, down


def stage_tflop(name: str, edit_smol: float, eval_smol: float, tokens_per_row: float) -> dict[str, float]:
    _, inter, _, n_layers, layer = SHAPES[name]
    _, _, _, s_layers, s_layer = SHAPES["SmolLM2-135M"]
    above = block_params(name) * (n_layers - layer) / (block_params("SmolLM2-135M") * (s_layers - s_layer))
    full = block_params(name) * n_layers / (block_params("SmolLM2-135M") * s_layers)
    tokens = STATS_ROWS * tokens_per_row
    eval_case = eval_smol * full * LONG_FACTOR
    return {"stats (forward)": 2 * block_params(name) * (layer + 1) * tokens / 1e12,
            "stats (fp64 k kᵀ)": 2 * inter * inter * tokens / 1e12,
            "rome": edit_smol * above * N_CASES,
            "eval_rome (pre + post)": eval_case * N_CASES,
            "eval_rep (post; pre reused)": eval_case / 2 * N_CASES}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--edit-tflop", type=float, default=1.080, help="SmolLM2 edit TFLOP per case (bench_flops)")
    ap.add_argument("--eval-tflop", type=float, default=0.611, help="SmolLM2 evaluation TFLOP per case")
    ap.add_argument("--tokens-per-row", type=float, default=532_157 / 5_000, help="tokens per WikiText row")
    args = ap.parse_args()
    print(f"GPU hours per stage, {N_CASES} cases, at {SUSTAINED:.0%} of dense peak "
          "(hardware=gpu: bf16 model; experiment=paper: fp32 model, as EasyEdit; statistics always fp64)\n")
    print("| stage | model | PFLOP | A100 bf16 | A100 fp32 | H100 bf16 | H100 fp32 |")
    print("|---|---|---|---|---|---|---|")
    for name in ("LLaMA-2-7B", "Mistral-7B"):
        for stage, tflop in stage_tflop(name, args.edit_tflop, args.eval_tflop, args.tokens_per_row).items():
            cells = []
            for gpu in ("A100", "H100"):
                for dtype in ("bfloat16", "float32"):
                    rate = PEAK[gpu]["float64" if "fp64" in stage else dtype] * SUSTAINED
                    cells.append(f"{tflop / rate / 3600:.2f}")
            print(f"| {stage} | {name} | {tflop / 1e3:.1f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
