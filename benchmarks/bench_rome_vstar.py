"""Time ROME's v* optimisation on real SmolLM2-135M cases: one case at a time vs batched.

    .venv/bin/python benchmarks/bench_rome_vstar.py --n-cases 8 [--moment wikitext --moment-lines 300]

Uses the REP/EasyEdit llama-7b ROME hyperparameters (25 steps, lr 0.5, early stop 0.05), layer 4,
21 seeded context templates, and the first N records of the REP valid split. Prints seconds per
case for each mode, the speed-up, and how far the batched v* is from the one-at-a-time v*.
Reference figure: the REP code takes ~33 s per case for v* on this CPU with SmolLM2.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from robustedit.models.load import load_model
from robustedit.rome import (MomentSolver, ROMEHyperParams, compute_second_moment, compute_u, compute_v,
                             generate_context_templates)

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-cases", type=int, default=8)
    ap.add_argument("--moment", choices=["identity", "wikitext"], default="wikitext")
    ap.add_argument("--moment-lines", type=int, default=300)  # WikiText lines for a quick C
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--modes", default="single,batched,batched_no_reuse")
    ap.add_argument("--json", default=None, help="write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    cfg = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "model" / "smollm2-135m.yaml"))
    lm = load_model(REPO / "resources" / "models" / "smollm2-135m", cfg, device="cpu", dtype="float32")
    model, tok, arch, layer = lm.model, lm.tokenizer, lm.arch, cfg["layer"]
    hp = ROMEHyperParams()
    figures: dict = {"n_cases": args.n_cases, "layer": layer, "threads": args.threads, "hparams": hp.to_dict()}

    t = time.perf_counter()
    templates = generate_context_templates(model, tok, torch.Generator().manual_seed(0),
                                           length_params=hp.context_template_length_params)
    figures["templates_s"] = time.perf_counter() - t
    print(f"{len(templates)} templates in {figures['templates_s']:.1f}s, e.g. {templates[1:4]}")

    dim = arch.key_dim(model, layer)
    if args.moment == "identity":
        C = torch.eye(dim, dtype=torch.float64)
    else:
        lines = (REPO / "resources/data/wikitext/wiki.valid.raw").read_text(encoding="utf-8").split("\n")
        res = compute_second_moment(model, tok, arch, layer, lines, n_samples=args.moment_lines, seed=1,
                                    max_length=cfg["max_length"])
        C = res.moment
        figures["moment"] = res.stats
        print(f"C over {res.stats['docs']} lines / {res.stats['tokens']} tokens: "
              f"{res.stats['seconds']:.1f}s ({res.stats['tokens_per_s']:.0f} tok/s)")
    solver = MomentSolver(C)

    records = json.loads((REPO / "resources/data/rep/valid.counterfact_para_prompt_para_subject.json").read_text())
    requests = [{"case_id": i, "prompt": r["prompt"], "subject": r["subject"], "target_new": r["target_new"]}
                for i, r in enumerate(records[: args.n_cases])]
    t = time.perf_counter()
    u = compute_u(model, tok, arch, layer, requests, templates, solver, "cpu")
    figures["u_s_per_case"] = (time.perf_counter() - t) / len(requests)
    print(f"u: {figures['u_s_per_case']:.2f}s per case (batched key reading)")

    results = {}
    for mode in args.modes.split(","):
        h = dataclasses.replace(hp, reuse_lower_layers=(mode != "batched_no_reuse"))
        t = time.perf_counter()
        if mode == "single":
            out = [compute_v(model, tok, arch, layer, [r], u[i:i + 1], templates, h, "cpu")[0]
                   for i, r in enumerate(requests)]
        else:
            out = compute_v(model, tok, arch, layer, requests, u, templates, h, "cpu")
        sec = time.perf_counter() - t
        results[mode] = out
        figures[mode] = {"s_per_case": sec / len(requests), "n_updates": [r.n_updates for r in out],
                         "final_loss": [round(r.losses[-1], 4) for r in out],
                         "first_loss": [round(r.losses[0], 4) for r in out]}
        print(f"{mode:>18}: {sec / len(requests):6.2f} s/case  updates {figures[mode]['n_updates']}  "
              f"loss {figures[mode]['first_loss']} -> {figures[mode]['final_loss']}")
    if "single" in results:
        base = figures["single"]["s_per_case"]
        for mode, out in results.items():
            if mode == "single":
                continue
            diff = max(float((a.v_star - b.v_star).norm() / b.v_star.norm()) for a, b in zip(out, results["single"]))
            figures[mode]["speedup_vs_single"] = base / figures[mode]["s_per_case"]
            figures[mode]["max_rel_vstar_diff_vs_single"] = diff
            print(f"{mode:>18}: {base / figures[mode]['s_per_case']:.2f}x vs single; "
                  f"max ‖Δv*‖/‖v*‖ = {diff:.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1, default=str))


if __name__ == "__main__":
    main()
