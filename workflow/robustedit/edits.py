"""An edit is data. ROME yields a rank-one edit of one down-projection weight:

    W' = W + v uᵀ   (nn.Linear weight is [out, in]; u lives in key space, v in hidden space)

so that W' k = W k + v (uᵀ k). `apply` returns the exact original weight for `restore`, and
`batched_rank_one` adds a different edit to each example of a batch through a forward hook,
which equals applying each edit to its own copy of the model.

An `EditBatch` holds the edits of n cases (case index = position in the evaluated list) and offers

    for_case(i)      context: the model behaves as edited by case i (sequential path)
    for_rows(idx)    context: batch row r behaves as edited by case idx[r] (batched path)

Both must give the same outputs. `RankOneEditBatch` does it with `applied` (weights changed and
restored bit-for-bit) and `batched_rank_one`; a REP adaptor (a per-case module on the down_proj
input, rep.apply.RepEditBatch) plugs in by implementing the same two methods.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ContextManager, Iterator, Protocol, Sequence, runtime_checkable

import torch
import torch.nn as nn

from .errors import ConfigError
from .hooks import capture_input, edit_output


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
def down_proj_restored(model, arch, layers: Sequence[int]) -> Iterator[None]:
    """The down-projections of `layers` get their weights back, bit for bit, when the block exits."""
    originals = {layer: arch.module(model, "down_proj", layer).weight.detach().clone() for layer in layers}
    try:
        yield
    finally:
        for layer, weight in originals.items():
            restore(arch.module(model, "down_proj", layer), weight)


def add_to_down_proj(model, arch, layer: int, delta: torch.Tensor) -> None:
    """W_layer += delta, in the weight's device and dtype."""
    weight = arch.module(model, "down_proj", layer).weight
    with torch.no_grad():
        weight.add_(delta.to(weight.device, weight.dtype))


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
    with capture_input(linear, detach=False) as cap:
        def add_delta(out: torch.Tensor) -> torch.Tensor:
            x = cap.value
            if x.shape[0] != u.shape[0]:
                raise ValueError(f"batch has {x.shape[0]} rows but {u.shape[0]} edits were given")
            coeff = torch.einsum("bsd,bd->bs", x.to(u.dtype), u)  # uᵀx per position
            return out + (coeff.unsqueeze(-1) * v.unsqueeze(1)).to(out.dtype)

        with edit_output(linear, add_delta):
            yield


@runtime_checkable
class EditBatch(Protocol):
    def __len__(self) -> int: ...

    def for_case(self, case_index: int) -> ContextManager[None]: ...

    def for_rows(self, case_index_per_row: torch.Tensor) -> ContextManager[None]: ...


class NoEdit:
    """The unedited model for any number of cases."""

    def __init__(self, n_cases: int):
        self.n_cases = n_cases

    def __len__(self) -> int:
        return self.n_cases

    def for_case(self, case_index: int) -> ContextManager[None]:
        return contextlib.nullcontext()

    def for_rows(self, case_index_per_row: torch.Tensor) -> ContextManager[None]:
        return contextlib.nullcontext()


class RankOneEditBatch:
    """One RankOneEdit (or None: no edit) per case; edits may sit on different layers."""

    def __init__(self, model, arch, edits: Sequence[RankOneEdit | None], device):
        self.model, self.arch, self.edits = model, arch, list(edits)
        self.linears = {}
        self.u: dict[int, torch.Tensor] = {}  # layer -> [n_cases, key_dim]; zero rows for other cases
        self.v: dict[int, torch.Tensor] = {}  # layer -> [n_cases, hidden]
        for layer in sorted({e.layer for e in self.edits if e is not None}):
            linear = arch.module(model, "down_proj", layer)
            self.linears[layer] = linear
            # float32 rows, like the float32 delta `apply_rank_one` forms
            u = torch.zeros(len(self.edits), linear.in_features, dtype=torch.float32)
            v = torch.zeros(len(self.edits), linear.out_features, dtype=torch.float32)
            for i, e in enumerate(self.edits):
                if e is not None and e.layer == layer:
                    if e.u.shape != (linear.in_features,) or e.v.shape != (linear.out_features,):
                        raise ConfigError(f"edit {i} (layer {layer}) has u {tuple(e.u.shape)} and v "
                                          f"{tuple(e.v.shape)}; down_proj is "
                                          f"{linear.out_features}x{linear.in_features}")
                    u[i], v[i] = e.u.float(), e.v.float()
            self.u[layer], self.v[layer] = u.to(device), v.to(device)

    def __len__(self) -> int:
        return len(self.edits)

    def for_case(self, case_index: int) -> ContextManager[None]:
        edit = self.edits[case_index]
        if edit is None:
            return contextlib.nullcontext()
        return applied(self.linears[edit.layer], edit)

    @contextlib.contextmanager
    def for_rows(self, case_index_per_row: torch.Tensor):
        with contextlib.ExitStack() as stack:
            for layer, linear in self.linears.items():
                idx = case_index_per_row.to(self.u[layer].device)
                stack.enter_context(batched_rank_one(linear, self.u[layer][idx], self.v[layer][idx]))
            yield
