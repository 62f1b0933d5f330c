"""Answer-text normalisation, shared by EREN's answer matching and the generation metrics.

`normalize_answer` is SQuAD's: lowercase, drop ASCII punctuation, drop the articles a/an/the (as
whole words), collapse whitespace. `contains_span(haystack, needle)` is true when the word list
`needle` occurs contiguously in `haystack`.
"""
from __future__ import annotations

import re
import string

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lowercase, remove punctuation, remove articles, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def contains_span(haystack: list[str], needle: list[str]) -> bool:
    n = len(needle)
    return any(haystack[i:i + n] == needle for i in range(len(haystack) - n + 1))
