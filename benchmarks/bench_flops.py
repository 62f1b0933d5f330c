"""How far the single-edit protocol is from this CPU's matmul floor: FLOPs per case against measured
matmul throughput.

    .venv/bin/python benchmarks/bench_flops.py --n-cases 8 --split test [--overrides model=smollm2-135m]

Runs the pipeline's batched path (ROME rome.batch_cases at a time, then the batched evaluation before and
after the edit) on the first N cases of the default run's artifacts, like bench_protocol.py, under torch's
FlopCounterMode. Prints, per case and per phase, the FLOPs of matrix products (mm, addmm, bmm; 2·m·k·n each,
backward included) and this machine's fp32 matmul throughput on the model's own projection shapes. From those
it prints the lower bound on seconds per case if every FLOP ran at the best measured throughput and nothing
else took time, next to the issue's 5x target over the reference's measured seconds per case
(--reference-seconds, default bench_protocol.REFERENCE_S_PER_CASE). The counter slows the run: take wall
times from bench_protocol.py.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]

from bench_protocol import REFERENCE_S_PER_CASE, load_run, requests_of  # noqa: E402

from robustedit.evaluate import evaluate_cases  # noqa: E402
from robustedit.rome.execute import execute_rome_detailed  # noqa: E402

MATMUL_NAMES = ("mm", "addmm", "bmm")
TARGET_SPEEDUP = 5.0  # the target over the reference's seconds per case


def counted(fn):
    """fn's result and the FLOPs of its matrix products (2·m·k·n each, backward included)."""
    counter = FlopCounterMode(display=False)
    with counter:
        out = fn()
    flops = counter.get_flop_counts().get("Global", {})
    return out, sum(v for op, v in flops.items() if str(op).split(".")[1] in MATMUL_NAMES)


def matmul_throughput(hidden: int, inner: int, rows=(64, 256, 1024, 4096), repeats: int = 20) -> dict:
    """GFLOP/s of x @ W.T (as nn.Linear computes) for the model's projection shapes, fp32."""
    g = torch.Generator().manual_seed(0)
    best = {}
    for m in rows:
        for k, n in ((hidden, inner), (inner, hidden), (hidden, hidden)):
            x, w = torch.randn(m, k, generator=g), torch.randn(n, k, generator=g)
            for _ in range(3):
                torch.nn.functional.linear(x, w)
            t = time.perf_counter()
            for _ in range(repeats):
                torch.nn.functional.linear(x, w)
            best[(m, k, n)] = 2 * m * k * n * repeats / (time.perf_counter() - t) / 1e9
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-cases", type=int, default=8)
    ap.add_argument("--split", default="test")
    ap.add_argument("--overrides", nargs="*", default=[], help="Hydra overrides of the run whose artifacts to use")
    ap.add_argument("--threads", type=int, default=2)  # the machine has 2 cores
    ap.add_argument("--reference-seconds", type=float, default=REFERENCE_S_PER_CASE,
                    help="the reference's seconds per case, measured on this machine the same day")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    cfg, cases, templates, solver, lm, hp = load_run(args.overrides, args.split, args.n_cases)
    hw, layer = cfg["hardware"], cfg["model"]["layer"]
    n = len(cases)

    edits, e_flop = counted(lambda: execute_rome_detailed(
        lm.model, lm.tokenizer, lm.arch, requests_of(cases), solver, templates, hp, "cpu", layer))
    _, v_flop = counted(lambda: evaluate_cases(
        model=lm.model, tok=lm.tokenizer, arch=lm.arch, cases=cases, edits=[e for e, _ in edits], mode="batched",
        batch_size=hw["batch_size"], device="cpu", max_length=cfg["eval"]["max_length"],
        long_id_passages=cfg["eval"]["long_id_passages"]))

    down = lm.arch.module(lm.model, "down_proj", layer)
    peak = matmul_throughput(down.out_features, down.in_features)
    best = max(peak.values())
    print(f"{cfg['model']['name']} layer {layer}, {n} {args.split} cases, {hp.n_templates} templates, "
          f"{hp.v_num_grad_steps} v* steps, threads {args.threads}, "
          f"mean v* updates {sum(r.n_updates for _, r in edits) / n:.1f}")
    print("fp32 x @ W.T throughput on this machine (GFLOP/s): "
          + ", ".join(f"{m}x{k}->{nn_}: {g:.0f}" for (m, k, nn_), g in peak.items()))
    for name, flop in (("edit", e_flop), ("evaluation", v_flop)):
        print(f"{name:>10}: {flop / 1e12 / n:.3f} TFLOP/case in matrix products, "
              f"{flop / n / (best * 1e9):.2f} s/case at the best measured throughput")
    flop = (e_flop + v_flop) / n
    floor = flop / (best * 1e9)
    ref = args.reference_seconds
    budget = ref / TARGET_SPEEDUP
    print(f"protocol: {flop / 1e12:.3f} TFLOP/case; at the best measured {best:.0f} GFLOP/s and zero time outside "
          f"matmuls that is {floor:.2f} s/case, {ref / floor:.1f}x the reference's "
          f"{ref:.1f} s; the {TARGET_SPEEDUP:.0f}x target allows {budget:.1f} s/case, i.e. the "
          f"matmuls alone must run at {flop / budget / 1e9:.0f} GFLOP/s with nothing else taking time")


if __name__ == "__main__":
    main()
