"""Where REP training's time goes, per case: the leak guard, reading the keys (pool and gate data), and the
optimisation steps, for the run's REP setting (or --overrides) on cached pipeline outputs.

    .venv/bin/python benchmarks/bench_rep_train.py --n-cases 4 --split valid
    .venv/bin/python benchmarks/bench_rep_train.py --n-cases 4 --overrides rep.train.batch_size=null
Needs the split's cases, templates and ROME edits under results/ (e.g. `snakemake --cores all rome`).
Prints seconds per case per phase, and the pool, gate-positive and gate-negative sizes.
"""
from __future__ import annotations

import argparse
import time

import torch

from robustedit.evaluate.leakage import leak_guard
from robustedit.io import read_json, read_jsonl
from robustedit.manifest import DataStore
from robustedit.models.load import load_model, resolve_device
from robustedit.pipeline.config import compose
from robustedit.pipeline.stage import model_dir, stage_dir, with_split
from robustedit.pipeline.wikitext import context_words, snippets
from robustedit.rep import collect_training_keys, init_params, train_on_keys, training_texts
from robustedit.seeding import py_rng, torch_generator

import rep as rep_script  # noqa: E402  (scripts/, as in the tests: PYTHONPATH=scripts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n-cases", type=int, default=4)
    ap.add_argument("--split", default="valid")
    ap.add_argument("--overrides", nargs="*", default=[])
    args = ap.parse_args()
    cfg = with_split(compose(args.overrides), args.split)
    acfg, tcfg = rep_script.rep_configs(cfg["rep"])
    cases = read_jsonl(stage_dir(cfg, "cases", args.split) / f"{args.split}.jsonl")[:args.n_cases]
    templates = read_json(stage_dir(cfg, "templates") / "templates.json")
    edits = torch.load(stage_dir(cfg, "rome", args.split) / f"{args.split}.edits.pt", weights_only=True)
    hw = cfg["hardware"]
    lm = load_model(model_dir(cfg), cfg["model"], hw["device"], hw["dtype"])
    device = resolve_device(hw["device"])
    down = lm.arch.module(lm.model, "down_proj", edits["layer"])
    words = context_words(DataStore(cfg["paths"]["data"]), cfg["data"]["long_context"])
    totals = {"guard": 0.0, "keys": 0.0, "train": 0.0}
    for i, case in enumerate(cases):
        negatives = snippets(words, tcfg.gate_negative_snippets, tcfg.gate_negative_words,
                             py_rng(cfg["seed"], "rep_gate_negative_text", case["case_id"]))
        t0 = time.perf_counter()
        original, kept, _, neg = training_texts(lm.tokenizer, case, templates, tcfg, leak_guard(lm.tokenizer, case),
                                                negatives)
        t1 = time.perf_counter()
        keys = collect_training_keys(lm.model, lm.tokenizer, down, original, kept, negative_prompts=neg,
                                     with_gate_data=tcfg.gate_loss_weight > 0, batch_rows=tcfg.key_batch_rows,
                                     device=device)
        t2 = time.perf_counter()
        gen = torch_generator(cfg["seed"], "rep_init", case["case_id"])
        params = init_params(keys.pool.shape[1], acfg, gen, device)
        train_on_keys(params, acfg, keys, edits["u"][i].to(device), tcfg, batch_rng=py_rng(0, "b", i),
                      dropout_generator=torch_generator(0, "d", i), negative_generator=torch_generator(0, "n", i))
        t3 = time.perf_counter()
        for k, dt in zip(totals, (t1 - t0, t2 - t1, t3 - t2)):
            totals[k] += dt
        n_neg = 0 if keys.gate_neg is None else keys.gate_neg.shape[0]
        print(f"case {case['case_id']}: pool {len(kept)} items, gate negatives {n_neg} positions; "
              f"guard {t1 - t0:.2f} s, keys {t2 - t1:.2f} s, {tcfg.steps} steps {t3 - t2:.2f} s", flush=True)
    n = len(cases)
    print("per case: " + ", ".join(f"{k} {v / n:.2f} s" for k, v in totals.items())
          + f"; total {sum(totals.values()) / n:.2f} s (torch threads {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
