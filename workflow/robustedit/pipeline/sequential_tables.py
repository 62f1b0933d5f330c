"""The sequential protocol's table (scripts/sequential_table.py): per checkpoint N, Table 1's rows of every
method on the first N edited cases (robustedit.pipeline.tables.table1_entries: the same columns, metric and
case-level bootstrap intervals), the unedited model on the same cases, and each method's paired difference
to ROME at that N. The perplexity column is the probe's (robustedit.sequential.probe): exp(Σ NLL / Σ tokens)
on held-out WikiText lines, its interval a line-level bootstrap, its differences paired on the same lines."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..analysis.bootstrap import CaseSums, bootstrap_interval, paired_difference
from .sequential_config import NO_WEIGHTS, ON_ROME
from .tables import (AGGREGATION, GENERATION_METRIC, METRIC, METRIC_COLUMNS, MINUS, ROME, UNEDITED, difference_row,
                     interval_cells, table1_entries, with_bounds)

# eval.sequential.methods -> row name
METHOD_NAMES = {"rome": ROME, ON_ROME: "ROME+REP", "memit": "MEMIT", "alphaedit": "AlphaEdit", NO_WEIGHTS: "EREN"}
NO_UNEDITED = (NO_WEIGHTS,)  # methods whose "pre" is not the unedited edit model (EREN's: the closed-book reader)
# Methods also shown under their generation scorer, as a row of its own (protocol "generation", no difference to
# ROME's teacher-forced row): a small reader restates the query before the object, so teacher forcing the object
# right after the answer prompt reads 0 on every edit column (README, "Table 1 on SmolLM2-135M").
GENERATION_ROWS = {NO_WEIGHTS: "EREN (generation)"}
PERPLEXITY = "perplexity"
SEQUENTIAL_COLUMNS = [*METRIC_COLUMNS, PERPLEXITY]
SEQUENTIAL_CSV = ["model", "method", "n_edits", "protocol", "n_cases",
                  *with_bounds(SEQUENTIAL_COLUMNS, SEQUENTIAL_COLUMNS), "metric", "aggregation", "split"]
# the resampled statistic: micro = 100 x mean NLL per token, so perplexity = exp(micro / 100)
_PERPLEXITY = {PERPLEXITY: lambda stats: np.exp(stats["nll"] / 100.0)}


def line_sums(losses: Sequence[Sequence[float]]) -> CaseSums:
    """The probe's per-line (Σ NLL, tokens) as a bootstrap table whose "cases" are the lines."""
    arr = np.asarray(losses, dtype=np.float64).reshape(-1, 2)
    return CaseSums(tuple(range(len(arr))), ("nll",), arr[:, :1], arr[:, 1:])


def perplexity_cells(losses, base=None) -> dict:
    """{perplexity, _lo, _hi} of the lines' losses, or of their paired difference to `base`'s losses."""
    if losses is None:
        return interval_cells({}, [PERPLEXITY])
    if base is None:
        return interval_cells(bootstrap_interval(line_sums(losses), derived=_PERPLEXITY), [PERPLEXITY])
    return interval_cells(paired_difference(line_sums(losses), line_sums(base), derived=_PERPLEXITY), [PERPLEXITY])


def sequential_rows(summary: dict, records: Sequence[dict], metric: str = METRIC,
                    aggregation: str = AGGREGATION) -> list[dict]:
    """Rows of a sequential_eval summary and its results, N by N: Unedited, each method, then "<method> − ROME"
    rows (paired on the cases both scored) for every method but ROME, then GENERATION_ROWS' generation rows."""
    probe = summary.get("perplexity", {})  # absent in summaries written before the probe

    def losses(method: str, n: int):
        return probe.get("unedited") if method == UNEDITED else probe.get(_method_key(method), {}).get(str(n))

    rows = []
    for n in summary["n_edits"]:
        scored = []
        unedited_from = next((m for m in summary["summaries"] if m not in NO_UNEDITED), None)
        per_case = {method: [r for r in records if r["method"] == method and r["n_edits"] == n]
                    for method in summary["summaries"]}
        for method, per_n in summary["summaries"].items():
            entry = {"model": summary["model"], "method": METHOD_NAMES[method], "split": summary["split"],
                     "include_unedited": method == unedited_from, "summaries": per_n[str(n)]}
            scored += table1_entries(entry, per_case[method], metric, aggregation)
        base = next((r for r in scored if r["method"] == ROME), None)
        diffs = [difference_row(r, base, aggregation, METRIC_COLUMNS) for r in scored
                 if base is not None and r["method"] not in (ROME, UNEDITED)]
        for r in scored:
            r.update(perplexity_cells(losses(r["method"], n)))
        for r in diffs:
            if r:
                method, base_method = r["method"].split(MINUS)
                own, base_losses = losses(method, n), losses(base_method, n)
                r.update(perplexity_cells(own, base_losses) if own and base_losses else perplexity_cells(None))
        generated = []
        for method, label in GENERATION_ROWS.items():
            if method in summary["summaries"] and metric == METRIC:
                entry = {"model": summary["model"], "method": label, "split": summary["split"],
                         "include_unedited": False, "summaries": summary["summaries"][method][str(n)]}
                generated += [{**r, **perplexity_cells(None)}
                              for r in table1_entries(entry, per_case[method], GENERATION_METRIC, aggregation)]
        rows += [{**{k: v for k, v in r.items() if k != "_table"}, "n_edits": n}
                 for r in scored + diffs + generated if r]
    return rows


def _method_key(name: str) -> str | None:
    return next((key for key, row_name in METHOD_NAMES.items() if row_name == name), None)
