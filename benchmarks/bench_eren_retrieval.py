"""Benchmark EREN's notebook: encode throughput, recall@k and per-query search latency vs notebook size.

Statements are EasyEdit CounterFact cases (prompt + " " + target_new, 21,919 in all) and queries their
rephrase prompts; see robustedit.eren.scaling for the protocol. Prints figures; asserts nothing.

    .venv/bin/python benchmarks/bench_eren_retrieval.py                    # 100, 1000, 10000, 21919
    .venv/bin/python benchmarks/bench_eren_retrieval.py --sizes 100 1000   # quick
    .venv/bin/python benchmarks/bench_eren_retrieval.py --e2e 64           # + CounterFact-Hard with SmolLM2

`--e2e N` also runs EREN, one-step MRC and the unedited model end to end on N seeded CounterFact-Hard
edits with the real SmolLM2-135M-Instruct reader and prints ES/BP/EQ and seconds per query.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "resources" / "data"


def retrieval(args) -> dict:
    from robustedit.eren.data import load_counterfact_easyedit, scaling_pairs
    from robustedit.eren.encoder import load_encoder
    from robustedit.eren.scaling import recall_at_k

    splits = [DATA / "counterfact" / "easyedit" / f"counterfact-{s}.json" for s in ("train", "edit", "val")]
    cases = load_counterfact_easyedit(splits)
    statements, queries = scaling_pairs(cases)
    sizes = [min(s, len(cases)) for s in args.sizes]
    enc = load_encoder(args.encoder, device=args.device, batch_size=args.batch_size)
    print(f"{len(cases)} cases; encoder {enc.name} (dim {enc.dim}) on {args.device}, batch {args.batch_size}; "
          f"torch threads {torch.get_num_threads()}", flush=True)
    out = recall_at_k(enc, statements, queries, sizes=sizes, ks=args.ks, index_kinds=args.index,
                      max_queries=args.max_queries, n_latency=args.n_latency, seed=args.seed)
    e = out["encode"]
    print(f"\nencode: {e['n_statements']} statements at {e['statements_per_s']:.1f}/s "
          f"({e['n_statements'] / e['statements_per_s']:.1f} s); {e['n_queries']} queries at "
          f"{e['queries_per_s']:.1f}/s; single-query encode {e['single_query_encode_ms']:.1f} ms")
    ks = [f"recall@{k}" for k in args.ks]
    print(f"\n{'size':>6} {'index':>5} {'nq':>5} " + " ".join(f"{k:>9}" for k in ks)
          + f" {'build s':>8} {'ms/q batch':>10} {'ms/q single':>11}")
    for r in out["rows"]:
        print(f"{r['size']:>6} {r['index']:>5} {r['n_queries']:>5} " + " ".join(f"{r[k]:>9.3f}" for k in ks)
              + f" {r['build_s']:>8.3f} {r['search_ms_per_query_batched']:>10.4f} {r['search_ms_single_query']:>11.4f}")
    return out


def end_to_end(args) -> dict:
    from robustedit.eren.data import edit_statements, load_counterfact_hard, subsample
    from robustedit.eren.encoder import load_encoder
    from robustedit.eren.evaluate import build_editor, evaluate_counterfact_hard
    from robustedit.eren.reader_load import load_chat_reader

    records = subsample(load_counterfact_hard(DATA / "eren" / "cfh_filtered.json"), args.e2e, args.seed)
    enc = load_encoder(args.encoder, device=args.device)
    reader = load_chat_reader(REPO / "resources" / "models" / "smollm2-135m", device=args.device,
                              batch_size=args.reader_batch)
    unedited = build_editor([], None, reader, "qa", "unedited")
    results = {}
    for method in ("eren", "one_step", "unedited"):
        editor = build_editor(edit_statements(records), enc, reader, "qa", method)
        # the unedited model's closed-book outputs are computed once and shared by all methods
        t0 = time.perf_counter()
        res = evaluate_counterfact_hard(records, editor, unedited)
        dt = time.perf_counter() - t0
        n = len(res.items)
        results[method] = {**res.summary, "seconds": dt, "queries": n}
        if args.items_out:
            path = Path(args.items_out).with_suffix(f".{method}.jsonl")
            with open(path, "w") as fh:
                for it in res.items:
                    fh.write(json.dumps(it, ensure_ascii=False) + "\n")
        unedited = _Cached(unedited, res.items)
        s = res.summary
        print(f"{method:>9}: ES {s['ES']:.1f}  BP {s['BP']:.1f}  EQ {s['EQ']:.1f}  "
              f"fallback in/out {s['fallback_rate_in_scope']:.1f}/{s['fallback_rate_out_of_scope']:.1f}%  "
              f"own note retrieved {s['own_note_retrieved_in_scope']:.1f}%  "
              f"{n} queries in {dt:.0f} s ({dt / n:.2f} s/query)", flush=True)
    return results


class _Cached:
    """An unedited editor that reuses the closed-book outputs already computed (greedy = deterministic)."""

    def __init__(self, inner, items):
        self.inner = inner
        self.method, self.task, self.reader = inner.method, inner.task, inner.reader
        self.known = {it["input"]: it["unedited_output"] for it in items}

    def closed_book(self, queries, known=None):
        return self.inner.closed_book(queries, {**self.known, **(known or {})})


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000, 21919])
    p.add_argument("--ks", type=int, nargs="+", default=[1, 5])
    p.add_argument("--index", nargs="+", default=["flat", "hnsw"])
    p.add_argument("--max-queries", type=int, default=1000)  # queries per size (rephrase prompts)
    p.add_argument("--n-latency", type=int, default=200)  # queries searched one at a time for latency
    p.add_argument("--encoder", default="minilm")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    # faiss's OpenMP threads busy-wait; on a loaded machine 1 thread gives lower single-query latency.
    p.add_argument("--faiss-threads", type=int, default=0,
                   help="OpenMP threads (0 = default); faiss and torch share the OpenMP runtime, so this limits both")
    p.add_argument("--skip-retrieval", action="store_true")
    p.add_argument("--e2e", type=int, default=0, help="CounterFact-Hard edits for the end-to-end run (0 = skip)")
    p.add_argument("--reader-batch", type=int, default=16)
    p.add_argument("--items-out", default=None, help="write per-item e2e records to <path>.<method>.jsonl")
    p.add_argument("--json", default=None, help="also write all figures to this JSON file")
    args = p.parse_args(argv)
    print(f"python {platform.python_version()}, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}")
    if args.faiss_threads:
        import faiss

        faiss.omp_set_num_threads(args.faiss_threads)
    report = {"args": vars(args)}
    if not args.skip_retrieval:
        report["retrieval"] = retrieval(args)
    if args.e2e:
        report["end_to_end"] = end_to_end(args)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
