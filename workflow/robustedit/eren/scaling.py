"""Retrieval recall@k against notebook size (EREN's "scalable" claim), with encode and search timings.

Protocol: the cases are put in one seeded order; a notebook of size n holds the statements of the
first n cases (notebooks are nested). Queries are the rephrase prompts of the first
min(n, max_queries) cases, all of whose statements are in every notebook evaluated. A query is a hit
at k when a note with the text of its own case's statement is among the top k (duplicated statement
texts count as hits for each other). Statements and queries are encoded once, at the largest size.

`reader_vs_size` adds the reader: ES/BP of two-step EREN on a few cases' rephrase / locality prompts as
the notebook grows around them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import ConfigError, RecordError
from ..seeding import py_rng
from .editor import DEFAULT_K, ErenEditor
from .encoder import Encoder, encode_queries
from .evaluate import evaluate_items, scorers
from .notebook import Notebook, clean_statement
from .reader import Reader


@dataclass
class EncodedNotes:
    """The nested notebooks' contents, encoded once: notebook n holds notes[:n]."""

    order: list[int]  # case index of each note, in notebook order
    notes: list[str]  # cleaned statements
    embeddings: np.ndarray  # [len(notes), dim]
    encode_s: float  # seconds spent encoding the notes


def scaling_order(n_cases: int, seed: int) -> list[int]:
    """The seeded order in which cases enter the nested notebooks."""
    order = list(range(n_cases))
    py_rng(seed, "eren_scaling_order").shuffle(order)
    return order


def check_sizes(sizes: Sequence[int], n_cases: int) -> list[int]:
    sizes = sorted(set(int(s) for s in sizes))
    if not sizes or sizes[0] < 1 or sizes[-1] > n_cases:
        raise ConfigError(f"notebook sizes must lie in [1, {n_cases}], got {sizes}")
    return sizes


def encode_notes(encoder: Encoder, statements: Sequence[str], n_max: int, seed: int) -> EncodedNotes:
    """Encode the statements of the first n_max cases of the seeded order."""
    chosen = scaling_order(len(statements), seed)[:n_max]
    notes = [clean_statement(statements[i], f"statement[{i}]") for i in chosen]
    emb, seconds = _timed_encode(encoder, notes)
    return EncodedNotes(chosen, notes, emb, seconds)


def _timed_encode(encoder: Encoder, texts: list[str], queries: bool = False) -> tuple[np.ndarray, float]:
    """Embeddings of notes (queries=False) or queries (cut on the encoder's query side), and the seconds."""
    t0 = time.perf_counter()
    emb = encode_queries(encoder, texts) if queries else encoder.encode(texts)
    return emb, time.perf_counter() - t0


def recall_at_k(encoder: Encoder, statements: Sequence[str], queries: Sequence[str], sizes: Sequence[int],
                ks: Sequence[int] = (1, 5), index_kinds: Sequence[str] = ("flat",), max_queries: int = 1000,
                n_latency: int = 200, seed: int = 0, encoded: EncodedNotes | None = None) -> dict:
    """Recall@k per (size, index kind) and timings.

    `statements[i]` and `queries[i]` belong to case i. `max_queries` caps the queries per size
    (1000 keeps the query encoding small next to the notebook's); `n_latency` queries are also
    searched one at a time to measure single-query search latency. `encoded` (from encode_notes with
    the same seed and at least the largest size) skips encoding the notes again. Returns
    {"encode": {...throughput...}, "rows": [{size, index, recall@k..., ms per query...}]}.
    """
    if len(statements) != len(queries):
        raise ValueError(f"{len(statements)} statements but {len(queries)} queries")
    sizes = check_sizes(sizes, len(statements))
    n_max = sizes[-1]
    if encoded is None or len(encoded.notes) < n_max:
        encoded = encode_notes(encoder, statements, n_max, seed)
    chosen, notes, note_emb = encoded.order[:n_max], encoded.notes[:n_max], encoded.embeddings[:n_max]
    nq_max = min(n_max, max_queries)
    q_texts = [queries[i] for i in chosen[:nq_max]]
    q_emb, t_queries = _timed_encode(encoder, q_texts, queries=True)
    # single-query encoding latency (what a user waits for before the search)
    t0 = time.perf_counter()
    for q in q_texts[:min(nq_max, 50)]:
        encode_queries(encoder, [q])
    single_encode_ms = 1000 * (time.perf_counter() - t0) / min(nq_max, 50)
    encode = {"n_statements": len(encoded.notes), "statements_per_s": len(encoded.notes) / encoded.encode_s,
              "n_queries": nq_max, "queries_per_s": nq_max / t_queries, "single_query_encode_ms": single_encode_ms}

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


# ---- answers against notebook size (with the reader) ------------------------------------------
def scaling_items(cases: Sequence[dict], encoded: EncodedNotes, n_queries: int) -> list[dict]:
    """Items of the first n_queries cases of the notebook order: the rephrase prompt (in scope, gold
    target_new) and the locality prompt (out of scope: the output should not change)."""
    items = []
    for j, i in enumerate(encoded.order[:n_queries]):
        case = cases[i]
        for key in ("rephrase_prompt", "locality_prompt", "target_new"):
            if not isinstance(case.get(key), str):
                raise RecordError(f"case_id {case.get('case_id', '?')}: field {key!r} should be a string")
        own = encoded.notes[j]
        items.append({"id": case["case_id"], "group": "rephrase", "in_scope": True, "input": case["rephrase_prompt"],
                      "gold": case["target_new"], "own_note": own})
        items.append({"id": case["case_id"], "group": "locality", "in_scope": False,
                      "input": case["locality_prompt"], "own_note": own})
    return items


def reader_vs_size(encoder: Encoder, reader: Reader, cases: Sequence[dict], encoded: EncodedNotes,
                   sizes: Sequence[int], n_queries: int, k: int = DEFAULT_K, index: str = "flat") -> dict:
    """ES/BP/EQ of two-step EREN against notebook size on the first n_queries cases of the order.

    n_queries must not exceed the smallest size, so every query's own note is in every notebook; the
    reader's closed-book outputs are generated once and shared by all sizes. Returns
    {"rows": [{size, ES, BP, EQ, ...}], "items": [per item, with its notebook size]}.
    """
    sizes = check_sizes(sizes, len(encoded.notes))
    if not 1 <= n_queries <= sizes[0]:
        raise ConfigError(f"the reader scaling queries ({n_queries}) must lie in [1, smallest size {sizes[0]}]")
    items = scaling_items(cases, encoded, n_queries)
    unedited = ErenEditor(reader, None, "qa", "unedited", k)
    unique = list(dict.fromkeys(it["input"] for it in items))
    base = dict(zip(unique, unedited.closed_book(unique)))
    correct, unchanged = scorers("qa")
    rows, out_items = [], []
    for n in sizes:
        notebook = Notebook(encoder, index=index)
        notebook.add(encoded.notes[:n], embeddings=encoded.embeddings[:n])
        t0 = time.perf_counter()
        res = evaluate_items(items, ErenEditor(reader, notebook, "qa", "eren", k), unedited, correct, unchanged,
                             closed_book=base)
        rows.append({"size": n, "index": index, **res.summary, "seconds": time.perf_counter() - t0})
        out_items += [{"size": n, **it} for it in res.items]
    return {"rows": rows, "items": out_items}
