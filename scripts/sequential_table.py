"""The sequential protocol's table: per checkpoint N and method, Table 1's columns on the first N edited cases.

    python scripts/sequential_table.py --out-csv results/tables/sequential.csv \
        --out-md results/tables/sequential.md results/<model>/sequential_eval/<hash>/test.sequential.summary.json
Rows per model and N: Unedited (the same cases before any edit), each method with all N edits in the
weights, and "<method> − ROME" (paired on the same cases). Columns as Table 1 with n_edits after the method;
teacher-forced exact_match@1 (locality_agreement@1 against the unedited model), micro-averaged unless
--metric / --aggregation say otherwise; 95% case-level bootstrap intervals from the summary's sibling
<split>.sequential.results.jsonl. The last column is the perplexity probe's (held-out WikiText lines; its
interval resamples lines).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from robustedit.analysis.tables import write_csv
from robustedit.io import atomic_path, read_json, read_jsonl
from robustedit.pipeline.sequential_tables import SEQUENTIAL_COLUMNS, SEQUENTIAL_CSV, sequential_rows
from robustedit.pipeline.tables import AGGREGATION, METRIC, markdown, sibling

MD_COLUMNS = ["model", "method", "n_edits", "n_cases", *SEQUENTIAL_COLUMNS]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("summaries", nargs="+", type=Path)
    ap.add_argument("--out-csv", type=Path, required=True)
    ap.add_argument("--out-md", type=Path, required=True)
    ap.add_argument("--metric", default=METRIC)
    ap.add_argument("--aggregation", default=AGGREGATION)
    args = ap.parse_args()
    rows = []
    for path in args.summaries:
        records = read_jsonl(sibling(path, "sequential_eval", "results"))
        rows += sequential_rows(read_json(path), records, args.metric, args.aggregation)
    write_csv(args.out_csv, rows, SEQUENTIAL_CSV)
    md = markdown(rows, MD_COLUMNS, SEQUENTIAL_COLUMNS)
    with atomic_path(args.out_md) as tmp:
        tmp.write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
