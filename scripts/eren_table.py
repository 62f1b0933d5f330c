"""EREN's Table 3: ES / BP / EQ per (data set, method) from eren_eval summaries, in percent, with 95% intervals.

    python scripts/eren_table.py --out-csv results/tables/eren.csv --out-md results/tables/eren.md \
        results/<model>/eren_eval/<hash>/cfh.summary.json results/<model>/eren_eval/<hash>/fever.summary.json
One row per (reader, data set, method) and evaluated subsample, for every data set whose summary is given
(eren.data's names); the paper's EREN numbers (FLAN-T5-XL reader, Contriever retriever) are given beside the
EREN rows of cfh and fever only. A data set without out-of-scope questions has no BP (nor EQ): "n/a".
Every percentage (ES, BP, EQ, fallback and own-note rates) gets `<col>_lo`, `<col>_hi` in the CSV and
`value [lo, hi]` in the Markdown: a seeded record-level percentile bootstrap on the summary's sibling
<dataset>.items.jsonl (records resampled, each with all its questions; EQ recomputed per resample). After
each data set's rows, "EREN − <method>" rows: the paired difference to each other method on the same records.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from robustedit.analysis.bootstrap import LEVEL, N_BOOT, bootstrap_interval, paired_difference
from robustedit.analysis.tables import write_csv
from robustedit.io import atomic_path, read_json, read_jsonl
from robustedit.pipeline.tables import (
    EQ, EREN_INTERVAL_COLUMNS, MINUS, check_against, eren_case_sums, interval_cells, markdown, sibling, with_bounds,
)

DATASET_NAMES = {"cfh": "CounterFact-Hard (QA)", "fever": "FEVER"}
METHOD_NAMES = {"eren": "EREN", "eren_score": "EREN+score", "one_step": "one-step MRC",
                "unedited": "unedited reader"}
# EREN paper, Table 3 (ES, BP, EQ of EREN with FLAN-T5-XL); other rows have no reference here.
PAPER = {("cfh", "eren"): (96.9, 96.8, 96.9), ("fever", "eren"): (81.5, 79.6, 80.5)}
NA = "n/a"
EREN = "eren"  # the method the difference rows compare the others with
COLUMNS = ["reader", "dataset", "method", "ES", "BP", "EQ", "paper_ES", "paper_BP", "paper_EQ", "n_notes",
           "n_records_evaluated", "n_in_scope", "n_out_of_scope", "fallback_in_scope", "fallback_out_of_scope",
           "own_note_retrieved_in_scope", "encoder", "index", "k"]
CSV_COLUMNS = with_bounds(COLUMNS, EREN_INTERVAL_COLUMNS)
SUMMARY_KEYS = {"ES": "ES", "BP": "BP", "EQ": "EQ", "fallback_in_scope": "fallback_rate_in_scope",
                "fallback_out_of_scope": "fallback_rate_out_of_scope",
                "own_note_retrieved_in_scope": "own_note_retrieved_in_scope"}  # column -> summary key


def _na(row: dict, no_bp: bool) -> dict:
    """BP and EQ (and their bounds) "n/a" when nothing out of scope was asked: undefined, not 0."""
    return {**row, **{f"{c}{b}": NA for c in ("BP", "EQ") for b in ("", "_lo", "_hi")}} if no_bp else row


def rows_from(summary: dict, items: list[dict]) -> list[dict]:
    """One row per method of an eren_eval summary, in the summary's method order, then EREN − each other
    method; `items`: the summary's <dataset>.items.jsonl records."""
    rows, tables = [], {}
    dataset = DATASET_NAMES.get(summary["dataset"], summary["dataset"])
    for method, s in summary["methods"].items():
        tables[method] = eren_case_sums(items, method)
        intervals = bootstrap_interval(tables[method], derived=EQ)
        check_against(intervals, {c: s[k] for c, k in SUMMARY_KEYS.items()}, f"{summary['dataset']} {method}")
        paper = PAPER.get((summary["dataset"], method), (None, None, None))
        row = {"reader": summary["reader"], "dataset": dataset, "method": METHOD_NAMES.get(method, method),
               **interval_cells(intervals, EREN_INTERVAL_COLUMNS),
               "paper_ES": paper[0], "paper_BP": paper[1], "paper_EQ": paper[2], "n_notes": summary["n_notes"],
               "n_records_evaluated": summary["n_records_evaluated"], "n_in_scope": s["n_in_scope"],
               "n_out_of_scope": s["n_out_of_scope"], "encoder": summary["encoder"],
               "index": summary["index"], "k": summary["k"]}
        rows.append(_na(row, s["n_out_of_scope"] == 0))
    if EREN in tables:
        for other, row in zip(summary["methods"], list(rows)):
            if other != EREN:
                diff = paired_difference(tables[EREN], tables[other], derived=EQ)
                rows.append(_na({**row, **interval_cells(diff, EREN_INTERVAL_COLUMNS), "paper_ES": None,
                                 "paper_BP": None, "paper_EQ": None,
                                 "method": f"{METHOD_NAMES[EREN]}{MINUS}{row['method']}"},
                                row["n_out_of_scope"] == 0))
    return rows


def write_tables(rows: list[dict], out_csv: Path, out_md: Path) -> str:
    write_csv(out_csv, rows, CSV_COLUMNS)
    md = markdown(rows, COLUMNS, EREN_INTERVAL_COLUMNS)
    md += ["", "ES = in-scope questions answered with the new fact; BP = out-of-scope outputs unchanged against the "
           "unedited reader; EQ = harmonic mean. Every edit of a data set is in the notebook at once; "
           "n_records_evaluated edit records (seeded subsample, eren.n_records) are asked. "
           f"Cells: value [{LEVEL:.0%} interval], a seeded record-level percentile bootstrap ({N_BOOT} resamples "
           f"of the evaluated records, each with all its questions). Rows \"EREN{MINUS}<method>\": the paired "
           "difference on the same records."]
    with atomic_path(out_md) as tmp:
        tmp.write_text("\n".join(md) + "\n")
    return "\n".join(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("summaries", nargs="+", type=Path)
    ap.add_argument("--out-csv", type=Path, required=True)
    ap.add_argument("--out-md", type=Path, required=True)
    args = ap.parse_args()
    rows = [row for path in args.summaries
            for row in rows_from(read_json(path), read_jsonl(sibling(path, "eren_eval", "items")))]
    print(write_tables(rows, args.out_csv, args.out_md))


if __name__ == "__main__":
    main()
