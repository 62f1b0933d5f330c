"""EREN's scaling: recall@k, search latency and (when run) the reader's ES/BP against notebook size.

    python scripts/eren_scaling_plot.py --out-csv results/tables/eren_scaling.csv \
        --out-png results/figures/eren_scaling.png --out-fig-csv results/figures/eren_scaling.csv \
        results/<model>/eren_scaling/<hash>/scaling.json ...
One CSV row per (scaling stage, index kind, size); the reader columns are filled on the rows of the index
the reader used. The figure has panels for recall@k, single-query latency and, if present, ES/BP.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from robustedit.analysis.plots import save_png
from robustedit.io import atomic_path, read_json

BASE_COLUMNS = ["stage", "encoder", "index", "size", "n_queries"]
TIMING_COLUMNS = ["build_s", "search_ms_per_query_batched", "search_ms_single_query"]
READER_COLUMNS = ["reader_ES", "reader_BP", "reader_EQ", "reader_n_in_scope"]


def recall_columns(scalings: list[dict]) -> list[str]:
    ks = sorted({int(k.split("@")[1]) for s in scalings for r in s["retrieval"] for k in r if k.startswith("recall@")})
    return [f"recall@{k}" for k in ks]


def rows_from(name: str, scaling: dict) -> list[dict]:
    """Retrieval rows of one stage output, joined with its reader rows on (index, size)."""
    reader = {(r["index"], r["size"]): r for r in scaling["reader"].get("rows", [])}
    rows = []
    for r in scaling["retrieval"]:
        rd = reader.get((r["index"], r["size"]), {})
        rows.append({"stage": name, "encoder": scaling["encoder"], **r, "reader_ES": rd.get("ES"),
                     "reader_BP": rd.get("BP"), "reader_EQ": rd.get("EQ"), "reader_n_in_scope": rd.get("n_in_scope")})
    return rows


def write_csv(rows: list[dict], columns: list[str], path: Path) -> None:
    def fmt(v):
        return "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))

    with atomic_path(path) as tmp:
        tmp.write_text("\n".join([",".join(columns)] + [",".join(fmt(r.get(c)) for c in columns) for r in rows]) + "\n")


def plot(rows: list[dict], recall_cols: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    with_reader = any(r["reader_ES"] is not None for r in rows)
    fig, axes = plt.subplots(1, 3 if with_reader else 2, figsize=(15 if with_reader else 10, 3.8), squeeze=False)
    lines = sorted({(r["stage"], r["index"]) for r in rows})
    for stage, index in lines:
        sel = sorted((r for r in rows if (r["stage"], r["index"]) == (stage, index)), key=lambda r: r["size"])
        sizes = [r["size"] for r in sel]
        style = "-" if index == "flat" else "--"
        for col in recall_cols:
            axes[0][0].plot(sizes, [r[col] for r in sel], style, marker="o", label=f"{col} {index}")
        axes[0][1].plot(sizes, [r["search_ms_single_query"] for r in sel], style, marker="o", label=index)
        if with_reader and any(r["reader_ES"] is not None for r in sel):
            for col in ("reader_ES", "reader_BP"):
                pts = [(r["size"], r[col]) for r in sel if r[col] is not None]
                axes[0][2].plot(*zip(*pts), style, marker="o", label=f"{col[7:]} {index}")
    titles = [("recall", "retrieval recall@k"), ("ms per query", "single-query search latency"),
              ("%", "EREN with the reader")]
    for ax, (ylabel, title) in zip(axes[0], titles):
        ax.set(xscale="log", xlabel="notes in the notebook", ylabel=ylabel, title=title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    save_png(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("scalings", nargs="+", type=Path)
    ap.add_argument("--out-csv", type=Path, required=True)
    ap.add_argument("--out-png", type=Path, required=True)
    ap.add_argument("--out-fig-csv", type=Path, required=True)
    args = ap.parse_args()
    scalings = [read_json(p) for p in args.scalings]
    rows = [row for p, s in zip(args.scalings, scalings) for row in rows_from(p.parent.name, s)]
    recall_cols = recall_columns(scalings)
    write_csv(rows, BASE_COLUMNS + recall_cols + TIMING_COLUMNS + READER_COLUMNS, args.out_csv)
    with atomic_path(args.out_fig_csv) as tmp:
        shutil.copyfile(args.out_csv, tmp)  # the figure's data, beside it
    plot(rows, recall_cols, args.out_png)
    skipped = [s["reader"]["skipped"] for s in scalings if "skipped" in s["reader"]]
    print(f"{len(rows)} rows" + (f"; reader: {skipped[0]}" if skipped else ""))


if __name__ == "__main__":
    main()
