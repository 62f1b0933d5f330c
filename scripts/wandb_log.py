"""Log every run of the pipeline to Weights & Biases (offline by default; see robustedit.tracking).

    python scripts/wandb_log.py --run "model=smollm2-135m" --stages eval_rome eval_rep \
        --tables results/tables/table1.csv --figures results/figures/*.png --out results/wandb/wandb_log.json
Per run (--run: its Hydra overrides, quoted as one string): the composed config, the Table 1 metrics of
its evaluation stages on eval.report_split (table1/<method>/<column>), every table as a wandb.Table and
every figure as an image. Writes a marker JSON listing each run's mode and folder.
"""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from robustedit.analysis.tables import read_csv
from robustedit.io import read_json, write_json
from robustedit.tracking import start_run
from robustedit.pipeline.config import compose
from robustedit.pipeline.stage import stage_file
from robustedit.pipeline.tables import AGGREGATION, GENERATION_METRIC, GROUP_OF, METRIC, rows_from


# wandb key prefix of each protocol's Table 1 metric (robustedit.pipeline.tables)
PROTOCOL_KEYS = {"table1": METRIC, "table1_generation": GENERATION_METRIC}


def table1_metrics(cfg: dict, stages: list[str]) -> dict[str, float]:
    """<prefix>/<method>/<column> for the run's evaluation summaries (empty cells skipped), as Table 1 shows them:
    table1/ teacher-forced, table1_generation/ the generation protocol, where a summary has that protocol."""
    ev, out = cfg["eval"], {}
    for stage in stages:
        summary = read_json(stage_file(cfg, stage, "summary", ev["report_split"]))
        for prefix, metric in PROTOCOL_KEYS.items():
            if f"post/{metric}/{AGGREGATION}" not in summary.get("summaries", {}):
                continue  # not run under this protocol (eval.generation, eren.suite.teacher_forced) or skipped
            for row in rows_from(summary, metric, AGGREGATION):
                out.update({f"{prefix}/{row['method']}/{col}": float(row[col]) for col in GROUP_OF if row[col] != ""})
    return out


def log_run(overrides: list[str], stages: list[str], tables: list[Path], figures: list[Path],
            group: str = "pipeline") -> dict:
    cfg = compose(overrides)
    name = cfg["model"]["name"]
    with start_run(cfg, name=name, group=group, job_type=group) as tracker:
        tracker.log_metrics(table1_metrics(cfg, stages))
        for path in tables:
            tracker.log_table(f"tables/{path.stem}", read_csv(path))
        for path in figures:
            tracker.log_image(f"figures/{path.stem}", path)
    return {"name": name, "overrides": overrides, "mode": cfg["tracking"]["mode"],
            "dir": str(tracker.run_dir) if tracker.run_dir else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", required=True, help="one run's Hydra overrides, as one string")
    ap.add_argument("--stages", nargs="*", default=[],
                    help="evaluation stages whose summaries are Table 1 rows (none: the tables and figures alone)")
    ap.add_argument("--group", default="pipeline", help="the wandb group and job type (the sequential target's: "
                                                        "sequential)")
    ap.add_argument("--tables", nargs="*", type=Path, default=[])
    ap.add_argument("--figures", nargs="*", type=Path, default=[])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    runs = [log_run(shlex.split(r), args.stages, args.tables, args.figures, args.group) for r in args.run]
    write_json(args.out, {"runs": runs, "tables": [str(p) for p in args.tables],
                          "figures": [str(p) for p in args.figures]})
    for r in runs:
        print(f"[wandb_log] {r['name']}: {r['mode']} -> {r['dir']}", flush=True)


if __name__ == "__main__":
    main()
