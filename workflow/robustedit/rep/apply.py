"""Apply REP adaptors at test time: one adaptor for a whole batch, or one per batch row.

Hook order. In the reference ROME's ΔW is in the weight and the adaptor replaces the down_proj input,
so the layer computes  out = (W + v uᵀ) · adaptor(x).  Our adaptor pre-hooks are registered with
`hooks.edit_input(..., prepend=True)`: they run before every other forward pre-hook on down_proj,
whatever the order in which the contexts were entered. Hence `edits.batched_rank_one` (whose pre-hook
records the input) sees the adapted input too, and  W x' + v (uᵀ x')  with x' = adaptor(x)  equals
applying ΔW to the weight. (A consequence: a `capture_input` on down_proj inside these contexts
records adapted keys.)
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..edits import RankOneEdit, RankOneEditBatch
from ..errors import ConfigError
from ..hooks import edit_input
from .adaptor import (AdaptorConfig, _check_mode, adaptor_forward, check_params, dropout, load_adaptor_state,
                      uses_dropout)


@contextlib.contextmanager
def adaptor_hook(down_proj: nn.Module, adaptor, threshold: float | None = None,
                 generator: torch.Generator | None = None) -> Iterator[None]:
    """Replace the down_proj input by adaptor(x, "test") at every position of every row.
    `adaptor`: an `Adaptor` module. `generator` is needed only with `eval_dropout`."""
    with edit_input(down_proj, lambda x: adaptor(x, "test", generator=generator, threshold=threshold),
                    prepend=True):
        yield


def stack_states(states: Sequence[dict | None], key_dim: int | None = None,
                 device: torch.device | str = "cpu") -> tuple[dict[str, torch.Tensor], AdaptorConfig]:
    """Stack adaptor states along a leading case dimension. `None` (a case without adaptor) becomes an
    identity row (all parameters zero; B = 0 makes it the identity). All adaptors must
    share one configuration."""
    loaded = [None if s is None else load_adaptor_state(s) for s in states]
    present = [x for x in loaded if x is not None]
    if not present:
        raise ConfigError("stack_states needs at least one adaptor state")
    cfg = present[0][1]
    d = check_params(present[0][0], cfg)
    if key_dim is not None and key_dim != d:
        raise ConfigError(f"adaptor key dim {d} does not match down_proj in_features {key_dim}")
    for i, x in enumerate(loaded):
        if x is not None and (x[1] != cfg or check_params(x[0], x[1]) != d):
            raise ConfigError(f"adaptor state {i} has config/shape different from state 0; cannot stack")
    ref = present[0][0]
    stacked = {k: torch.stack([torch.zeros_like(ref[k]) if x is None else x[0][k] for x in loaded]).to(device)
               for k in ref}
    return stacked, cfg


def batched_adaptor_forward(stacked: dict[str, torch.Tensor], cfg: AdaptorConfig, x: torch.Tensor,
                            row_to_case: torch.Tensor, mode: str = "test", generator: torch.Generator | None = None,
                            threshold: float | None = None) -> torch.Tensor:
    """Row b of x [B, ..., D] adapted by the adaptor of case row_to_case[b]. Gathers each row's parameters
    (memory B·(2rD + HD) floats) and contracts with einsum."""
    _check_mode(mode)
    if row_to_case.shape != (x.shape[0],):
        raise ConfigError(f"row_to_case has shape {tuple(row_to_case.shape)} for a batch of {x.shape[0]} rows")
    dtype = stacked["lora_A"].dtype
    idx = row_to_case.to(stacked["lora_A"].device)
    xin = x.reshape(x.shape[0], -1, x.shape[-1]).to(dtype)  # [B, S, D]
    xd = dropout(xin, cfg.dropout, generator) if uses_dropout(cfg, mode) else xin
    h = torch.einsum("bsd,brd->bsr", xd, stacked["lora_A"][idx])
    delta = torch.einsum("bsr,bdr->bsd", h, stacked["lora_B"][idx]) * cfg.scaling
    if cfg.gate:
        hid = F.gelu(torch.einsum("bsd,bhd->bsh", xin, stacked["gate_w1"][idx]) + stacked["gate_b1"][idx][:, None])
        logit = torch.einsum("bsh,bh->bs", hid, stacked["gate_w2"][idx][:, 0]) + stacked["gate_b2"][idx]
        g = torch.sigmoid(logit).unsqueeze(-1)
        if mode == "test":
            g = (g > (cfg.threshold if threshold is None else threshold)).to(dtype)
        delta = delta * g
    return (xin + delta).reshape(x.shape).to(x.dtype)


@contextlib.contextmanager
def batched_adaptors(down_proj: nn.Module, stacked: dict[str, torch.Tensor], cfg: AdaptorConfig,
                     row_to_case: torch.Tensor, threshold: float | None = None,
                     generator: torch.Generator | None = None) -> Iterator[None]:
    """Each batch row's down_proj input goes through its own case's adaptor (test mode)."""
    if check_params(stacked, cfg, stacked=True) != down_proj.in_features:
        raise ConfigError(f"stacked adaptors do not match down_proj in_features {down_proj.in_features}")
    fn = lambda x: batched_adaptor_forward(stacked, cfg, x, row_to_case, "test", generator, threshold)  # noqa: E731
    with edit_input(down_proj, fn, prepend=True):
        yield


class RepEditBatch:
    """edits.EditBatch for ROME+REP: per case a RankOneEdit (or None) and an adaptor state (or None),
    all on one layer. for_case: ΔW in the weight + adaptor hook; for_rows: batched rank-one + per-row
    adaptors. Both compute (W + v uᵀ) · adaptor(x)."""

    def __init__(self, model, arch, layer: int, edits: Sequence[RankOneEdit | None],
                 adaptor_states: Sequence[dict | None], device, threshold: float | None = None,
                 generator: torch.Generator | None = None):
        if len(edits) != len(adaptor_states):
            raise ConfigError(f"{len(edits)} ROME edits but {len(adaptor_states)} adaptors")
        for i, e in enumerate(edits):
            if e is not None and e.layer != layer:
                raise ConfigError(f"edit {i} is on layer {e.layer}; REP adaptors sit on layer {layer}")
        self.down_proj = arch.module(model, "down_proj", layer)
        self.rank_one = RankOneEditBatch(model, arch, edits, device)
        self.stacked, self.cfg = stack_states(adaptor_states, self.down_proj.in_features, device)
        self.has_adaptor = [s is not None for s in adaptor_states]
        self.threshold, self.generator, self.device = threshold, generator, device

    def __len__(self) -> int:
        return len(self.has_adaptor)

    @contextlib.contextmanager
    def for_case(self, case_index: int):
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.rank_one.for_case(case_index))
            if self.has_adaptor[case_index]:
                params = {k: v[case_index] for k, v in self.stacked.items()}
                fn = lambda x: adaptor_forward(params, self.cfg, x, "test", self.generator, self.threshold)  # noqa: E731
                stack.enter_context(edit_input(self.down_proj, fn, prepend=True))
            yield

    @contextlib.contextmanager
    def for_rows(self, case_index_per_row: torch.Tensor):
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.rank_one.for_rows(case_index_per_row))
            stack.enter_context(batched_adaptors(self.down_proj, self.stacked, self.cfg,
                                                 case_index_per_row.to(self.device), self.threshold, self.generator))
            yield
