"""Many REP adaptors at once: how ROME+REP acts when several cases' edits are in the model together.

REP defines one adaptor per edit and never says how two combine. Here every adaptor reads the same
down_proj input x and adds its gated branch:

    x' = x + Σ_n [g_n(x) > t] · s · B_n A_n x          (test mode: hard gates, no dropout)

so an adaptor whose gate stays shut on a position leaves it alone, and a position that opens several gates
gets every opened branch. With one adaptor this is exactly rep.apply's test-time adaptor. The hook is
prepended, as rep.apply's: the rank-one edits in the weight (or their batched pre-hooks) read x'.

    with composed_adaptors(down_proj, states, device, threshold=0.9):
        model(...)
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..hooks import edit_input
from .adaptor import AdaptorConfig
from .apply import stack_states

# adaptors whose gates are evaluated at once: the gate's hidden activations take positions x 16 x H floats
# (SmolLM2, H = 153: 10 MB per 1,000 positions)
ADAPTORS_PER_CHUNK = 16


def composed_adaptor_forward(stacked: dict[str, torch.Tensor], cfg: AdaptorConfig, x: torch.Tensor,
                             threshold: float | None = None, chunk: int = ADAPTORS_PER_CHUNK) -> torch.Tensor:
    """x [..., D] plus every stacked adaptor's hard-gated branch, all reading x. Computes in the adaptors'
    dtype, returns x's."""
    dtype, t = stacked["lora_A"].dtype, cfg.threshold if threshold is None else threshold
    xin = x.reshape(-1, x.shape[-1]).to(dtype)  # [T, D]
    delta = torch.zeros_like(xin)
    for j in range(0, stacked["lora_A"].shape[0], chunk):
        part = {k: v[j:j + chunk] for k, v in stacked.items()}
        h = torch.einsum("td,crd->tcr", xin, part["lora_A"])  # [T, c, r]
        if cfg.gate:
            hid = F.gelu(torch.einsum("td,chd->tch", xin, part["gate_w1"]) + part["gate_b1"])  # [T, c, H]
            logit = torch.einsum("tch,ch->tc", hid, part["gate_w2"][:, 0]) + part["gate_b2"][:, 0]
            h = h * (torch.sigmoid(logit) > t).to(dtype).unsqueeze(-1)
        delta += torch.einsum("tcr,cdr->td", h, part["lora_B"]) * cfg.scaling
    return (xin + delta).reshape(x.shape).to(x.dtype)


@contextlib.contextmanager
def composed_adaptors(down_proj: nn.Module, states: Sequence[dict], device, threshold: float | None = None,
                      chunk: int = ADAPTORS_PER_CHUNK) -> Iterator[None]:
    """Every row's down_proj input goes through all `states`' adaptors together (composed_adaptor_forward).
    Evaluation is deterministic: adaptors saved with rep.adaptor.eval_dropout=true are refused."""
    stacked, cfg = stack_states(states, down_proj.in_features, device)
    if cfg.eval_dropout:
        raise ConfigError("rep.adaptor.eval_dropout=true: composed adaptors are evaluated without dropout; "
                          "evaluate adaptors trained with eval_dropout=false")
    with edit_input(down_proj, lambda x: composed_adaptor_forward(stacked, cfg, x, threshold, chunk), prepend=True):
        yield
