"""The sequential protocol's figure: one panel per Table 1 column and one for the perplexity probe, the score
against the number of edits N (log axis), one line per (model, method) with its 95% interval as a band; the
unedited model dashed.

    python scripts/plot_sequential.py --out-png results/figures/sequential.png results/tables/sequential.csv
Reads the table scripts/sequential_table.py wrote (its paired-difference rows are left out).
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

from robustedit.analysis.plots import save_png
from robustedit.pipeline.sequential_tables import PERPLEXITY, SEQUENTIAL_COLUMNS
from robustedit.pipeline.tables import MINUS, UNEDITED

N_COLS = 5  # panels per row


def value(row: dict, key: str) -> float | None:
    return float(row[key]) if row.get(key) not in (None, "") else None


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    columns = [c for c in SEQUENTIAL_COLUMNS if any(value(r, c) is not None for r in rows)]
    n_rows = -(-len(columns) // N_COLS)
    fig, axes = plt.subplots(n_rows, N_COLS, figsize=(3.2 * N_COLS, 2.8 * n_rows), squeeze=False)
    lines = list(dict.fromkeys((r["model"], r["method"]) for r in rows if MINUS not in r["method"]))
    for ax, col in zip(axes.flat, columns):
        for model, method in lines:
            sel = sorted((r for r in rows if (r["model"], r["method"]) == (model, method)
                          and value(r, col) is not None), key=lambda r: int(r["n_edits"]))
            if not sel:
                continue
            n = [int(r["n_edits"]) for r in sel]
            label = method if len({m for m, _ in lines}) == 1 else f"{model} {method}"
            style = "--" if method == UNEDITED else "-"
            (line,) = ax.plot(n, [value(r, col) for r in sel], style, marker="o", ms=3, label=label)
            lo, hi = [value(r, f"{col}_lo") for r in sel], [value(r, f"{col}_hi") for r in sel]
            if None not in lo + hi:
                ax.fill_between(n, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
        ax.set_xscale("log")
        ns = sorted({int(r["n_edits"]) for r in rows})
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.minorticks_off()
        ax.set_title(col)
        ax.set_xlabel("edits N")
        if col != PERPLEXITY:  # percentages; perplexity keeps its own scale
            ax.set_ylim(-2, 102)
    for ax in list(axes.flat)[len(columns):]:
        ax.axis("off")
    axes.flat[0].set_ylabel("% (95% interval)")  # the perplexity panel: exp(mean NLL per token)
    axes.flat[0].legend(fontsize=7)
    save_png(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("table", type=Path)
    ap.add_argument("--out-png", type=Path, required=True)
    args = ap.parse_args()
    with open(args.table, newline="") as f:
        rows = list(csv.DictReader(f))
    plot(rows, args.out_png)
    print(f"wrote {args.out_png}")


if __name__ == "__main__":
    main()
