"""Teacher-forced scoring of encoded items (encoding.py), batched, with logits only where they are read.

Batches are RIGHT-padded here, from token id lists; the tokenizer's padding_side and pad token are
never used. With right padding, positions keep their unpadded position ids and causal attention never
sees a pad before a real token, so each row equals its unpadded forward.

The vocabulary projection is the costly part of a small model's forward (V = 49k-262k), so the model
is stopped just before `lm_head` (readout.lm_head_input: its input, which transformers' decoders give
already passed through the final norm) and `lm_head` is applied only to the gathered positions
(readout.logits_from_hidden, with Gemma's final logit softcapping).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager, Sequence

import torch
from transformers import DynamicCache

from ..batching import PAD_ID, right_pad
from ..errors import ConfigError
from ..readout import lm_head_input, logits_from_hidden
from .continuations import cut
from .decoding import decode_from_cache
from .encoding import EncodedItem, ItemScore, encode_item, scores_from_logits
from .packing import PackedRow, pack_items, score_packed_batch

__all__ = ["EncodedItem", "Greedy", "ItemScore", "encode_item", "gathered_logits", "length_batches", "score_batch",
           "score_items"]  # encode_item and the item types are defined in encoding.py; callers import them here too


def gathered_logits(model, arch, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Logits [M, V] at (rows[m], positions[m]); equal to model(...).logits[rows, positions] (float32
    for a half-precision model)."""
    hidden = lm_head_input(model, arch, input_ids=input_ids, attention_mask=attention_mask)
    return logits_from_hidden(model, arch, hidden[rows, positions])


def score_batch(model, arch, items: Sequence[EncodedItem], device) -> list[ItemScore]:
    """One right-padded row per item."""
    input_ids, attention_mask = right_pad([it.input_ids for it in items], PAD_ID, device)
    rows = torch.cat([torch.full((len(it.target_ids),), i, dtype=torch.long) for i, it in enumerate(items)])
    positions = torch.cat([torch.as_tensor(list(it.read_positions()), dtype=torch.long) for it in items])
    targets = torch.cat([torch.as_tensor(it.target_ids, dtype=torch.long) for it in items]).to(device)
    logits = gathered_logits(model, arch, input_ids, attention_mask, rows.to(device), positions.to(device))
    return scores_from_logits(logits, targets, [len(it.target_ids) for it in items])


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Row indices in batches of at most batch_size, longest first; a row less than half as long as its
    batch's first row starts a new batch, so padding never exceeds half a batch (one long-context row
    would otherwise make 15 short rows cost its length each)."""
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if not batches or len(batches[-1]) == batch_size or 2 * lengths[i] < lengths[batches[-1][0]]:
            batches.append([])
        batches[-1].append(i)
    return batches


RowContext = Callable[[torch.Tensor], ContextManager[None]]


@dataclass(frozen=True)
class Greedy:
    """Continue every item's prompt greedily from the teacher-forced forward's cache (decoding.py)."""
    budgets: Sequence[int | None]  # per item: its new-token budget; None: not continued (an alternative)
    eos: set[int]  # end-of-sequence ids: a row ends there (continuations.py's stop rule)
    stopped: Callable[[list[int]], bool]  # the stop strings' test on the new tokens so far


def _continued(model, arch, rows: Sequence[PackedRow], device, greedy: Greedy, row_context: RowContext | None,
               row_case: torch.Tensor | None) -> list[list[ItemScore]]:
    """score_packed_batch, then each row's prompt continued from the forward's cache, up to the largest budget
    of its items; each item's continuation is its own budget's prefix (continuations.cut)."""
    cache = DynamicCache()
    ctx = row_context(row_case) if row_context is not None else contextlib.nullcontext()
    with ctx:
        per_row = score_packed_batch(model, arch, rows, device, cache)
    budgets = [max((greedy.budgets[i] for i in row.items if greedy.budgets[i]), default=None) for row in rows]
    width = max(len(row) for row in rows)  # the cache's width: rows are padded to the longest
    new = decode_from_cache(model, cache, width, [len(row.prompt) for row in rows],
                            [scores[0].argmax_ids[0] for scores in per_row], budgets, device, eos=greedy.eos,
                            stopped=greedy.stopped, row_context=row_context, row_case=row_case)
    return [[ItemScore(sc.argmax_ids, sc.logprobs,
                       cut(tokens, greedy.budgets[i], greedy.eos, greedy.stopped) if greedy.budgets[i] else None)
             for i, sc in zip(row.items, scores)]
            for row, scores, tokens in zip(rows, per_row, new)]


def score_items(model, arch, items: Sequence[EncodedItem], batch_size: int, device,
                row_context: RowContext | None = None, row_case: Sequence[int] | None = None,
                pack: bool = True, greedy: Greedy | None = None) -> list[ItemScore]:
    """Scores in the order of `items`. Rows are batched longest first (length_batches: less padding).

    With `row_context`, each batch runs inside `row_context(case index of each row)`, which is how
    per-row edits (EditBatch.for_rows) are applied; `row_case[i]` is item i's case index.
    With `pack` (default), items of one case that share a prompt (an item and its alternative) are
    scored in one row (see packing.py); `pack=False` gives each item its own row.
    With `greedy`, each item's score also carries its greedy continuation (packed rows only).
    """
    if model.training:
        raise ConfigError("evaluation needs model.eval(): dropout would make teacher-forced scores random")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if row_context is not None and (row_case is None or len(row_case) != len(items)):
        raise ValueError("row_context needs one case index per item (row_case)")
    if greedy is not None and (not pack or len(greedy.budgets) != len(items)):
        raise ConfigError("greedy continuations need packed rows and one budget (or None) per item")
    if pack:
        rows = pack_items(items, row_case)
    else:
        rows = [None] * len(items)
    lengths = [len(r) if pack else len(items[i].input_ids) for i, r in enumerate(rows)]
    scores: list[ItemScore | None] = [None] * len(items)
    with torch.no_grad():
        for chunk in length_batches(lengths, batch_size):
            first_item = [rows[i].items[0] if pack else i for i in chunk]
            cases = (torch.as_tensor([row_case[i] for i in first_item], dtype=torch.long, device=device)
                     if row_context is not None else None)
            if not pack:
                with row_context(cases) if row_context is not None else contextlib.nullcontext():
                    done = list(zip(chunk, score_batch(model, arch, [items[i] for i in chunk], device)))
            else:
                packed = [rows[i] for i in chunk]
                if greedy is not None:
                    per_row = _continued(model, arch, packed, device, greedy, row_context, cases)
                else:
                    with row_context(cases) if row_context is not None else contextlib.nullcontext():
                        per_row = score_packed_batch(model, arch, packed, device)
                done = [(k, sc) for row, row_scores in zip(packed, per_row) for k, sc in zip(row.items, row_scores)]
            for k, sc in done:
                scores[k] = sc
    return scores  # type: ignore[return-value]
