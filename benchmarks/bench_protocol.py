"""Time the whole single-edit protocol (ROME edit + evaluation before and after) on real cases.

    .venv/bin/python benchmarks/bench_protocol.py --n-cases 16 --split test [--overrides model=smollm2-135m]

Reads the default run's artifacts (cases, the second moment C, the context templates; run `make run`
or at least `snakemake --cores all <stats and templates outputs>` first) and runs, on the first N cases:
  sequential: one case at a time, as the reference does: ROME for that case (batch of 1, no prefix
              reuse), then its evaluation with the edit written into the weights and restored
              (evaluate_cases mode="sequential"), unedited scores computed per case;
  batched:    the pipeline's path: ROME rome.batch_cases at a time with the lower layers reused, then
              one batched evaluation (per-row rank-one deltas, packed item + alternative rows).
Both use the same algorithm settings (21 templates, up to 25 v* steps, early stop at 0.05). Prints
wall and CPU seconds per case for each phase, the ratio, the ratio to the reference's seconds per case
(REP's released code on this CPU, SmolLM2-135M, layer 4: benchmarks/reference/ times it; this machine's
speed drifts between days, so pass --reference-seconds measured the same day), and whether the two paths
give the same metrics. Wall time is what a user waits; CPU time is less distorted when other jobs share
the machine.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

from robustedit.pipeline.config import compose  # noqa: E402
from robustedit.pipeline.stage import model_dir, stage_dir  # noqa: E402

from robustedit.evaluate import evaluate_cases, summarise  # noqa: E402
from robustedit.io import read_json, read_jsonl  # noqa: E402
from robustedit.models.load import load_model  # noqa: E402
from robustedit.rome.compute_u import MomentSolver  # noqa: E402
from robustedit.rome.execute import execute_rome_detailed  # noqa: E402
from robustedit.rome.hparams import ROMEHyperParams  # noqa: E402

# REP's released code, patched only to run offline (benchmarks/reference/), on the first 16 known test cases
# (this script's default), 2 threads, 2026-11-26: ROME 36.44 s + evaluation 29.34 s per case (8.2 s of it two
# fluency generations). Its first 8 cases, run an hour earlier, took 60.80 s/case: the machine drifts ~10%.
REFERENCE_S_PER_CASE = 65.8
METRICS = ("exact_match", "token_mean_acc", "prob_compare")


def timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def requests_of(cases):
    return [{k: c[k] for k in ("case_id", "prompt", "subject", "target_new")} for c in cases]


def load_run(overrides, split: str, n_cases: int):
    """The artifacts of the run named by `overrides`: config, first n cases, templates, C, model, ROME settings."""
    cfg = compose(overrides)
    cases = read_jsonl(stage_dir(cfg, "cases", split) / f"{split}.jsonl")[:n_cases]
    templates = read_json(stage_dir(cfg, "templates") / "templates.json")
    solver = MomentSolver(torch.load(stage_dir(cfg, "stats") / "mom2.pt", weights_only=True)["moment"])
    lm = load_model(model_dir(cfg), cfg["model"], "cpu", cfg["hardware"]["dtype"])
    return cfg, cases, templates, solver, lm, ROMEHyperParams.from_config(cfg["rome"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-cases", type=int, default=16)
    ap.add_argument("--split", default="test")
    ap.add_argument("--overrides", nargs="*", default=[], help="Hydra overrides of the run whose artifacts to use")
    ap.add_argument("--threads", type=int, default=2)  # the machine has 2 cores
    ap.add_argument("--modes", default="sequential,batched")
    ap.add_argument("--reference-seconds", type=float, default=REFERENCE_S_PER_CASE,
                    help="the reference's seconds per case, measured on this machine the same day")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    cfg, cases, templates, solver, lm, hp = load_run(args.overrides, args.split, args.n_cases)
    hw, layer = cfg["hardware"], cfg["model"]["layer"]
    run = dict(model=lm.model, tok=lm.tokenizer, arch=lm.arch, batch_size=hw["batch_size"], device="cpu",
               max_length=cfg["eval"]["max_length"], long_id_passages=cfg["eval"]["long_id_passages"])
    n = len(cases)
    print(f"{cfg['model']['name']} layer {layer}, {n} {args.split} cases, {hp.n_templates} templates, "
          f"{hp.v_num_grad_steps} v* steps, threads {args.threads}", flush=True)

    results, times = {}, {}
    if "sequential" in args.modes:
        hp1 = dataclasses.replace(hp, batch_cases=1, reuse_lower_layers=False, cache_prefix=False)
        per_case, t_edit, t_eval = [], [0.0, 0.0], [0.0, 0.0]
        for case in cases:
            # the lambdas run at once (inside timed); defaults bind this iteration's values explicitly
            (edit_res,), *te = timed(lambda case=case: execute_rome_detailed(
                lm.model, lm.tokenizer, lm.arch, requests_of([case]), solver, templates, hp1, "cpu", layer))
            res, *tv = timed(lambda case=case, edit_res=edit_res: evaluate_cases(
                cases=[case], edits=[edit_res[0]], mode="sequential", **run))
            per_case += res
            t_edit = [a + b for a, b in zip(t_edit, te)]
            t_eval = [a + b for a, b in zip(t_eval, tv)]
        results["sequential"], times["sequential"] = per_case, (t_edit, t_eval)
    if "batched" in args.modes:
        edits, *te = timed(lambda: execute_rome_detailed(
            lm.model, lm.tokenizer, lm.arch, requests_of(cases), solver, templates, hp, "cpu", layer))
        res, *tv = timed(lambda: evaluate_cases(cases=cases, edits=[e for e, _ in edits], mode="batched", **run))
        results["batched"], times["batched"] = res, (te, tv)

    for mode, ((ew, ec), (vw, vc)) in times.items():
        print(f"{mode:>10}: edit {ew / n:6.2f} s/case (cpu {ec / n:6.2f}) | evaluation pre+post {vw / n:6.2f} s/case "
              f"(cpu {vc / n:6.2f}) | protocol {(ew + vw) / n:6.2f} s/case, {n / (ew + vw):.3f} cases/s, "
              f"{args.reference_seconds * n / (ew + vw):.1f}x the reference's {args.reference_seconds:.1f} s/case",
              flush=True)
    if len(times) == 2:
        (s_e, s_v), (b_e, b_v) = times["sequential"], times["batched"]
        print(f"batched / sequential: edit {s_e[0] / b_e[0]:.2f}x, evaluation {s_v[0] / b_v[0]:.2f}x, "
              f"protocol {(s_e[0] + s_v[0]) / (b_e[0] + b_v[0]):.2f}x (wall); "
              f"protocol {(s_e[1] + s_v[1]) / (b_e[1] + b_v[1]):.2f}x (cpu)")
        for stage in ("pre", "post"):
            for metric in METRICS:
                a = summarise(results["sequential"], metric, "micro", stage=stage)["columns"]
                b = summarise(results["batched"], metric, "micro", stage=stage)["columns"]
                diff = max(abs(a[k] - b[k]) for k in a)
                print(f"{stage}/{metric}/micro: max |sequential - batched| over columns = {diff:.2f} points")
    for mode, res in results.items():
        cols = summarise(res, "exact_match", "micro")["columns"]
        print(f"{mode} exact_match@1 micro (post):", {k: round(v, 1) for k, v in cols.items()})


if __name__ == "__main__":
    main()
