"""REP's setting search table (rep.search): each setting's scores and paired difference to ROME on the search
split, with 95% case-level bootstrap intervals, training diagnostics and the selected setting.

    python scripts/rep_search.py --out-csv results/tables/rep_search.csv --out-md results/tables/rep_search.md \
        --settings "(run setting)" "rep.train.lr=0.005" --summaries a/valid.summary.json b/valid.summary.json \
        --logs a/valid.rep.jsonl b/valid.rep.jsonl --rome-summaries r/valid.summary.json r/valid.summary.json
One entry per setting in each list (--rome-summaries: the ROME evaluation of the setting's run). Rows: per
setting "ROME+REP" (its scores) and "ROME+REP − ROME" (the paired difference), plus each run's ROME row once.
The selection rule is robustedit.pipeline.rep_search's (declared there, applied to valid only).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from robustedit.analysis.tables import write_csv
from robustedit.io import atomic_path, read_json, read_jsonl
from robustedit.pipeline.rep_search import GAP_COLUMNS, gap_closed, select, selection_score, training_diagnostics
from robustedit.pipeline.tables import (AGGREGATION, METRIC, METRIC_COLUMNS, difference_row, md_cell, sibling,
                                        table1_entries, with_bounds)

DIAGNOSTICS = ["final_agg_loss", "final_consistency", "gate_open_positives", "gate_open_negatives", "steps"]
COLUMNS = (["setting", "model", "method", "split", "n_cases"] + with_bounds(METRIC_COLUMNS, METRIC_COLUMNS)
           + [f"gap_closed_{c}" for c in GAP_COLUMNS] + ["selection_score", "selected"] + DIAGNOSTICS)


def _post(summary_path: Path) -> dict:
    summary = read_json(summary_path)
    return table1_entries(dict(summary, include_unedited=False), read_jsonl(sibling(summary_path)), METRIC,
                          AGGREGATION)[0]


def search_rows(settings, summaries, logs, rome_summaries) -> list[dict]:
    if not (len(settings) == len(summaries) == len(logs) == len(rome_summaries)):
        raise ValueError("--settings, --summaries, --logs and --rome-summaries need one entry per setting")
    rome_rows, scored, diffs = {}, [], []
    for setting, summary, log, rome in zip(settings, summaries, logs, rome_summaries):
        base = rome_rows.setdefault(str(rome), _post(rome))
        row = _post(summary)
        diff = difference_row(row, base, AGGREGATION, METRIC_COLUMNS)
        extra = {f"gap_closed_{c}": gap_closed(row, base, c) for c in GAP_COLUMNS}
        extra.update(training_diagnostics(read_jsonl(log)), selection_score=selection_score(diff))
        scored.append((setting, row, diff, extra))
        diffs.append(diff)
    chosen = select(diffs)
    out = [{**{k: v for k, v in r.items() if k != "_table"}, "setting": "(baseline)"} for r in rome_rows.values()]
    for i, (setting, row, diff, extra) in enumerate(scored):
        flag = "yes" if i == chosen else ""
        out.append({**{k: v for k, v in row.items() if k != "_table"}, "setting": setting, **extra, "selected": flag})
        out.append({**diff, "setting": setting, "selected": flag})
    return out


def markdown(rows: list[dict]) -> str:
    cols = ["setting", "method", "n_cases", *METRIC_COLUMNS, "selection_score", "selected"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(md_cell(r, c, METRIC_COLUMNS) for c in cols) + " |")
    note = "95% intervals: seeded case-level percentile bootstrap (robustedit.analysis.bootstrap)."
    return "\n".join(lines) + f"\n\n{note}\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--settings", nargs="+", required=True)
    ap.add_argument("--summaries", nargs="+", type=Path, required=True)
    ap.add_argument("--logs", nargs="+", type=Path, required=True)
    ap.add_argument("--rome-summaries", nargs="+", type=Path, required=True)
    ap.add_argument("--out-csv", type=Path, required=True)
    ap.add_argument("--out-md", type=Path, required=True)
    args = ap.parse_args()
    rows = search_rows(args.settings, args.summaries, args.logs, args.rome_summaries)
    write_csv(args.out_csv, rows, COLUMNS)
    text = markdown(rows)
    with atomic_path(args.out_md) as tmp:
        tmp.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
