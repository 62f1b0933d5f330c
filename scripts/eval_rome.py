"""Stage `eval_rome`: teacher-forced robustness evaluation of each case's ROME edit (batched).

    python scripts/eval_rome.py job.split=test
Writes <stage dir>/<split>.results.jsonl (per case and item: metrics before and after the edit) and
<split>.summary.json (every metric x aggregation, pre- and post-edit, in percent).
"""
from __future__ import annotations

from pathlib import Path

from robustedit.pipeline.evaluate import evaluate_split
from robustedit.pipeline.stage import stage_app, stage_file


@stage_app("eval_rome")
def main(cfg: dict, out_dir: Path) -> None:
    evaluate_split(cfg, stage_file(cfg, "rome", "edits"), out_dir, "ROME")


if __name__ == "__main__":
    main()
