"""Greedy continuations decoded from the KV cache of a packed teacher-forced batch.

A packed row (packing.py) is a prompt followed by the target branches scored after it. Run with a KV
cache, the teacher-forced forward has already computed the prompt's keys and values, and its logits at
the prompt's last position are the first greedy token's. Decoding continues from that cache, so the
generation protocol costs its new tokens only, not a second forward over every prompt (most of its
cost: prompts are up to ~400 tokens, continuations ~8).

New token t of a row (t = 0 is the first greedy token) is fed at position P + t, where P is the row's
prompt length, and its cache column is L + t (L: the packed batch's width). It attends to the prompt's
columns and to the row's own new tokens, never to a branch or a pad: a 4D mask, per layer type where
sliding-window layers limit it to the window, measured in positions as packing.py does. Every attention
score and position is then the one of generating from the prompt alone (tests/test_generation.py checks
the continuations against generation.py's independent decoding, token for token).
"""
from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Sequence

import torch

from .continuations import continues
from .packing import layer_type_masks


def _decode_mask(prompt_len: torch.Tensor, width: int, step: int, dtype, window: int | None) -> torch.Tensor:
    """Additive mask [A, 1, 1, width + step + 1] for new token `step` of rows with these prompt lengths."""
    cols = torch.arange(width + step + 1)
    query = prompt_len[:, None] + step  # the new token's position
    # a prompt column's position is its index; new token j's column is width + j, its position P + j
    position = torch.where(cols[None] < width, cols[None], prompt_len[:, None] + cols[None] - width)
    allowed = (cols[None] < prompt_len[:, None]) | (cols[None] >= width)
    if window is not None:
        allowed &= (query - position) < window
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None, None, :]


def decode_masks(model, prompt_len: torch.Tensor, width: int, step: int, dtype, device):
    """The model's mask argument for a decoding step: one 4D mask, or one per layer type (packing's rule)."""
    return layer_type_masks(model, lambda window: _decode_mask(prompt_len, width, step, dtype, window).to(device))


@torch.no_grad()
def decode_from_cache(model, cache, width: int, prompt_lens: Sequence[int], first: Sequence[int],
                      budgets: Sequence[int | None], device, *, eos: set[int], stopped: Callable[[list[int]], bool],
                      row_context: Callable[[torch.Tensor], ContextManager] | None = None,
                      row_case: torch.Tensor | None = None) -> list[list[int]]:
    """Greedy new tokens of each row of a packed batch whose forward filled `cache` (width L), given the first
    greedy token of each row (the argmax at its prompt's last position) and its budget (None: not continued).
    `row_context` is entered around every forward with the case of each row still generating (for_rows)."""
    dtype = next(model.parameters()).dtype
    out: list[list[int]] = [[] for _ in first]
    active = [r for r, token in enumerate(first) if budgets[r] and continues(out[r], token, budgets[r], eos, stopped)]
    prompt_len = torch.as_tensor(list(prompt_lens), dtype=torch.long)
    rows = torch.as_tensor(active, dtype=torch.long)
    if len(active) < len(first):
        cache.batch_select_indices(rows.to(device))
    step = 0
    while len(active):
        ids = torch.as_tensor([[out[r][-1]] for r in active], dtype=torch.long, device=device)
        positions = (prompt_len[rows] + step)[:, None].to(device)
        mask = decode_masks(model, prompt_len[rows], width, step, dtype, device)
        ctx = row_context(row_case[rows.to(row_case.device)]) if row_context is not None else contextlib.nullcontext()
        with ctx:
            res = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                        use_cache=True, logits_to_keep=1)
        nxt = res.logits[:, -1].argmax(-1).tolist()
        keep = [k for k, (r, token) in enumerate(zip(active, nxt))
                if continues(out[r], token, budgets[r], eos, stopped)]
        if len(keep) < len(active):
            cache.batch_select_indices(torch.as_tensor(keep, dtype=torch.long, device=device))
        active = [active[k] for k in keep]
        rows = torch.as_tensor(active, dtype=torch.long)
        step += 1
    return out
