"""Answer normalisation and matching for EREN's free-text outputs.

EREN's repository ships no scoring script; these rules are ours and are stated exactly here:

- `normalize_answer` (robustedit.answer_text, shared with the generation metrics) is SQuAD's:
  lowercase, drop ASCII punctuation, drop the articles a/an/the
  (as whole words), collapse whitespace.
- `answer_matches(prediction, golds)` is true when some gold answer (or alias) normalises to a
  non-empty string G and the normalised prediction P either equals G or contains G as a whole-word
  span, i.e. the token list of G occurs contiguously in the token list of P. "Paris" therefore
  matches "it is paris france" but not "parisian".
- `fever_label(output)` reads a FEVER reader output as "yes", "no" or "unknown" from its first
  normalised word ("yes"/"true" -> yes, "no"/"false" -> no; anything else, including
  "It's impossible to say", -> unknown).
- `is_unanswerable(output)` is EREN's step-1 test: stripped, lowercased, trailing punctuation removed,
  equal to "unanswerable".
- `is_impossible_to_say(output)` is the FEVER counterpart for the option "It's impossible to say".
"""
from __future__ import annotations

import string
from typing import Iterable

from ..answer_text import contains_span, normalize_answer

UNANSWERABLE = "unanswerable"
IMPOSSIBLE_TO_SAY = "It's impossible to say"
__all__ = ["normalize_answer", "answer_matches", "fever_label", "is_unanswerable", "is_impossible_to_say",
           "same_output", "UNANSWERABLE", "IMPOSSIBLE_TO_SAY"]


def answer_matches(prediction: str, golds: str | Iterable[str]) -> bool:
    """True if a normalised gold equals the normalised prediction or is a whole-word span of it.

    Empty golds (after normalisation, e.g. "The") never match: they would match everything.
    """
    if isinstance(golds, str):
        golds = [golds]
    pred = normalize_answer(prediction).split()
    for gold in golds:
        g = normalize_answer(gold).split()
        if g and contains_span(pred, g):
            return True
    return False


def fever_label(output: str) -> str:
    """Map a FEVER reader output to "yes", "no" or "unknown" by its first normalised word."""
    words = normalize_answer(output).split()
    if not words:
        return "unknown"
    if words[0] in ("yes", "true"):
        return "yes"
    if words[0] in ("no", "false"):
        return "no"
    return "unknown"


def _bare(output: str) -> str:
    """Stripped, lowercased, trailing punctuation (and whitespace between it) removed."""
    return output.strip().lower().rstrip(string.punctuation + string.whitespace)


def is_unanswerable(output: str) -> bool:
    """EREN's step-1 test for the MRC prompt (exact word, not a substring)."""
    return _bare(output) == UNANSWERABLE


def is_impossible_to_say(output: str) -> bool:
    """The FEVER option that plays the role of "unanswerable" (apostrophe style ignored)."""
    return _bare(output).replace("’", "'") == IMPOSSIBLE_TO_SAY.lower()


def same_output(a: str, b: str) -> bool:
    """Behaviour preservation compares normalised outputs."""
    return normalize_answer(a) == normalize_answer(b)
