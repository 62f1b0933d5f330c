"""Table 1 (REP paper): one row per (model, method) from evaluation summaries, in percent, with 95% intervals.

    python scripts/table1.py --out-csv results/tables/table1.csv --out-md results/tables/table1.md \
        results/<model>/eval_rome/<hash>/test.summary.json ...
Rows, once per protocol: the unedited model (pre-edit scores) and each method; after each method of a model
other than ROME and Unedited, a row "<method> − ROME": the paired difference to ROME under the same protocol
on the cases both rows cover (n_cases: all of ROME's for ROME+REP, EREN's seeded subset for EREN). Last, for
each method scored under both protocols, a row of protocol "generation − teacher_forced": its generation
score minus its teacher-forced score, paired on the same cases (what the protocol alone changes).
Protocols: "teacher_forced" (exact_match@1 unless --metric says otherwise; locality_agreement@1) and
"generation" (--generation-metric, generation_match@1 by default; locality generation_unchanged@1; EREN's
generation-based scorer), each micro-averaged (the REP paper's) unless --aggregation picks another. A
summary without a protocol's block (eval.generation.enabled=false) has no rows under it; EREN has no
teacher-forced rows.
Columns (robustedit.pipeline.tables.TABLE1_CSV): model, method, protocol, n_cases, then per metric column
(success, locality, rephrase_id, shuffle_id, long_id, rephrase_ood, shuffle_ood, long_ood, paraphrase, patil)
the value and its interval `<col>`, `<col>_lo`, `<col>_hi`, then metric, aggregation, split. The Markdown
shows each cell as `value [lo, hi]`. Intervals: seeded case-level percentile bootstrap
(robustedit.analysis.bootstrap) on each summary's sibling <split>.results.jsonl; nothing is re-evaluated.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from robustedit.analysis.bootstrap import LEVEL, N_BOOT
from robustedit.analysis.tables import write_csv
from robustedit.io import atomic_path, read_json, read_jsonl
from robustedit.pipeline.tables import (
    AGGREGATION, GENERATION_METRIC, METRIC, METRIC_COLUMNS, MINUS, PROTOCOL_GAP, ROME, TABLE1_CSV, markdown,
    protocol_gap_rows, protocol_of, scored_rows, sibling, table1_rows,
)

MD_COLUMNS = ["model", "method", "protocol", "n_cases", *METRIC_COLUMNS, "metric", "aggregation", "split"]
NOTE = (f"Cells: value [{LEVEL:.0%} interval], a seeded case-level percentile bootstrap ({N_BOOT} resamples of "
        f"the cases, every item kept with its case). Rows \"<method>{MINUS}{ROME}\": the paired difference on the "
        f"n_cases cases both rows cover, the same resampled cases for both. Rows of protocol \"{PROTOCOL_GAP}\": "
        f"the method's generation score minus its teacher-forced score, paired on the same cases.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("summaries", nargs="+", type=Path)
    ap.add_argument("--out-csv", type=Path, required=True)
    ap.add_argument("--out-md", type=Path, required=True)
    ap.add_argument("--metric", default=METRIC)
    ap.add_argument("--generation-metric", default=GENERATION_METRIC)
    ap.add_argument("--aggregation", default=AGGREGATION)
    args = ap.parse_args()
    entries = []
    for path in args.summaries:
        summary = read_json(path)
        if "skipped" in summary:  # e.g. EREN+score without held-out cases to choose its threshold on
            print(f"{path}: {summary['method']} skipped ({summary['skipped']})")
            continue
        entries.append((summary, read_jsonl(sibling(path))))
    rows, scored = [], {}
    for protocol, metric in (("teacher_forced", args.metric), ("generation", args.generation_metric)):
        key = f"post/{metric}/{args.aggregation}"
        chosen = [(s, r) for s, r in entries if key in s["summaries"] and protocol_of(s["summaries"][key]) == protocol]
        scored[protocol] = scored_rows(chosen, metric, args.aggregation)
        rows += table1_rows(chosen, metric, args.aggregation, scored[protocol])
    rows += protocol_gap_rows(scored["teacher_forced"], scored["generation"], args.aggregation)
    write_csv(args.out_csv, rows, TABLE1_CSV)
    md = markdown(rows, MD_COLUMNS, METRIC_COLUMNS) + ["", NOTE]
    with atomic_path(args.out_md) as tmp:
        tmp.write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
