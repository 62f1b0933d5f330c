"""Running v*'s rows fast; every shortcut is exact (tests compare with the plain full forward).

- Logits are computed only where a label or the KL distribution is read (compute_v.py gathers them
  from the lm_head input, readout.lm_head_input).
- reuse_lower_layers: the layers below the edit layer do not depend on δ; they run once and their
  output is fed back by temporarily swapping those blocks for a module returning it.
- cache_prefix: tokens before a row's δ position (and before its first label) do not depend on δ at
  any layer; their K/V come from one δ-free pass, and each step runs only the few tokens after them,
  through the model's own forward with past_key_values and explicit position ids.
- row_groups: each step runs at most this many forwards, rows grouped by length to cut padding.
Masks and position embeddings are always built by the model's own forward.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterator, Sequence

import torch
import torch.nn as nn

from ..hooks import capture_output, edit_output, run_until, stop_after
from ..readout import lm_head_input
from .hparams import ROMEHyperParams
from .v_batch import RowBatch, select_rows


@torch.no_grad()
def prepare_batch(model, arch, layer: int, batch: RowBatch, hp: ROMEHyperParams, pad_id: int) -> RowBatch:
    """One δ-free pass over the full rows: the edit layer's input (reuse_lower_layers) and, with
    cache_prefix, every layer's K/V, then switch to the prefix layout."""
    from transformers import DynamicCache  # a plain (non-sliding) cache keeps every position's K/V

    reuse = hp.reuse_lower_layers and layer > 0
    if not (reuse or hp.cache_prefix):
        return batch
    cache = DynamicCache() if hp.cache_prefix else None
    stop = arch.module(model, "final_norm") if hp.cache_prefix else arch.module(model, "layer", layer - 1)
    with contextlib.ExitStack() as st:
        low = st.enter_context(capture_output(arch.module(model, "layer", layer - 1))) if reuse else None
        st.enter_context(stop_after(stop))
        run_until(model, input_ids=batch.ids, attention_mask=batch.mask, past_key_values=cache,
                  use_cache=cache is not None)
    if not hp.cache_prefix:
        return dataclasses.replace(batch, lower=low.value)
    n_rows, width = batch.ids.shape
    first_label = torch.full((n_rows,), width, dtype=torch.long, device=batch.ids.device)
    first_label.scatter_reduce_(0, batch.lab_row, batch.lab_pos, reduce="amin")
    split = torch.minimum(batch.index, first_label)  # tokens before this never see δ
    length = batch.mask.sum(1)
    p, w = int(split.max()), int((length - split).max())
    src = split[:, None] + torch.arange(w, device=split.device)  # suffix token j of row r is token split_r + j
    real = src < length[:, None]
    src = src.clamp(max=width - 1)
    ids = torch.where(real, batch.ids.gather(1, src), pad_id)
    dst = torch.arange(p, device=split.device)[None, :] - (p - split[:, None])  # right-aligned prefix
    prefix_real = dst >= 0

    def align(x):  # [R, heads, S, d] -> [R, heads, p, d], zeros where a row has no prefix token
        g = x.gather(2, dst.clamp(min=0)[:, None, :, None].expand(-1, x.shape[1], -1, x.shape[3]))
        return g * prefix_real[:, None, :, None].to(g.dtype)

    kv = [(align(lay.keys), align(lay.values)) for lay in cache.layers] if p > 0 else None
    lower = None if low is None else low.value.gather(1, src[..., None].expand(-1, -1, low.value.shape[-1]))
    return dataclasses.replace(
        batch, ids=ids, mask=torch.cat([prefix_real.long(), real.long()], 1), index=batch.index - split,
        lab_pos=batch.lab_pos - split[batch.lab_row], pos=src, lower=lower, prefix_kv=kv, prefix_len=p)


