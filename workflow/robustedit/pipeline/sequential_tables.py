"""The sequential protocol's table (scripts/sequential_table.py): per checkpoint N, Table 1's rows of every
method on the first N edited cases (robustedit.pipeline.tables.table1_entries: the same columns, metric and
case-level bootstrap intervals), the unedited model on the same cases, and each method's paired difference
to ROME at that N."""
from __future__ import annotations

from typing import Sequence

from .tables import (AGGREGATION, METRIC, METRIC_COLUMNS, ROME, UNEDITED, difference_row, table1_entries,
                     with_bounds)

METHOD_NAMES = {"rome": ROME, "memit": "MEMIT", "alphaedit": "AlphaEdit"}  # eval.sequential.methods -> row name
SEQUENTIAL_CSV = ["model", "method", "n_edits", "protocol", "n_cases",
                  *with_bounds(METRIC_COLUMNS, METRIC_COLUMNS), "metric", "aggregation", "split"]


def sequential_rows(summary: dict, records: Sequence[dict], metric: str = METRIC,
                    aggregation: str = AGGREGATION) -> list[dict]:
    """Rows of a sequential_eval summary and its results, N by N: Unedited, each method, then "<method> − ROME"
    rows (paired on the same N cases) for every method but ROME."""
    rows = []
    for n in summary["n_edits"]:
        scored = []
        for k, (method, per_n) in enumerate(summary["summaries"].items()):
            per_case = [r for r in records if r["method"] == method and r["n_edits"] == n]
            entry = {"model": summary["model"], "method": METHOD_NAMES[method], "split": summary["split"],
                     "include_unedited": k == 0, "summaries": per_n[str(n)]}
            scored += table1_entries(entry, per_case, metric, aggregation)
        base = next((r for r in scored if r["method"] == ROME), None)
        diffs = [difference_row(r, base, aggregation, METRIC_COLUMNS) for r in scored
                 if base is not None and r["method"] not in (ROME, UNEDITED)]
        rows += [{**{k: v for k, v in r.items() if k != "_table"}, "n_edits": n} for r in scored + diffs if r]
    return rows
