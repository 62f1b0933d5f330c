"""Stage `eren_scaling`: retrieval recall@k and latency against notebook size, and (optionally) the reader's
ES / BP as the notebook grows.

    python scripts/eren_scaling.py
Notebooks of eren.scaling.sizes edits (nested, one seeded order) from EasyEdit's 21,919 CounterFact cases;
see robustedit.eren.scaling for the protocol. Writes <stage dir>/scaling.json (encoder throughput, one row
per size and index kind, the reader rows or why they were skipped) and scaling.items.jsonl (the reader's
per-item records; empty when eren.scaling.reader_queries=0).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from robustedit.eren.data import load_counterfact_easyedit, scaling_pairs
from robustedit.eren.scaling import check_sizes, encode_notes, reader_vs_size, recall_at_k
from robustedit.io import write_json, write_jsonl
from robustedit.manifest import DataStore
from robustedit.pipeline.stage import stage_app
from robustedit.pipeline.eren import load_encoder_from, load_reader_from
from robustedit.stages import file_name


def reader_part(cfg: dict, encoder, reader_loader: Callable, cases: list[dict], encoded,
                sizes: list[int]) -> tuple[dict, list[dict]]:
    """ES/BP of two-step EREN per size on reader_queries cases (flat index), or a note that it was skipped.
    `reader_loader()` returns a TimedReader; it is called only when the reader runs."""
    n = cfg["eren"]["scaling"]["reader_queries"]
    if n == 0:
        return {"skipped": "eren.scaling.reader_queries=0: retrieval only"}, []
    reader = reader_loader()
    out = reader_vs_size(encoder, reader, cases, encoded, sizes, n, cfg["eren"]["k"])
    summary = {"n_queries": n, "reader": cfg["eren"]["reader"], "rows": out["rows"], "timing": reader.stats()}
    return summary, out["items"]


def run_scaling(cfg: dict, encoder, reader_loader: Callable) -> tuple[dict, list[dict]]:
    """(scaling report, the reader's per-item records)."""
    sc, store = cfg["eren"]["scaling"], DataStore(cfg["paths"]["data"])
    cases = load_counterfact_easyedit([store.path(f) for f in sc["files"]])
    statements, queries = scaling_pairs(cases)
    sizes = check_sizes(sc["sizes"], len(cases))
    encoded = encode_notes(encoder, statements, sizes[-1], cfg["seed"])
    print(f"[eren_scaling] encoded {len(encoded.notes)} notes in {encoded.encode_s:.1f} s", flush=True)
    retrieval = recall_at_k(encoder, statements, queries, sizes, sc["ks"], sc["index_kinds"], sc["max_queries"],
                            sc["n_latency"], cfg["seed"], encoded=encoded)
    for row in retrieval["rows"]:
        print(f"[eren_scaling] {row['index']} {row['size']}: " + ", ".join(
            f"recall@{k} {row[f'recall@{k}']:.3f}" for k in sc["ks"])
              + f", {row['search_ms_single_query']:.3f} ms/query", flush=True)
    reader, items = reader_part(cfg, encoder, reader_loader, cases, encoded, sizes)
    report = {"n_cases": len(cases), "encoder": encoder.name, "device": cfg["hardware"]["device"],
              "encode": retrieval["encode"], "retrieval": retrieval["rows"], "reader": reader}
    return report, items


@stage_app("eren_scaling")
def main(cfg: dict, out_dir: Path) -> None:
    report, items = run_scaling(cfg, load_encoder_from(cfg), lambda: load_reader_from(cfg))
    write_jsonl(out_dir / file_name("eren_scaling", "items"), items)
    write_json(out_dir / file_name("eren_scaling", "scaling"), report)


if __name__ == "__main__":
    main()
