"""REP's setting search (rep.search, target rep_search): per setting its scores, its paired difference to
ROME on the same cases, training diagnostics, and the declared rule that picks one setting (valid only).

The rule, fixed before any result is seen: a setting is eligible when its Success and Locality each stay
within MAX_DROP points of ROME (paired point estimates); among eligible settings the one with the largest
mean paired gain over ROBUSTNESS_COLUMNS is selected (ties: the first in grid order).
"""
from __future__ import annotations

from statistics import mean
from typing import Sequence

MAX_DROP = 5.0  # points of Success or Locality a setting may lose to ROME (the "within 5 points")
GUARDED_COLUMNS = ("success", "locality")
ROBUSTNESS_COLUMNS = ("rephrase_id", "shuffle_id", "long_id", "rephrase_ood", "shuffle_ood", "long_ood",
                      "paraphrase", "patil")
GAP_COLUMNS = ("rephrase_id", "shuffle_id")  # "gap closed": (REP - ROME) / (ROME's success - ROME)


def selection_score(diff: dict) -> float | None:
    """Mean paired gain over the robustness columns present; None when a guarded column drops too far."""
    if any(diff.get(c) is None or diff[c] < -MAX_DROP for c in GUARDED_COLUMNS):
        return None
    gains = [diff[c] for c in ROBUSTNESS_COLUMNS if diff.get(c) is not None]
    return mean(gains) if gains else None


def select(diffs: Sequence[dict]) -> int | None:
    """Index of the selected setting (see module docstring); None when no setting is eligible."""
    scores = [selection_score(d) for d in diffs]
    best = None
    for i, s in enumerate(scores):
        if s is not None and (best is None or s > scores[best]):
            best = i
    return best


def gap_closed(rep: dict, rome: dict, column: str) -> float | None:
    """Fraction of ROME's gap between Success and `column` that the setting closes (1 = up to Success)."""
    gap = None if rome.get(column) is None or rome.get("success") is None else rome["success"] - rome[column]
    if gap is None or gap <= 0 or rep.get(column) is None:
        return None
    return (rep[column] - rome[column]) / gap


def training_diagnostics(logs: Sequence[dict]) -> dict:
    """Means over cases of the final step's losses and the trained gate's open fractions (rep.jsonl)."""
    def final(key):
        vals = [log["steps"][-1][key] for log in logs if log.get("steps") and key in log["steps"][-1]]
        return mean(vals) if vals else None

    def gate(which):
        vals = [log["gate"][which]["frac_open"] for log in logs if (log.get("gate") or {}).get(which)]
        return 100.0 * mean(vals) if vals else None

    return {"final_agg_loss": final("agg"), "final_consistency": final("consistency"),
            "gate_open_positives": gate("positives"), "gate_open_negatives": gate("negatives"),
            "steps": max((len(log.get("steps", [])) for log in logs), default=0)}
