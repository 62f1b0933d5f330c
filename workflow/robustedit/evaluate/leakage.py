"""What a method may train on: a guard that keeps every held-out sequence the evaluation scores out of training.

REP's in-domain columns (success, rephrase_id, shuffle_id, long_id) score, by design, the very subject
variants and passages the adaptor trains on (the paper's "in-domain"). Every other column must be measured on
sequences training never saw: HELD_OUT_GROUPS. The unit of comparison is the token sequence the evaluation
feeds the model (evaluate.encoding.encode_item: prompt ids + target ids; the adaptor acts at every one of
its positions). A training sequence (a pool item, or a gate-negative text read at every position) leaks when
it equals a scored sequence or is a prefix of one (its keys are then that sequence's first keys), or when a
scored sequence is a prefix of it (its keys are all among the training keys).

A shared context is not a leak: the keys of a prompt's words before the subject are the same in every variant
of that prompt (they depend only on the tokens so far), and no variant is seen through them.

REP's gate negatives come from WikiText snippets (pipeline.wikitext.snippets), never from a case's
neighbourhood prompts: those are exactly the prompts the Locality column scores. rep.fit_rep_adaptor takes
the guard as a required argument and refuses a leaking negative.
"""
from __future__ import annotations

from typing import Iterable, Sequence

from .encoding import encode_item
from .items import GROUPS, build_items

TRAINED_GROUPS = ("success", "rephrase_id", "shuffle_id", "long_id")  # in-domain: the pool's own variants
HELD_OUT_GROUPS = tuple(g for g in GROUPS if g not in TRAINED_GROUPS)


def held_out_sequences(tok, case: dict) -> list[tuple[int, ...]]:
    """Token sequences of every item of HELD_OUT_GROUPS, exactly as the evaluation encodes them."""
    where = f"case_id {case.get('case_id')}: "
    out = []
    for item in build_items(case):
        if item.group in HELD_OUT_GROUPS:
            out.append(encode_item(tok, item.prompt, item.target, where).input_ids)
    return out


class LeakGuard:
    """`leaks(seq)`: whether training on every position of `seq` would train on a held-out scored sequence."""

    def __init__(self, scored: Iterable[Sequence[int]]):
        scored = [tuple(s) for s in scored]
        self.exact = set(scored)
        self.lengths = sorted({len(s) for s in scored})
        self.prefixes = {s[:n] for s in scored for n in range(2, len(s) + 1)}  # length 1 is BOS, shared by all

    def leaks(self, seq: Sequence[int]) -> bool:
        seq = tuple(seq)
        if seq in self.prefixes:  # equal to a scored sequence, or a prefix of one
            return True
        return any(seq[:n] in self.exact for n in self.lengths if n <= len(seq))  # a scored sequence begins it



def leak_guard(tok, case: dict):
    """`leaks(token_ids)` for one case: what rep.fit_rep_adaptor takes."""
    return LeakGuard(held_out_sequences(tok, case)).leaks
