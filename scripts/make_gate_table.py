"""The gate-threshold ablation (REP paper Figure 7): ROME+REP metrics against rep.gate_threshold.

    python scripts/make_gate_table.py --out-csv results/tables/gate_threshold.csv \
        --out-png results/figures/gate_threshold.png --thresholds 0.5 0.9 --summaries a.json b.json
One threshold per summary (eval_rep summaries of the same model and split differ only in the threshold).
Writes one CSV row per (model, method, split, threshold) and one plot panel per (model, method, split).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from robustedit.io import atomic_path, read_json
from robustedit.pipeline.tables import AGGREGATION, METRIC

METRIC_COLUMNS = ["success", "locality", "rephrase_id", "shuffle_id", "long_id", "rephrase_ood", "shuffle_ood",
                  "long_ood"]
COLUMNS = ["model", "method", "split", "threshold", "n_cases"] + METRIC_COLUMNS + ["metric", "aggregation"]


def gate_rows(summaries: list[dict], thresholds: list[float], metric: str, aggregation: str) -> list[dict]:
    if len(summaries) != len(thresholds):
        raise ValueError(f"{len(summaries)} summaries but {len(thresholds)} thresholds")
    rows = {}
    for summary, t in zip(summaries, thresholds):
        s = summary["summaries"][f"post/{metric}/{aggregation}"]
        row = {"model": summary["model"], "method": summary["method"], "split": summary["split"],
               "threshold": float(t), "n_cases": s["n_cases"],
               "metric": f"{s['metric']}+{s['locality_metric']}", "aggregation": aggregation}
        row.update({c: s["columns"].get(c) for c in METRIC_COLUMNS})
        rows[(row["model"], row["method"], row["split"], row["threshold"])] = row  # repeated threshold: one row
    return [rows[k] for k in sorted(rows)]


def write_csv(rows: list[dict], path: Path) -> None:
    fmt = lambda v: "" if v is None else (f"{v:.1f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = [",".join(COLUMNS)] + [",".join(fmt(r[c]) if c != "threshold" else f"{r[c]:g}" for c in COLUMNS)
                                   for r in rows]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    panels = sorted({(r["model"], r["method"], r["split"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (model, method, split) in zip(axes[0], panels):
        sel = [r for r in rows if (r["model"], r["method"], r["split"]) == (model, method, split)]
        for col in METRIC_COLUMNS:
            pts = [(r["threshold"], r[col]) for r in sel if r[col] is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=col)
        ax.set(title=f"{method}, {model}, {split}", xlabel="gate threshold", ylabel="%", ylim=(0, 100))
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--summaries", nargs="+", type=Path, required=True)
    ap.add_argument("--thresholds", nargs="+", type=float, required=True)
    ap.add_argument("--out-csv", type=Path, required=True)
    ap.add_argument("--out-png", type=Path, required=True)
    ap.add_argument("--metric", default=METRIC)
    ap.add_argument("--aggregation", default=AGGREGATION)
    args = ap.parse_args()
    rows = gate_rows([read_json(p) for p in args.summaries], args.thresholds, args.metric, args.aggregation)
    write_csv(rows, args.out_csv)
    plot(rows, args.out_png)
    print(args.out_csv.read_text())


if __name__ == "__main__":
    main()
