"""How evaluation applies edits: one case at a time, or a different case's edit on every batch row.

An `EditBatch` holds the edits of n cases (case index = position in the evaluated list) and offers

    for_case(i)      context: the model behaves as edited by case i (sequential path)
    for_rows(idx)    context: batch row r behaves as edited by case idx[r] (batched path)

Both must give the same outputs. Rank-one ROME edits do it with `edits.applied` (weights changed and
restored bit-for-bit) and `edits.batched_rank_one` (a hook adding v_r (u_rᵀ x) per row). A REP adaptor
(a per-case module on the down_proj input) plugs in by implementing the same two methods.
"""
from __future__ import annotations

import contextlib
from typing import ContextManager, Protocol, Sequence, runtime_checkable

import torch

from ..edits import RankOneEdit, applied, batched_rank_one
from ..errors import ConfigError


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
                                          f"{tuple(e.v.shape)}; down_proj is {linear.out_features}x{linear.in_features}")
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


def as_edit_batch(model, arch, edits, n_cases: int, device) -> EditBatch:
    """Accept an EditBatch, a list of RankOneEdit/None (one per case), or None (no edits)."""
    if edits is None:
        batch = NoEdit(n_cases)
    elif isinstance(edits, EditBatch):
        batch = edits
    else:
        batch = RankOneEditBatch(model, arch, edits, device)
    if len(batch) != n_cases:
        raise ConfigError(f"{len(batch)} edits given for {n_cases} cases")
    return batch
