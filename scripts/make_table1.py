"""Table 1 (REP paper): one row per (model, method) from evaluation summaries, in percent.

    python scripts/make_table1.py --out-csv results/tables/table1.csv --out-md results/tables/table1.md \
        results/<model>/eval_rome/<hash>/test.summary.json ...
Rows: the unedited model (pre-edit scores) and each method. The metric and aggregation are columns:
exact_match@1, micro-averaged (the REP paper's) unless --metric / --aggregation pick another block of the
summaries (each holds every metric x aggregation).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from robustedit.io import atomic_path, read_json
from robustedit.pipeline.tables import AGGREGATION, COLUMNS, METRIC, rows_from


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("summaries", nargs="+", type=Path)
    ap.add_argument("--out-csv", type=Path, required=True)
    ap.add_argument("--out-md", type=Path, required=True)
    ap.add_argument("--metric", default=METRIC)
    ap.add_argument("--aggregation", default=AGGREGATION)
    args = ap.parse_args()
    rows, seen = [], set()
    for path in args.summaries:
        for row in rows_from(read_json(path), args.metric, args.aggregation):
            key = (row["model"], row["method"])
            if key not in seen:  # the unedited row of a model appears once
                seen.add(key)
                rows.append(row)
    with atomic_path(args.out_csv) as tmp:
        tmp.write_text("\n".join([",".join(COLUMNS)] + [",".join(str(r[c]) for c in COLUMNS) for r in rows]) + "\n")
    md = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    md += ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in rows]
    with atomic_path(args.out_md) as tmp:
        tmp.write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
