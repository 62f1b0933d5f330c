"""Stage `sequential_eval`: the sequential protocol on a split (robustedit.pipeline.sequential).

    python scripts/sequential_eval.py job.split=test
Writes <stage dir>/<split>.sequential.results.jsonl (per method, checkpoint N and edited case: its items'
metrics with all N edits in the weights, and the unedited model's under "pre") and
<split>.sequential.summary.json (every metric x aggregation per method and N, the perplexity probe's losses,
the edit order, the seconds per sequence). One ROME sequence scores rome and rep (ROME+REP: the rep stage's
adaptors composed); eren's notebook grows instead of the weights. A killed run resumes at the first sequence
it had not finished (<split>.sequential.partial/; job.fresh=true starts afresh).
"""
from __future__ import annotations

from pathlib import Path

from robustedit.pipeline.sequential import sequential_split
from robustedit.pipeline.stage import stage_app


STAMP_FILES = (__file__,)  # the script a resume piece's code version covers (besides the library)


@stage_app("sequential_eval")
def main(cfg: dict, out_dir: Path) -> None:
    sequential_split(cfg, out_dir, STAMP_FILES)


if __name__ == "__main__":
    main()
