"""REP's training pool and its keys (the down_proj inputs at the subject's last token).

Pool (the REP release's `Aggregator.edit`, ElliottYan/RobustKeyEdit): every subject variant -- the original subject, the
in-domain subject rephrases, the in-domain shuffled subjects -- put into the prompt in place of the
subject, and the result wrapped in each ROME context template (`template.format(prompt)`; the bare
"{}" template with the original subject is the *original* prompt, kept apart). With `long_context_aug`,
each held passage gives one more item "{passage} {prompt}" (original subject, as the evaluation's
long-context prompts). The reference builds those from the passages as if they were templates; having
no "{}", they are all filtered out: `compat_long_noop=True` reproduces that (no long items).

The subject's character span is carried with every item and the key is read at the last token
overlapping that span, so a subject string that also occurs in a template prefix or passage is never
mistaken for the prompt's subject.

The keys do not depend on the adaptor, so they are read once (readout.read_down_proj: no grad, forward
stopped after the edit layer's down_proj, right padding) and training runs on the cached tensors.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn

from ..batching import pad_id_of
from ..errors import ConfigError, RecordError
from ..readout import read_down_proj
from ..rome.templates import check_template_slot
from ..tokens import encode_with_span

KINDS = ("original", "rephrase", "shuffle", "long")


@dataclass(frozen=True)
class PoolItem:
    text: str  # exactly the string fed to the model
    kind: str  # one of KINDS
    variant: str  # the subject string used
    template: int  # index into the deduplicated templates; -1 for long-context items
    span: tuple[int, int]  # character span of the subject variant in `text`


def unique_templates(templates: Sequence[str]) -> list[str]:
    """ROME context templates, deduplicated in order. Each must pass check_template_slot (one "{}", no
    other brace); the bare "{}" must be among them, anywhere (it gives the original prompt)."""
    out = list(dict.fromkeys(templates))
    for t in out:
        check_template_slot(t)
    if "{}" not in out:
        raise ConfigError("the context templates must include the bare '{}' (the original prompt)")
    return out


def build_pool(prompt: str, subject: str, templates: Sequence[str], rephrases: Sequence[str] = (),
               shuffles: Sequence[str] = (), long_contexts: Sequence[str] = (), *,
               long_context_aug: bool = False, compat_long_noop: bool = False,
               where: str = "") -> tuple[PoolItem, list[PoolItem]]:
    """Return (original item, training pool without the original)."""
    templates = unique_templates(templates)
    start = prompt.find(subject) if subject else -1
    if start < 0:
        raise RecordError(f"{where}subject {subject!r} not found in prompt {prompt!r}")
    head, tail = prompt[:start], prompt[start + len(subject):]
    variants = [("original", subject)] + [("rephrase", s) for s in rephrases] + [("shuffle", s) for s in shuffles]
    original, pool = None, []
    for kind, variant in variants:
        if not variant or not variant.strip():
            raise RecordError(f"{where}empty subject variant ({kind})")
        body = head + variant + tail
        for ti, t in enumerate(templates):
            pre, post = t.split("{}")
            item = PoolItem(pre + body + post, kind, variant, ti, (len(pre) + start, len(pre) + start + len(variant)))
            if kind == "original" and t == "{}":
                original = item
            else:
                pool.append(item)
    if long_context_aug and not compat_long_noop:
        if not long_contexts:
            raise RecordError(f"{where}long_context_aug is on but the case has no held long contexts")
        for passage in long_contexts:
            off = len(passage) + 1
            pool.append(PoolItem(f"{passage} {prompt}", "long", subject, -1, (off + start, off + start + len(subject))))
    return original, pool


def pool_from_case(case: dict, templates: Sequence[str], *, long_context_aug: bool = False,
                   compat_long_noop: bool = False) -> tuple[PoolItem, list[PoolItem]]:
    """The pool of a built case (data.cases layout): in-domain rephrases and shuffles, held passages."""
    where = f"case_id {case.get('case_id')}: "
    try:
        reph = case["subject_rephrases"]["id"]
        shuf = case.get("shuffled_subjects", {}).get("id", [])
        held = case.get("long_context", {}).get("held", [])
        return build_pool(case["prompt"], case["subject"], templates, reph, shuf, held,
                          long_context_aug=long_context_aug, compat_long_noop=compat_long_noop, where=where)
    except KeyError as e:
        raise RecordError(f"{where}missing field {e.args[0]!r} needed for REP training") from e


@dataclass
class TrainingKeys:
    pool: torch.Tensor  # [N, D] subject-last keys of the pool items
    original: torch.Tensor  # [D] subject-last key of the original prompt (k*)
    gate_pos: torch.Tensor | None = None  # [P, D] gate positives (pool + original subject-last keys)
    gate_neg: torch.Tensor | None = None  # [M, D] gate negatives (other positions; unrelated prompts)


def collect_training_keys(model: nn.Module, tok, down_proj: nn.Module, original: PoolItem, pool: Sequence[PoolItem],
                          *, negative_prompts: Sequence[str] = (), with_gate_data: bool = False,
                          batch_rows: int = 32, device="cpu", where: str = "") -> TrainingKeys:
    """Read the keys REP trains on. Gate data: positives are the subject-last keys of the original and
    the pool; negatives are the keys at every other position of those prompts plus every position of
    `negative_prompts` (e.g. the case's neighbourhood prompts)."""
    if not pool:
        raise RecordError(f"{where}empty REP training pool")
    items = [original] + list(pool)
    enc = [encode_with_span(tok, it.text, *it.span, where) for it in items]
    ids, pos = [e[0] for e in enc], [e[1] for e in enc]

    def read(seqs, positions):  # in the given order: the batches the keys were always read in
        return read_down_proj(model, down_proj, seqs, positions, pad_id=pad_id_of(tok), device=device,
                              batch_rows=batch_rows, by_length=False).float()

    if not with_gate_data:
        keys = read(ids, pos)
        return TrainingKeys(pool=keys[1:], original=keys[0])
    seqs = ids + [list(tok(p)["input_ids"]) for p in negative_prompts]
    flat = read(seqs, [range(len(s)) for s in seqs])  # every position of every sequence, in order
    starts = [0, *itertools.accumulate(len(s) for s in seqs[:-1])]  # where each sequence begins in `flat`
    sub = flat[torch.tensor([starts[r] + p for r, p in enumerate(pos)], device=flat.device)]
    # A key depends only on the tokens up to its position, so a negative whose prefix equals a positive's
    # prefix (e.g. "Danielle Darrieux" inside the rephrase "Danielle Darrieux, the film star") is the very
    # same vector: such positions are left out of the negatives.
    positive_prefixes = {tuple(i[:p + 1]) for i, p in zip(ids, pos)}
    last_tokens = {prefix[-1] for prefix in positive_prefixes}
    keep = [not ((r < len(ids) and t == pos[r]) or (tid in last_tokens and tuple(seq[:t + 1]) in positive_prefixes))
            for r, seq in enumerate(seqs) for t, tid in enumerate(seq)]
    negatives = flat[torch.tensor(keep, dtype=torch.bool, device=flat.device)]
    return TrainingKeys(pool=sub[1:], original=sub[0], gate_pos=sub, gate_neg=negatives)
