"""Table 1 (REP paper): one row per (model, method) from evaluation summaries, in percent.

    python scripts/make_table1.py --out-csv results/tables/table1.csv --out-md results/tables/table1.md \
        results/<model>/eval_rome/<hash>/test.summary.json ...
Rows: the unedited model (pre-edit scores) and each method. The metric and aggregation are columns:
exact_match@1, micro-averaged (the REP paper's) unless --metric / --aggregation pick another block of the
summaries (each holds every metric x aggregation).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow"))

from robustedit.io import atomic_path, read_json  # noqa: E402

METRIC, AGGREGATION = "exact_match", "micro"  # Table 1's (the REP paper's), also the gate table's and wandb's
COLUMNS = ["model", "method", "n_cases", "success", "locality", "rephrase_id", "shuffle_id", "long_id",
           "rephrase_ood", "shuffle_ood", "long_ood", "paraphrase", "patil", "metric", "aggregation", "split"]
GROUP_OF = {"success": "success", "locality": "locality", "rephrase_id": "rephrase_id",
            "shuffle_id": "shuffle_id", "long_id": "long_id", "rephrase_ood": "rephrase_ood",
            "shuffle_ood": "shuffle_ood", "long_ood": "long_ood", "paraphrase": "paraphrase", "patil": "patil"}


def rows_from(summary: dict, metric: str, aggregation: str) -> list[dict]:
    rows = []
    stages = [("pre", "Unedited")] if summary.get("include_unedited", True) else []
    for stage, method in stages + [("post", summary["method"])]:
        s = summary["summaries"][f"{stage}/{metric}/{aggregation}"]
        row = {"model": summary["model"], "method": method, "n_cases": s["n_cases"],
               "metric": f"{s['metric']}+{s['locality_metric']}", "aggregation": aggregation, "split": summary["split"]}
        for col, group in GROUP_OF.items():
            val = s["columns"].get(group)
            row[col] = "" if val is None else f"{val:.1f}"
        rows.append(row)
    return rows


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
