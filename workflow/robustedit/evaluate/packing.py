"""Items that share a prompt, scored in one row: prompt + target + alternative (a "tree" row).

An item and its alternative (ROME's P(new) > P(true) pair) differ only in the few target tokens after
a shared prompt, and the prompt dominates the cost (300-word long contexts). Packing puts every branch
of a prompt in one row: the branch tokens get the positions they would have after the prompt alone
(P, P+1, ...) and a custom attention mask lets each branch see the prompt and its own earlier tokens,
never another branch. Every attention score and position is then the one of the unpacked sequence, so
a packed row computes the same numbers as one row per branch, up to float summation order (tested).

Position-wise edits (ROME's rank-one term, REP's adaptor) act on each position independently, so
they apply to packed rows unchanged. Sliding-window layers (Gemma 3, Mistral) get their window in the
mask, measured in positions, not row indices.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..batching import PAD_ID
from ..readout import lm_head_input, logits_from_hidden
from .encoding import EncodedItem, ItemScore, scores_from_logits


@dataclass(frozen=True)
class PackedRow:
    prompt: tuple[int, ...]
    branches: tuple[tuple[int, ...], ...]  # target ids of each item packed here
    items: tuple[int, ...]  # index of each branch's item in the caller's list

    def __len__(self) -> int:
        return len(self.prompt) + sum(len(b) for b in self.branches)


def pack_items(items: Sequence[EncodedItem], row_case: Sequence[int] | None = None) -> list[PackedRow]:
    """Group items with the same prompt ids (and the same case, whose edit the row will carry)."""
    groups: dict[tuple, list[int]] = {}
    for i, it in enumerate(items):
        key = (None if row_case is None else int(row_case[i]), it.input_ids[:it.n_prompt])
        groups.setdefault(key, []).append(i)
    return [PackedRow(key[1], tuple(items[i].target_ids for i in idx), tuple(idx)) for key, idx in groups.items()]


def _row_layout(row: PackedRow) -> tuple[list[int], list[int], list[int], list[list[int]]]:
    """ids, position ids, segment per token (0 = prompt, b+1 = branch b), read positions per branch."""
    p = len(row.prompt)
    ids, pos, seg, reads = list(row.prompt), list(range(p)), [0] * p, []
    for b, branch in enumerate(row.branches):
        start = len(ids)
        ids += branch
        pos += range(p, p + len(branch))
        seg += [b + 1] * len(branch)
        # token j of the branch is predicted from the prompt's last token (j = 0) or from branch token j-1
        reads.append([p - 1] + [start + j - 1 for j in range(1, len(branch))])
    return ids, pos, seg, reads


def packed_inputs(rows: Sequence[PackedRow], device, dtype: torch.dtype, window: int | None = None):
    """input_ids [B, L], position_ids [B, L], additive mask [B, 1, L, L] (0 = attend, min = blocked),
    and per row the read positions of each branch."""
    layouts = [_row_layout(r) for r in rows]
    length = max(len(x[0]) for x in layouts)
    ids = torch.full((len(rows), length), PAD_ID, dtype=torch.long)  # padded queries see only themselves
    pos = torch.zeros((len(rows), length), dtype=torch.long)
    seg = torch.full((len(rows), length), -1, dtype=torch.long)  # -1 = padding
    for r, (i, p, s, _) in enumerate(layouts):
        ids[r, :len(i)], pos[r, :len(p)], seg[r, :len(s)] = torch.tensor(i), torch.tensor(p), torch.tensor(s)
    q_seg, k_seg = seg[:, :, None], seg[:, None, :]
    q_pos, k_pos = pos[:, :, None], pos[:, None, :]
    idx = torch.arange(length)
    causal = idx[None, :, None] >= idx[None, None, :]  # by row index: a branch sits after the prompt
    allowed = causal & (k_seg >= 0) & ((k_seg == 0) | (k_seg == q_seg))
    if window is not None:
        allowed &= (q_pos - k_pos) < window
    allowed |= torch.eye(length, dtype=torch.bool)[None]  # padded queries attend to themselves only
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    pos[seg < 0] = 0
    return ids.to(device), pos.to(device), mask[:, None].to(device), [x[3] for x in layouts]


def layer_type_masks(model, make: Callable[[int | None], object]):
    """The model's mask argument from make(window) (window None: full attention): one 4D mask, or one per layer
    type for models that mix full and sliding-window layers (Gemma 3); a model with a window on every layer
    and no layer types gets the windowed mask."""
    cfg = getattr(model.config, "text_config", model.config)
    window = getattr(cfg, "sliding_window", None)
    types = set(getattr(cfg, "layer_types", None) or [])
    if "sliding_attention" in types and window:
        return {"full_attention": make(None), "sliding_attention": make(window)}
    return make(window if window and not types else None)


def _attention_masks(model, rows, device, dtype):
    """(input ids, positions, the model's mask argument, reads) of a packed batch (layer_type_masks)."""
    built = []

    def make(window):
        built.append(packed_inputs(rows, device, dtype, window))
        return built[-1][2]
    mask = layer_type_masks(model, make)
    ids, pos, _, reads = built[0]
    return ids, pos, mask, reads


def score_packed_batch(model, arch, rows: Sequence[PackedRow], device, cache=None) -> list[list[ItemScore]]:
    """ItemScores of every branch of every row (same values as scoring each branch's item alone). With a
    `cache` (an empty transformers DynamicCache), the forward also fills it: every row's keys and values,
    padded to the batch's width (decoding.py continues the prompts from it)."""
    dtype = next(model.parameters()).dtype
    ids, pos, mask, reads = _attention_masks(model, rows, device, dtype)
    cached = {} if cache is None else {"past_key_values": cache, "use_cache": True}
    hidden = lm_head_input(model, arch, input_ids=ids, attention_mask=mask, position_ids=pos, **cached)
    r_idx = torch.tensor([r for r, row_reads in enumerate(reads) for b in row_reads for _ in b], device=device)
    p_idx = torch.tensor([p for row_reads in reads for b in row_reads for p in b], device=device)
    targets = torch.tensor([t for row in rows for branch in row.branches for t in branch], device=device)
    flat = scores_from_logits(logits_from_hidden(model, arch, hidden[r_idx, p_idx]), targets,
                              [len(b) for row in rows for b in row.branches])
    out, k = [], 0
    for row in rows:
        out.append(flat[k:k + len(row.branches)])
        k += len(row.branches)
    return out
