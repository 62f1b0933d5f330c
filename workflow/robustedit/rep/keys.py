"""REP's training pool and its keys (the down_proj inputs at the subject's last token).

Pool (reference `Aggregator.edit`, shared notes §3.4): every subject variant -- the original subject, the
in-domain subject rephrases, the in-domain shuffled subjects -- put into the prompt in place of the
subject, and the result wrapped in each ROME context template (`template.format(prompt)`; the bare
"{}" template with the original subject is the *original* prompt, kept apart). With `long_context_aug`,
each held passage gives one more item "{passage} {prompt}" (original subject, as the evaluation's
long-context prompts). The reference builds those from the passages as if they were templates; having
no "{}", they are all filtered out: `compat_long_noop=True` reproduces that (no long items).

The subject's character span is carried with every item and the key is read at the last token
overlapping that span, so a subject string that also occurs in a template prefix or passage is never
mistaken for the prompt's subject.

The keys do not depend on the adaptor, so they are read once (no grad, forward stopped after the edit
layer's down_proj, right padding) and training runs on the cached tensors.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn as nn

from ..batching import right_pad
from ..errors import ConfigError, RecordError
from ..hooks import capture_input, run_until, stop_after
from ..tokens import encode_with_span

KINDS = ("original", "rephrase", "shuffle", "long")


@dataclass(frozen=True)
class PoolItem:
    text: str  # exactly the string fed to the model
    kind: str  # one of KINDS
    variant: str  # the subject string used
    template: int  # index into the deduplicated templates; -1 for long-context items
    span: tuple[int, int]  # character span of the subject variant in `text`


def check_templates(templates: Sequence[str]) -> list[str]:
    """ROME context templates, deduplicated in order. Each must hold one "{}" and no other brace;
    the bare "{}" must be among them (it gives the original prompt)."""
    out = list(dict.fromkeys(templates))
    for t in out:
        if t.count("{}") != 1 or t.count("{") != 1 or t.count("}") != 1:
            raise ConfigError(f"context template {t!r} must contain exactly one '{{}}' and no other brace")
    if "{}" not in out:
        raise ConfigError("the context templates must include the bare '{}' (the original prompt)")
    return out


def build_pool(prompt: str, subject: str, templates: Sequence[str], rephrases: Sequence[str] = (),
               shuffles: Sequence[str] = (), long_contexts: Sequence[str] = (), *,
               long_context_aug: bool = False, compat_long_noop: bool = False,
               where: str = "") -> tuple[PoolItem, list[PoolItem]]:
    """Return (original item, training pool without the original)."""
    templates = check_templates(templates)
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


def _batches(model: nn.Module, down_proj: nn.Module, ids: Sequence[Sequence[int]], batch_rows: int,
             pad_id: int, device) -> Iterator[tuple[int, torch.Tensor, list[int]]]:
    """Yield (first row, down_proj inputs [b, L, D] as float32, lengths) for right-padded batches."""
    if batch_rows < 1:
        raise ConfigError(f"key batch rows must be >= 1, got {batch_rows}")
    for lo in range(0, len(ids), batch_rows):
        chunk = ids[lo:lo + batch_rows]
        lens = [len(x) for x in chunk]
        input_ids, mask = right_pad(chunk, pad_id)
        with torch.no_grad(), capture_input(down_proj) as cap, stop_after(down_proj):
            run_until(model, input_ids=input_ids.to(device), attention_mask=mask.to(device), use_cache=False)
        yield lo, cap.value.float(), lens


def read_keys(model: nn.Module, down_proj: nn.Module, ids: Sequence[Sequence[int]], positions: Sequence[int],
              *, batch_rows: int = 32, pad_id: int = 0, device="cpu") -> torch.Tensor:
    """Keys [N, D] (float32) at one position per sequence."""
    out = []
    for lo, keys, _ in _batches(model, down_proj, ids, batch_rows, pad_id, device):
        pos = torch.tensor(positions[lo:lo + keys.shape[0]], device=keys.device)
        out.append(keys[torch.arange(keys.shape[0], device=keys.device), pos])
    return torch.cat(out)


def read_all_keys(model: nn.Module, down_proj: nn.Module, ids: Sequence[Sequence[int]], *, batch_rows: int = 32,
                  pad_id: int = 0, device="cpu") -> list[torch.Tensor]:
    """Keys at every real (non-pad) position: one [L_i, D] float32 tensor per sequence."""
    out = []
    for _, keys, lens in _batches(model, down_proj, ids, batch_rows, pad_id, device):
        out.extend(keys[r, :n] for r, n in enumerate(lens))
    return out


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
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0  # pad positions are masked and unread
    if not with_gate_data:
        keys = read_keys(model, down_proj, ids, pos, batch_rows=batch_rows, pad_id=pad_id, device=device)
        return TrainingKeys(pool=keys[1:], original=keys[0])
    neg_ids = [list(tok(p)["input_ids"]) for p in negative_prompts]
    all_keys = read_all_keys(model, down_proj, ids + neg_ids, batch_rows=batch_rows, pad_id=pad_id, device=device)
    sub = torch.stack([k[p] for k, p in zip(all_keys, pos)])
    # A key depends only on the tokens up to its position, so a negative whose prefix equals a positive's
    # prefix (e.g. "Danielle Darrieux" inside the rephrase "Danielle Darrieux, the film star") is the very
    # same vector: such positions are left out of the negatives.
    positive_prefixes = {tuple(i[:p + 1]) for i, p in zip(ids, pos)}
    last_tokens = {prefix[-1] for prefix in positive_prefixes}
    negs = []
    for r, (k, seq) in enumerate(zip(all_keys, ids + neg_ids)):
        keep = torch.ones(k.shape[0], dtype=torch.bool)
        for t, tid in enumerate(seq):
            if (r < len(ids) and t == pos[r]) or (tid in last_tokens and tuple(seq[:t + 1]) in positive_prefixes):
                keep[t] = False
        negs.append(k[keep.to(k.device)])
    return TrainingKeys(pool=sub[1:], original=sub[0], gate_pos=sub, gate_neg=torch.cat(negs))
