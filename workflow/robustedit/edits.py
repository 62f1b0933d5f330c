"""An edit is data. ROME yields a rank-one edit of one down-projection weight:

    W' = W + v uᵀ   (nn.Linear weight is [out, in]; u lives in key space, v in hidden space)

so that W' k = W k + v (uᵀ k). `apply` returns the exact original weight for `restore`, and
`batched_rank_one` adds a different edit to each example of a batch through a forward hook,
which equals applying each edit to its own copy of the model.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn as nn

from .hooks import edit_output


@dataclass
class RankOneEdit:
    layer: int
    u: torch.Tensor  # [key_dim]  left vector (C^-1 k normalised, for ROME)
    v: torch.Tensor  # [hidden]   right vector ((v* - W k*) / (uᵀ k*), for ROME)

    def delta(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        return torch.outer(self.v, self.u).to(dtype or self.v.dtype)

    def to_dict(self) -> dict:
        return {"layer": self.layer, "u": self.u.detach().cpu(), "v": self.v.detach().cpu()}

    @classmethod
    def from_dict(cls, d: dict) -> "RankOneEdit":
        return cls(int(d["layer"]), d["u"], d["v"])


def apply_rank_one(linear: nn.Linear, edit: RankOneEdit) -> torch.Tensor:
    """Add the edit to `linear.weight` in place; return a copy of the original weight."""
    original = linear.weight.detach().clone()
    with torch.no_grad():
        # The delta is formed in float32 and added in the weight's dtype.
        linear.weight.add_(edit.delta(torch.float32).to(linear.weight.device, linear.weight.dtype))
    return original


def restore(linear: nn.Linear, original: torch.Tensor) -> None:
    """Put back the exact original weight (bit-for-bit)."""
    with torch.no_grad():
        linear.weight.copy_(original)


@contextlib.contextmanager
def applied(linear: nn.Linear, edit: RankOneEdit) -> Iterator[None]:
    original = apply_rank_one(linear, edit)
    try:
        yield
    finally:
        restore(linear, original)


@contextlib.contextmanager
def batched_rank_one(linear: nn.Linear, u: torch.Tensor, v: torch.Tensor) -> Iterator[None]:
    """Give example b of every batch its own edit: out_b += v_b (u_bᵀ x_b) at every position.

    u: [B, key_dim], v: [B, hidden]; the batch fed to the model must have exactly B rows.
    """

    captured: dict[str, torch.Tensor] = {}

    def pre(_mod, args):
        captured["x"] = args[0]

    handle = linear.register_forward_pre_hook(pre)

    def add_delta(out: torch.Tensor) -> torch.Tensor:
        x = captured["x"]
        if x.shape[0] != u.shape[0]:
            raise ValueError(f"batch has {x.shape[0]} rows but {u.shape[0]} edits were given")
        coeff = torch.einsum("bsd,bd->bs", x.to(u.dtype), u)  # uᵀx per position
        return out + (coeff.unsqueeze(-1) * v.unsqueeze(1)).to(out.dtype)

    try:
        with edit_output(linear, add_delta):
            yield
    finally:
        handle.remove()