def plan_row_groups(lengths: Sequence[int], max_groups: int, overhead: int = 32) -> list[list[int]]:
    """Split rows into <= max_groups forwards of similar length, minimising Σ (rows·longest + overhead)
    token slots (`overhead` prices one extra forward); only cuts where the sorted length changes."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    cuts = [0] + [k for k in range(1, len(order)) if lengths[order[k]] != lengths[order[k - 1]]] + [len(order)]
    cost = lambda a, b: (cuts[b] - cuts[a]) * lengths[order[cuts[b] - 1]] + overhead  # noqa: E731
    best = {(0, 0): (0, None)}  # (groups used, cut index) -> (cost, previous cut index)
    for g in range(1, max_groups + 1):
        for j in range(1, len(cuts)):
            options = [(best[(g - 1, i)][0] + cost(i, j), i) for i in range(j) if (g - 1, i) in best]
            if options:
                best[(g, j)] = min(options)
    g = min((g for g in range(1, max_groups + 1) if (g, len(cuts) - 1) in best),
            key=lambda g: best[(g, len(cuts) - 1)][0])
    groups, j = [], len(cuts) - 1
    while g > 0:
        i = best[(g, j)][1]
        groups.append(sorted(order[cuts[i]: cuts[j]]))
        g, j = g - 1, i
    return groups[::-1]


class _Fixed(nn.Module):
    """Stands in for a decoder block: returns a precomputed hidden state."""

    def __init__(self, hidden: torch.Tensor):
        super().__init__()
        self.hidden = hidden

    def forward(self, *args, **kwargs):
        return self.hidden


@contextlib.contextmanager
def lower_layers_replaced(model, arch, layer: int, hidden: torch.Tensor | None):
    """While active, blocks 0..layer-1 are skipped and block `layer` receives `hidden`."""
    if hidden is None or layer == 0:
        yield
        return
    layers = arch.module(model, "layers")
    saved = [layers[i] for i in range(layer)]
    try:
        for i in range(layer):
            layers[i] = _Fixed(hidden)
        yield
    finally:
        for i, m in enumerate(saved):
            layers[i] = m


def hidden_with_delta(model, arch, layer: int, batch: RowBatch, delta_rows: torch.Tensor):
    """The lm_head input [R, W, H] with delta_rows[r] added to the edit layer's MLP output at
    (r, index[r]); also the MLP output at those positions before the addition."""
    from transformers import DynamicCache

    ar = torch.arange(batch.ids.shape[0], device=batch.ids.device)
    seen = {}

    def add_delta(out):
        seen["pre"] = out[ar, batch.index].detach()
        return out.index_put((ar, batch.index), delta_rows.to(out.dtype), accumulate=True)

    cache = None
    if batch.prefix_kv is not None:  # a fresh cache each step: the forward appends to it
        cache = DynamicCache()
        for i, (k, v) in enumerate(batch.prefix_kv):
            cache.update(k, v, i)
    with lower_layers_replaced(model, arch, layer, batch.lower), \
            edit_output(arch.module(model, "mlp", layer), add_delta):
        hidden = lm_head_input(model, arch, input_ids=batch.ids, attention_mask=batch.mask, position_ids=batch.pos,
                               past_key_values=cache, use_cache=cache is not None)
    return hidden, seen["pre"]


def grouped_forward(model, arch, layer: int, batch: RowBatch, local: torch.Tensor, deltas: torch.Tensor,
                    row_groups: int) -> Iterator[tuple[RowBatch, torch.Tensor, torch.Tensor]]:
    """The rows of the active cases (local: case -> active index, -1 = inactive), each carrying
    deltas[its active index], in at most `row_groups` forwards of rows of similar length (a case's
    rows may span groups). Yields (rows of the group, hidden_with_delta's two results)."""
    rows = torch.nonzero(local[batch.case] >= 0)[:, 0]
    lengths = batch.mask[rows, batch.prefix_len:].sum(1).tolist()
    for group in plan_row_groups(lengths, row_groups):
        sub = select_rows(batch, rows[group], local)
        yield (sub, *hidden_with_delta(model, arch, layer, sub, deltas[sub.case]))
