"""What the analysis figures (scripts/fig_keys.py, scripts/fig_unrelated.py) share."""
from __future__ import annotations

from robustedit.io import read_jsonl
from robustedit.pipeline.stage import stage_file


def analysed_cases(cfg: dict) -> list[dict]:
    """The first analysis.n_cases cases of the split (all when null)."""
    cases = read_jsonl(stage_file(cfg, "cases", "cases"))
    n = cfg["analysis"]["n_cases"]
    return cases if n is None else cases[:n]
