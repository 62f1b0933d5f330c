"""The gate-threshold ablation (REP paper Figure 7): ROME+REP metrics against rep.gate_threshold, with 95% intervals.

    python scripts/gate_threshold.py --out-csv results/tables/gate_threshold.csv \
        --out-png results/figures/gate_threshold.png --thresholds 0.5 0.9 --summaries a.json b.json \
        --rome-summaries results/<model>/eval_rome/<hash>/valid.summary.json
One threshold per summary (eval_rep summaries of the same model and split differ only in the threshold).
Writes one CSV row per (model, method, split, threshold), each metric column as `<col>`, `<col>_lo`,
`<col>_hi` (a seeded case-level percentile bootstrap on the summary's sibling <split>.results.jsonl), and,
for every --rome-summaries summary of the same model and split, a row "<method> − ROME" per threshold: the
paired difference to ROME on the same cases. One plot panel per (model, method, split), intervals as bars.
Column `selected` marks, per (model, method, split), the threshold that the rule declared for REP's settings
(robustedit.pipeline.rep_search.select, applied to the "− ROME" rows) picks; only a `valid` pick may go into
conf/rep/default.yaml (README "Choosing REP's setting").
"""
from __future__ import annotations

import argparse
from pathlib import Path

from robustedit.analysis.tables import write_csv
from robustedit.analysis.plots import save_png
from robustedit.io import read_json, read_jsonl
from robustedit.pipeline.rep_search import select
from robustedit.pipeline.tables import (
    AGGREGATION, METRIC, MINUS, difference_row, sibling, table1_entries, with_bounds,
)

METRIC_COLUMNS = ["success", "locality", "rephrase_id", "shuffle_id", "long_id", "rephrase_ood", "shuffle_ood",
                  "long_ood"]
KEYS = ["model", "method", "split", "threshold", "n_cases"]
COLUMNS = KEYS + with_bounds(METRIC_COLUMNS, METRIC_COLUMNS) + ["selected", "metric", "aggregation"]


def _post_row(summary: dict, per_case: list[dict], metric: str, aggregation: str) -> dict:
    """The edited model's row of a summary (its "_table": per-case sums, for paired differences)."""
    return table1_entries(dict(summary, include_unedited=False), per_case, metric, aggregation)[0]


def gate_rows(entries: list[tuple[dict, list[dict]]], thresholds: list[float], metric: str, aggregation: str,
              rome: list[tuple[dict, list[dict]]] = ()) -> list[dict]:
    """entries / rome: (summary, per-case results) pairs; rows sorted by (model, method, split, threshold)."""
    if len(entries) != len(thresholds):
        raise ValueError(f"{len(entries)} summaries but {len(thresholds)} thresholds")
    base = {}
    for summary, per_case in rome:
        row = _post_row(summary, per_case, metric, aggregation)
        base[(row["model"], row["split"])] = row
    rows = {}
    for (summary, per_case), t in zip(entries, thresholds):
        row = dict(_post_row(summary, per_case, metric, aggregation), threshold=float(t))
        found = [row]
        if (row["model"], row["split"]) in base:
            found.append(difference_row(row, base[(row["model"], row["split"])], aggregation, METRIC_COLUMNS))
        for r in found:
            if r is not None:
                r = {k: v for k, v in r.items() if k != "_table"}
                rows[(r["model"], r["method"], r["split"], r["threshold"])] = r  # repeated threshold: one row
    return mark_selected([rows[k] for k in sorted(rows)])


def mark_selected(rows: list[dict]) -> list[dict]:
    """Set `selected` on the rows of the threshold that rep_search.select picks from each group's differences
    to ROME (rows sorted by threshold, so a tie goes to the lower one); False everywhere without ROME rows."""
    for row in rows:
        row["selected"] = False
    for model, method, split in {(r["model"], r["method"], r["split"]) for r in rows if MINUS in r["method"]}:
        diffs = [r for r in rows if (r["model"], r["method"], r["split"]) == (model, method, split)]
        best = select(diffs)
        if best is not None:
            chosen = diffs[best]["threshold"]
            base = method.split(MINUS)[0].strip()
            for r in rows:
                if (r["model"], r["split"], r["threshold"]) == (model, split, chosen) and r["method"] in (base, method):
                    r["selected"] = True
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    rows = [r for r in rows if MINUS not in r["method"]]  # the scores; the differences to ROME are in the CSV
    panels = sorted({(r["model"], r["method"], r["split"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (model, method, split) in zip(axes[0], panels):
        sel = [r for r in rows if (r["model"], r["method"], r["split"]) == (model, method, split)]
        for col in METRIC_COLUMNS:
            pts = [(r["threshold"], r[col], r[col] - r[f"{col}_lo"], r[f"{col}_hi"] - r[col])
                   for r in sel if r[col] is not None]
            if pts:
                x, y, below, above = zip(*pts)
                ax.errorbar(x, y, yerr=[below, above], marker="o", capsize=2, label=col)
        ax.set(title=f"{method}, {model}, {split}", xlabel="gate threshold", ylabel="%", ylim=(0, 100))
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    save_png(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--summaries", nargs="+", type=Path, required=True)
    ap.add_argument("--thresholds", nargs="+", type=float, required=True)
    ap.add_argument("--out-csv", type=Path, required=True)
    ap.add_argument("--out-png", type=Path, required=True)
    ap.add_argument("--metric", default=METRIC)
    ap.add_argument("--aggregation", default=AGGREGATION)
    ap.add_argument("--rome-summaries", nargs="*", type=Path, default=[],
                    help="eval_rome summaries of the same models and splits: the paired differences' baseline")
    args = ap.parse_args()
    load = lambda paths: [(read_json(p), read_jsonl(sibling(p))) for p in paths]  # noqa: E731
    rows = gate_rows(load(args.summaries), args.thresholds, args.metric, args.aggregation, load(args.rome_summaries))
    write_csv(args.out_csv, rows, COLUMNS)
    plot(rows, args.out_png)
    print(args.out_csv.read_text())
    for r in rows:
        if r["selected"] and MINUS in r["method"]:
            print(f"declared rule: {r['method']} on {r['model']}/{r['split']} selects threshold {r['threshold']}")


if __name__ == "__main__":
    main()
