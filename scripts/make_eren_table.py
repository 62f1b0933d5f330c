"""EREN's Table 3: ES / BP / EQ per (data set, method) from eren_eval summaries, in percent.

    python scripts/make_eren_table.py --out-csv results/tables/eren.csv --out-md results/tables/eren.md \
        results/<model>/eren_eval/<hash>/cfh.summary.json results/<model>/eren_eval/<hash>/fever.summary.json
One row per (reader, data set, method) and evaluated subsample, for every data set whose summary is given
(eren.data's names); the paper's EREN numbers (FLAN-T5-XL reader, Contriever retriever) are given beside the
EREN rows of cfh and fever only. A data set without out-of-scope questions has no BP (nor EQ): "n/a".
"""
from __future__ import annotations

import argparse
from pathlib import Path

from robustedit.io import atomic_path, read_json

DATASET_NAMES = {"cfh": "CounterFact-Hard (QA)", "fever": "FEVER"}
METHOD_NAMES = {"eren": "EREN", "one_step": "one-step MRC", "unedited": "unedited reader"}
# EREN paper, Table 3 (ES, BP, EQ of EREN with FLAN-T5-XL); other rows have no reference here.
PAPER = {("cfh", "eren"): (96.9, 96.8, 96.9), ("fever", "eren"): (81.5, 79.6, 80.5)}
NA = "n/a"
COLUMNS = ["reader", "dataset", "method", "ES", "BP", "EQ", "paper_ES", "paper_BP", "paper_EQ", "n_notes",
           "n_records_evaluated", "n_in_scope", "n_out_of_scope", "fallback_in_scope", "fallback_out_of_scope",
           "own_note_retrieved_in_scope", "encoder", "index", "k"]


def fmt(value) -> str:
    if value is None:
        return ""
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def rows_from(summary: dict) -> list[dict]:
    """One row per method of an eren_eval summary, in the summary's method order."""
    rows = []
    for method, s in summary["methods"].items():
        paper = PAPER.get((summary["dataset"], method), (None, None, None))
        no_bp = s["n_out_of_scope"] == 0  # nothing to preserve was asked: BP (and EQ) undefined, not 0
        rows.append({"reader": summary["reader"], "dataset": DATASET_NAMES.get(summary["dataset"], summary["dataset"]),
                     "method": METHOD_NAMES.get(method, method), "ES": s["ES"],
                     "BP": NA if no_bp else s["BP"], "EQ": NA if no_bp else s["EQ"],
                     "paper_ES": paper[0], "paper_BP": paper[1], "paper_EQ": paper[2], "n_notes": summary["n_notes"],
                     "n_records_evaluated": summary["n_records_evaluated"], "n_in_scope": s["n_in_scope"],
                     "n_out_of_scope": s["n_out_of_scope"], "fallback_in_scope": s["fallback_rate_in_scope"],
                     "fallback_out_of_scope": s["fallback_rate_out_of_scope"],
                     "own_note_retrieved_in_scope": s["own_note_retrieved_in_scope"], "encoder": summary["encoder"],
                     "index": summary["index"], "k": summary["k"]})
    return rows


def write_tables(rows: list[dict], out_csv: Path, out_md: Path) -> str:
    with atomic_path(out_csv) as tmp:
        tmp.write_text("\n".join([",".join(COLUMNS)] + [",".join(fmt(r[c]) for c in COLUMNS) for r in rows]) + "\n")
    md = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    md += ["| " + " | ".join(fmt(r[c]) for c in COLUMNS) + " |" for r in rows]
    md += ["", "ES = in-scope questions answered with the new fact; BP = out-of-scope outputs unchanged against the "
           "unedited reader; EQ = harmonic mean. Every edit of a data set is in the notebook at once; "
           "n_records_evaluated edit records (seeded subsample, eren.n_records) are asked."]
    with atomic_path(out_md) as tmp:
        tmp.write_text("\n".join(md) + "\n")
    return "\n".join(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("summaries", nargs="+", type=Path)
    ap.add_argument("--out-csv", type=Path, required=True)
    ap.add_argument("--out-md", type=Path, required=True)
    args = ap.parse_args()
    rows = [row for path in args.summaries for row in rows_from(read_json(path))]
    print(write_tables(rows, args.out_csv, args.out_md))


if __name__ == "__main__":
    main()
