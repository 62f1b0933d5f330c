"""Retrieval recall@k against notebook size (EREN's "scalable" claim), with encode and search timings.

Protocol: the cases are put in one seeded order; a notebook of size n holds the statements of the
first n cases (notebooks are nested). Queries are the rephrase prompts of the first
min(n, max_queries) cases, all of whose statements are in every notebook evaluated. A query is a hit
at k when a note with the text of its own case's statement is among the top k (duplicated statement
texts count as hits for each other). Statements and queries are encoded once, at the largest size.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from ..errors import ConfigError
from ..seeding import py_rng
from .encoder import Encoder
from .notebook import Notebook, clean_statement


def _timed_encode(encoder: Encoder, texts: list[str]) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    emb = encoder.encode(texts)
    return emb, time.perf_counter() - t0


def recall_at_k(encoder: Encoder, statements: Sequence[str], queries: Sequence[str], sizes: Sequence[int],
                ks: Sequence[int] = (1, 5), index_kinds: Sequence[str] = ("flat",), max_queries: int = 1000,
                n_latency: int = 200, seed: int = 0) -> dict:
    """Recall@k per (size, index kind) and timings.

    `statements[i]` and `queries[i]` belong to case i. `max_queries` caps the queries per size
    (1000 keeps the query encoding small next to the notebook's); `n_latency` queries are also
    searched one at a time to measure single-query search latency. Returns
    {"encode": {...throughput...}, "rows": [{size, index, recall@k..., ms per query...}]}.
    """
    if len(statements) != len(queries):
        raise ValueError(f"{len(statements)} statements but {len(queries)} queries")
    sizes = sorted(set(int(s) for s in sizes))
    if not sizes or sizes[0] < 1 or sizes[-1] > len(statements):
        raise ConfigError(f"notebook sizes must lie in [1, {len(statements)}], got {sizes}")
    order = list(range(len(statements)))
    py_rng(seed, "eren_scaling_order").shuffle(order)
    n_max = sizes[-1]
    chosen = order[:n_max]
    notes = [clean_statement(statements[i], f"statement[{i}]") for i in chosen]
    note_emb, t_notes = _timed_encode(encoder, notes)
    nq_max = min(n_max, max_queries)
    q_texts = [queries[i] for i in chosen[:nq_max]]
    q_emb, t_queries = _timed_encode(encoder, q_texts)
    # single-query encoding latency (what a user waits for before the search)
    t0 = time.perf_counter()
    for q in q_texts[:min(nq_max, 50)]:
        encoder.encode([q])
    single_encode_ms = 1000 * (time.perf_counter() - t0) / min(nq_max, 50)
    encode = {"n_statements": n_max, "statements_per_s": n_max / t_notes, "n_queries": nq_max,
              "queries_per_s": nq_max / t_queries, "single_query_encode_ms": single_encode_ms}

    rows = []
    for kind in index_kinds:
        for n in sizes:
            nb = Notebook(encoder, index=kind)
            t0 = time.perf_counter()
            nb.add(notes[:n], embeddings=note_emb[:n])
            build_s = time.perf_counter() - t0
            nq = min(n, max_queries)
            k_max = min(max(ks), n)
            t0 = time.perf_counter()
            _, ids = nb.search_embeddings(q_emb[:nq], k_max)
            batch_ms = 1000 * (time.perf_counter() - t0) / nq
            n_lat = min(nq, n_latency)
            t0 = time.perf_counter()
            for j in range(n_lat):
                nb.search_embeddings(q_emb[j:j + 1], k_max)
            single_ms = 1000 * (time.perf_counter() - t0) / n_lat
            hit_rank = []
            for j in range(nq):
                ranks = [r for r, i in enumerate(ids[j]) if i >= 0 and nb.notes[i] == notes[j]]
                hit_rank.append(ranks[0] if ranks else None)
            row = {"size": n, "index": kind, "n_queries": nq, "build_s": build_s,
                   "search_ms_per_query_batched": batch_ms, "search_ms_single_query": single_ms}
            for k in ks:
                row[f"recall@{k}"] = sum(r is not None and r < k for r in hit_rank) / nq
            rows.append(row)
    return {"encode": encode, "rows": rows}
