"""Table 1's rows (REP paper): one row per (model, method) of an evaluation summary, in percent; shared by
scripts/make_table1.py, scripts/make_gate_table.py (METRIC, AGGREGATION) and scripts/wandb_log.py."""
from __future__ import annotations

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
