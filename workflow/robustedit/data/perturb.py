"""Robustness perturbations of a case: shuffled subject tokens, long unrelated contexts, ID/OOD halves."""
from __future__ import annotations

import math
import random
import re

SHUFFLE_JOINS = ("decode", "raw")


def shuffled_subjects(tok, subject: str, n: int, rng: random.Random, join: str = "decode",
                      max_tries: int = 1000) -> list[str]:
    """Up to `n` distinct orderings of the subject's tokens under `tok`, identity excluded.

    join="decode" turns the permuted pieces back into text with the tokenizer (what a user would type);
    join="raw" concatenates the raw pieces as REP's code does (literal '▁'/'Ġ' characters).
    One-token subjects give []. Deterministic for a given `rng` state.
    """
    if join not in SHUFFLE_JOINS:
        raise ValueError(f"unknown shuffle join {join!r}; use one of {SHUFFLE_JOINS}")
    pieces = tok.tokenize(subject)
    if len(pieces) < 2:
        return []
    # Never ask for more orderings than exist (n! - 1 non-identity ones).
    want = min(n, math.factorial(len(pieces)) - 1)
    out: list[str] = []
    seen = {tuple(pieces)}
    for _ in range(max_tries):
        if len(out) >= want:
            break
        perm = pieces[:]
        rng.shuffle(perm)
        if tuple(perm) in seen:
            continue
        seen.add(tuple(perm))
        text = "".join(perm) if join == "raw" else tok.convert_tokens_to_string(perm).strip()
        if text and text != subject and text not in out:
            out.append(text)
    return out


def wikitext_words(texts: list[str]) -> list[str]:
    """Words of WikiText articles, headings (' = Title = ') and empty lines dropped."""
    words: list[str] = []
    for text in texts:
        for line in text.splitlines():
            line = line.strip()
            if not line or (line.startswith("=") and line.endswith("=")):
                continue
            words.extend(line.split())
    return words


def long_context(words: list[str], n_words: int, rng: random.Random) -> str:
    """A random span of `n_words` consecutive words, braces removed (prompts are str.format templates)."""
    if len(words) < n_words:
        raise ValueError(f"need at least {n_words} words of context text, have {len(words)}")
    start = rng.randrange(0, len(words) - n_words + 1)
    text = " ".join(words[start:start + n_words])
    return re.sub(r"\s+", " ", text.replace("{", "").replace("}", "")).strip()


def split_id_ood(items: list[str], id_fraction: float) -> dict[str, list[str]]:
    """In-domain = the first ceil(n * id_fraction) items (REP trains on them); out-of-domain = the rest."""
    k = math.ceil(len(items) * id_fraction)
    return {"id": items[:k], "ood": items[k:]}

