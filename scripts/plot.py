"""Gather the analysis stages' CSVs of every run into results/figures/ (a PNG and the CSV behind it).

    python scripts/plot.py keys --similarity a.csv b.csv --pca a.csv b.csv --runs r1 r2 \
        --out-png key_similarity.png --out-csv key_similarity.csv --out-pca-png key_pca.png --out-pca-csv key_pca.csv
    python scripts/plot.py unrelated --top ... --hist ... [--similarity ...] --runs ... \
--out-png --out-csv --out-hist-csv
    python scripts/plot.py values --values ... --runs ... --out-png --out-csv
One input file per run (same order as --runs); the run label becomes the CSVs' first column.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from robustedit.analysis import plots
from robustedit.analysis.tables import concat, write_csv


def gather(paths: list[Path], runs: list[str]) -> list[dict]:
    if len(paths) != len(runs):
        raise SystemExit(f"{len(paths)} files but {len(runs)} run labels")
    return concat(paths, [{"run": r} for r in runs])


def write_rows(rows: list[dict], path: Path) -> None:
    columns = list(rows[0]) if rows else ["run"]
    write_csv(path, rows, columns)


def keys(args) -> None:
    sim, pca = gather(args.similarity, args.runs), gather(args.pca, args.runs)
    write_rows(sim, args.out_csv)
    plots.plot_key_similarity(sim, args.out_png)
    write_rows(pca, args.out_pca_csv)
    plots.plot_key_pca(pca, args.out_pca_png)


def unrelated(args) -> None:
    top, hist = gather(args.top, args.runs), gather(args.hist, args.runs)
    sim = gather(args.similarity, args.runs) if args.similarity else []
    write_rows(top, args.out_csv)
    write_rows(hist, args.out_hist_csv)
    plots.plot_unrelated(top, hist, sim, args.out_png)


def values(args) -> None:
    rows = gather(args.values, args.runs)
    write_rows(rows, args.out_csv)
    plots.plot_value_norms(rows, args.out_png)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="figure", required=True)
    files = {"nargs": "+", "type": Path}
    k = sub.add_parser("keys")
    k.add_argument("--similarity", required=True, **files)
    k.add_argument("--pca", required=True, **files)
    for name in ("out-png", "out-csv", "out-pca-png", "out-pca-csv"):
        k.add_argument(f"--{name}", type=Path, required=True)
    u = sub.add_parser("unrelated")
    u.add_argument("--top", required=True, **files)
    u.add_argument("--hist", required=True, **files)
    u.add_argument("--similarity", **files)  # the runs' fig_keys rows, drawn for comparison
    for name in ("out-png", "out-csv", "out-hist-csv"):
        u.add_argument(f"--{name}", type=Path, required=True)
    v = sub.add_parser("values")
    v.add_argument("--values", required=True, **files)
    for name in ("out-png", "out-csv"):
        v.add_argument(f"--{name}", type=Path, required=True)
    for p in (k, u, v):
        p.add_argument("--runs", nargs="+", required=True)
    return ap


def main() -> None:
    args = parser().parse_args()
    {"keys": keys, "unrelated": unrelated, "values": values}[args.figure](args)
    print(f"[plot] {args.figure}: wrote {args.out_png}")


if __name__ == "__main__":
    main()
