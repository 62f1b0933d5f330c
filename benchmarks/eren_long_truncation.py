"""Does EREN's retriever see the question of a long-context query? Hit rate of right vs left query truncation.

A Table 1 long-context query is a 300-word WikiText passage + " " + the edit prompt (robustedit.evaluate.items:
long_id / long_ood). all-MiniLM-L6-v2 reads 256 word pieces, so cut on the right (the paper's and
sentence-transformers' behaviour) it keeps the passage and drops the prompt. Retrieval only, no reader.

    .venv/bin/python benchmarks/eren_long_truncation.py                  # 100 queried cases, 1,400 notes
    .venv/bin/python benchmarks/eren_long_truncation.py --n-cases 20     # quick

The notebook holds every CounterFact case of resources/data (prompt + " " + target_new, as eren_suite); the
queries are a seeded subsample of cases, each with one passage drawn as the cases stage draws them
(data.long_context, seeded per case). Prints hit@1 / hit@k of the case's own note for the short prompt and
the long query under each truncation side, and EREN+score's threshold chosen on other (held-out) cases with
its share of queries sent closed-book. Asserts nothing.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def load(args):
    """(config, every pool case in the REP shape, the long-context words) from resources/data."""
    from robustedit.data.counterfact import pool_index, pool_to_rep
    from robustedit.io import read_json
    from robustedit.manifest import DataStore
    from robustedit.pipeline.config import compose
    from robustedit.pipeline.wikitext import context_words

    cfg = compose([f"paths.data={REPO}/resources/data"])
    store = DataStore(cfg["paths"]["data"])
    pool_file = cfg["data"]["pool_file"]
    cases = [pool_to_rep(r) for r in pool_index(read_json(store.path(pool_file)), pool_file).values()]
    return cfg, cases, context_words(store, cfg["data"]["long_context"])


def queries(cases, words, cfg):
    """Per case: (short prompt, passage + " " + prompt), the passage seeded by case_id as the cases stage."""
    from robustedit.data.perturb import long_context
    from robustedit.seeding import py_rng

    n_words = cfg["data"]["long_context"]["n_words"]
    out = []
    for c in cases:
        passage = long_context(words, n_words, py_rng(cfg["seed"], "long_context", c["case_id"]))
        out.append((c["prompt"], passage + " " + c["prompt"]))
    return out


def hits(notebook, texts, own, k):
    res = notebook.search(texts, k)
    top1 = np.mean([h[0].note == o for h, o in zip(res, own)])
    topk = np.mean([any(x.note == o for x in h) for h, o in zip(res, own)])
    return 100 * top1, 100 * topk, [h[0].score for h in res]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-cases", type=int, default=100, help="queried cases (and as many held out for the gate)")
    ap.add_argument("--k", type=int, default=5, help="top-k as eren.k")
    # 32 / 64 word pieces: a few sentences' worth, the scale of the prompt at the query's end; for comparison only
    ap.add_argument("--windows", type=int, nargs="*", default=[32, 64],
                    help="also cut long queries on the left to these shorter lengths (not a pipeline setting)")
    args = ap.parse_args()

    from robustedit.eren.data import subsample
    from dataclasses import replace

    from robustedit.eren.encoder import TransformerEncoder, load_encoder
    from robustedit.eren.gate import calibrate, held_out
    from robustedit.eren.notebook import Notebook, clean_statement
    from robustedit.eren.robustness import edit_statement

    cfg, cases, words = load(args)
    right = load_encoder(cfg["eren"]["encoder"], device="cpu", query_truncation="right")
    left = TransformerEncoder(right.model, right.tokenizer, right.spec, query_truncation="left")
    t0 = time.perf_counter()
    statements = [edit_statement(c) for c in cases]
    emb = right.encode([clean_statement(s) for s in statements])  # notes: the same on either side
    books = {}
    windows = {f"left, last {w}": TransformerEncoder(right.model, right.tokenizer, replace(right.spec, max_length=w),
                                                     query_truncation="left") for w in args.windows}
    for side, enc in (("right", right), ("left", left), *windows.items()):
        books[side] = Notebook(enc)
        books[side].add(statements, embeddings=emb)
    scored = subsample(cases, args.n_cases, cfg["seed"], "eren_long_truncation")
    calib = held_out(cases, scored, args.n_cases, cfg["seed"], "eren_long_truncation_calibration")
    q = queries(scored, words, cfg)
    own = [clean_statement(edit_statement(c)) for c in scored]
    n_tok = [len(right.tokenizer(long)["input_ids"]) for _, long in q]
    print(f"{len(cases)} notes, {len(scored)} queried cases, encoder {right.name} (max {right.spec.max_length} "
          f"word pieces); long queries: {np.mean(n_tok):.0f} word pieces on average, "
          f"{100 * np.mean([n > right.spec.max_length for n in n_tok]):.0f}% over the limit")
    print(f"| query | truncation | hit@1 | hit@{args.k} | mean top-1 score |")
    print("|---|---|---|---|---|")
    rows = {}
    for label, texts, sides in (("short prompt", [s for s, _ in q], ("right",)),
                                ("passage + prompt", [lo for _, lo in q], ("right", "left", *windows))):
        for side in sides:
            h1, hk, scores = hits(books[side], texts, own, args.k)
            rows[(label, side)] = scores
            print(f"| {label} | {side} | {h1:.1f} | {hk:.1f} | {np.mean(scores):.3f} |")

    # EREN+score: the threshold from held-out cases' short and long queries (left), as the suite's calibration
    cq = queries(calib, words, cfg)
    items = [{"input": text, "in_scope": True, "own_note": clean_statement(edit_statement(c))}
             for c, pair in zip(calib, cq) for text in pair]
    gate = calibrate(items, books["left"])
    t = gate["threshold"]
    print(f"EREN+score threshold {t:.3f} (balanced accuracy {gate['balanced_accuracy']:.3f} on {gate['n_queries']} "
          f"held-out queries, {gate['n_relevant']} relevant); sent closed-book: short "
          f"{100 * np.mean(np.array(rows[('short prompt', 'right')]) < t):.0f}%, long (left) "
          f"{100 * np.mean(np.array(rows[('passage + prompt', 'left')]) < t):.0f}%")
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
