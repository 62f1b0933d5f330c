"""Reading a causal LM's internals at chosen positions, computing nothing that is not read.

    read_down_proj   the edit layer's down_proj input (ROME's and REP's key) and optionally its output,
                     at given positions of given token-id rows; the forward stops after down_proj
    lm_head_input    the hidden states lm_head reads (final norm applied); lm_head never runs
    logits_from_hidden  lm_head on chosen hidden states, as the model's own head computes them

Rows are right-padded here (batching.right_pad), so every position keeps its unpadded position id and
causal attention never sees a pad before a real token: each row equals its unpadded forward.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .batching import PAD_ID, right_pad
from .errors import ConfigError
from .hooks import capture_input, capture_output, run_until, stop_after, stop_before


def _as_positions(p) -> list[int]:
    return [p] if isinstance(p, int) else list(p)


def _batches(lengths: Sequence[int], batch_rows: int, by_length: bool) -> list[list[int]]:
    """Row indices, batch_rows at a time: shortest first (`by_length`, similar lengths share a
    forward) or in the given order."""
    if batch_rows < 1:
        raise ConfigError(f"key batch rows must be >= 1, got {batch_rows}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i]) if by_length else list(range(len(lengths)))
    return [order[lo: lo + batch_rows] for lo in range(0, len(order), batch_rows)]


@torch.no_grad()
def read_down_proj(model: nn.Module, down_proj: nn.Module, ids: Sequence[Sequence[int]], positions: Sequence,
                   *, pad_id: int = PAD_ID, device="cpu", batch_rows: int = 32, by_length: bool = True,
                   outputs: bool = False):
    """down_proj inputs [P, key_dim] (and with `outputs`, down_proj outputs [P, hidden]) in the model's
    dtype, at `positions[i]` of row `ids[i]`: one position (an int) or several per row; the result lists
    row 0's positions, then row 1's, and so on, whatever the batching.

    `by_length=False` keeps the rows' order in the batches (REP and the unrelated-text scan read in the
    order they were given; a different batch composition can move float results by an ulp)."""
    wanted = [_as_positions(p) for p in positions]
    if len(wanted) != len(ids):
        raise ValueError(f"{len(ids)} rows but {len(wanted)} position lists")
    ins: list = [None] * len(ids)
    outs: list = [None] * len(ids)
    for part in _batches([len(s) for s in ids], batch_rows, by_length):
        input_ids, mask = right_pad([ids[i] for i in part], pad_id, device)
        with capture_input(down_proj) as cin, capture_output(down_proj) as cout, stop_after(down_proj):
            run_until(model, input_ids=input_ids, attention_mask=mask, use_cache=False)
        at = cin.value.device
        rows = torch.tensor([j for j, i in enumerate(part) for _ in wanted[i]], dtype=torch.long, device=at)
        pos = torch.tensor([p for i in part for p in wanted[i]], dtype=torch.long, device=at)
        x, y = cin.value[rows, pos], (cout.value[rows, pos] if outputs else None)
        lo = 0
        for i in part:
            n = len(wanted[i])
            ins[i], outs[i] = x[lo: lo + n], (None if y is None else y[lo: lo + n])
            lo += n
    keys = torch.cat(ins)
    return (keys, torch.cat(outs)) if outputs else keys


def lm_head_input(model: nn.Module, arch, **inputs) -> torch.Tensor:
    """The input of lm_head [B, S, H] for `model(**inputs)` (transformers' decoders apply the final
    norm before it), without computing any logits; `use_cache` defaults to False. Gradients flow when
    they are enabled."""
    with stop_before(arch.module(model, "lm_head")) as cap:
        run_until(model, **{"use_cache": False, **inputs})
    if cap.value is None:
        raise ConfigError(f"{type(model).__name__}: lm_head was never called; check model.modules.lm_head")
    return cap.value


def logits_from_hidden(model: nn.Module, arch, hidden: torch.Tensor) -> torch.Tensor:
    """What the causal-LM head computes from lm_head inputs: lm_head, then Gemma-2/3's optional
    `final_logit_softcapping` (cap * tanh(logits / cap), in transformers' order of ops). Half-precision
    logits are returned in float32 (the exact upcast of the head's values), ready for a softmax."""
    logits = arch.module(model, "lm_head")(hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap is not None:
        logits = torch.tanh(logits / cap) * cap
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
