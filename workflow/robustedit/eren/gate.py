"""EREN+score (method "eren_score"): EREN whose relevance decision also uses the retrieval score.

The paper's EREN lets the reader decide whether the retrieved notes are relevant (it says "unanswerable").
A small reader (SmolLM2-135M) never says so, and then every query is answered from whatever notes come
back. This variant answers closed-book (step 2) when the top note's retrieval score is below a threshold,
and otherwise exactly as EREN (step 1, step 2 when the reader abstains). It is a separate method, reported
beside EREN, never instead of it.

The threshold is chosen on calibration queries that the evaluation does not score: the queries of records
(eren_eval) or cases (eren_suite) held out of the scored subsample (`held_out`), searched in the same
notebook. Rule (`choose_threshold`): a calibration query is relevant when its own note is the top-1 hit
(in-scope queries only; an out-of-scope query has no relevant note); t maximises the balanced accuracy of
"top-1 score >= t" against that label. Candidates are the midpoints between consecutive distinct scores and
the two ends (min - 1: every query read from its notes; max + 1: none); ties go to the lowest t, the fewest
closed-book answers, i.e. the closest to EREN. Retrieval only: calibration runs no reader.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import ConfigError
from .data import subsample
from .editor import SCORE_GATED as METHOD
from .notebook import Notebook

LABEL = "EREN+score"  # the method's name in tables (the paper's method is "EREN")
END_MARGIN = 1.0  # the end candidates lie this far outside the scores (any margin > 0 acts the same on them)


class CalibrationError(ConfigError):
    """The calibration queries cannot choose a threshold (none, or all of one relevance class)."""


def balanced_accuracy(scores: Sequence[float], labels: Sequence[bool], threshold: float) -> float:
    """Mean of the true-positive and true-negative rates of `score >= threshold` as a relevance prediction."""
    s, y = _check(scores, labels)
    pred = s >= threshold
    return 0.5 * (float(np.mean(pred[y])) + float(np.mean(~pred[~y])))


def _check(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    if s.ndim != 1 or s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and labels {y.shape} must be 1-D and of the same length")
    if not np.isfinite(s).all():
        raise ValueError("retrieval scores contain NaN or inf")
    if y.all() or not y.any():
        raise CalibrationError(f"the score threshold needs relevant and irrelevant calibration queries; got "
                               f"{int(y.sum())} relevant of {len(y)} (raise eren.score_gate.n_calibration)")
    return s, y


def choose_threshold(scores: Sequence[float], labels: Sequence[bool]) -> tuple[float, float]:
    """(threshold, its balanced accuracy) by the module's rule: best midpoint or end, ties to the lowest."""
    s, y = _check(scores, labels)
    u = np.unique(s)  # sorted distinct scores
    candidates = np.concatenate([[u[0] - END_MARGIN], (u[:-1] + u[1:]) / 2, [u[-1] + END_MARGIN]])
    pred = s[None, :] >= candidates[:, None]  # [candidate, query]
    bacc = 0.5 * (pred[:, y].mean(axis=1) + (~pred[:, ~y]).mean(axis=1))
    best = int(np.argmax(bacc))  # the first (lowest) candidate among equals
    return float(candidates[best]), float(bacc[best])


def top1_relevance(items: Sequence[dict], notebook: Notebook) -> tuple[list[float], list[bool]]:
    """Per item with a retrieved note: (top-1 score, own note is top-1 and the item is in scope)."""
    hits = notebook.search([it["input"] for it in items], 1)
    scores, labels = [], []
    for it, h in zip(items, hits):
        if not h:
            continue
        own = it.get("own_note")
        own = own if isinstance(own, list) else [own]
        scores.append(h[0].score)
        labels.append(bool(it["in_scope"]) and h[0].note in own)
    return scores, labels


def calibrate(items: Sequence[dict], notebook: Notebook) -> dict:
    """The threshold chosen on calibration items (their inputs, in_scope and own_note) and how it was found."""
    if not items:
        raise CalibrationError(f"{METHOD} needs calibration queries: no record or case is left out of the scored "
                          "subsample (lower eren.n_records / eren.suite.n_cases)")
    scores, labels = top1_relevance(items, notebook)
    threshold, bacc = choose_threshold(scores, labels)
    return {"threshold": threshold, "balanced_accuracy": bacc, "n_queries": len(scores), "n_relevant": sum(labels),
            "rule": "max balanced accuracy of top-1 score >= t vs own note top-1 (in scope); ties: lowest t"}


def calibrate_or_skip(items: Sequence[dict], notebook: Notebook) -> dict:
    """calibrate(items, notebook), or {"skipped": reason} when the items cannot choose a threshold (none held
    out: every record or case is scored; or all of one relevance class): the stage then reports EREN+score
    as skipped rather than with a threshold chosen on nothing."""
    try:
        return calibrate(items, notebook)
    except CalibrationError as e:
        return {"skipped": str(e)}


def held_out(records: Sequence[dict], scored: Sequence[dict], n: int, seed: int, purpose: str) -> list[dict]:
    """A seeded subsample of n of the records that are not in `scored` (by identity), in file order."""
    scored_ids = {id(r) for r in scored}
    return subsample([r for r in records if id(r) not in scored_ids], n, seed, purpose)
