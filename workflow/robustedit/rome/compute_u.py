"""ROME's left vector u (Meng et al. 2022, `rome/compute_u.py`; EasyEdit's ROME). The key k̄ is the mean,
over the context templates, of the edit layer's down_proj input at the subject's last token;
u = C⁻¹ k̄ / ‖C⁻¹ k̄‖ with C ROME's uncentred second moment E[k kᵀ] of the keys (a float64 Cholesky
solve, no explicit inverse); without the second-moment adjustment (EasyEdit's yaml default)
u = k̄ / ‖k̄‖. The rows and their subject positions come from prompts.templated_rows.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..errors import ConfigError
from .prompts import PromptRow, read_rows, templated_rows, where_of


class MomentSolver:
    """Solves C x = k for many k with one float64 Cholesky factorisation of C.

    The factor lives on `device` (default: C's device; pass the run's device when C was loaded on
    the CPU, so the solves run there). `solve` returns on the device of its input."""

    def __init__(self, C: torch.Tensor, device: str | torch.device | None = None):
        if C.ndim != 2 or C.shape[0] != C.shape[1]:
            raise ConfigError(f"second moment must be square, got shape {tuple(C.shape)}")
        C64 = C.to(device=C.device if device is None else device, dtype=torch.float64)
        factor, info = torch.linalg.cholesky_ex(C64)
        if int(info) != 0:
            raise ConfigError(
                "the second moment C is not positive definite (too few tokens for its dimension?); "
                "collect statistics over more documents"
            )
        self.factor = factor

    @property
    def dim(self) -> int:
        return self.factor.shape[0]

    def solve(self, k: torch.Tensor) -> torch.Tensor:
        """C⁻¹ k for k of shape [B, D] (float64, on k's device)."""
        k64 = k.to(self.factor.device, torch.float64)
        return torch.cholesky_solve(k64.T, self.factor).T.to(k.device)


def mean_template_keys(model, tok, arch, layer: int, requests: Sequence[dict], templates: Sequence[str],
                       device, batch_rows: int = 128) -> torch.Tensor:
    """k̄ per request: [B, key_dim] float64, averaged over the templates (one batched pass for all requests)."""
    rows: list[PromptRow] = []
    for r in requests:
        rows += templated_rows(tok, r["prompt"], r["subject"], templates, where_of(r))
    keys = read_rows(model, tok, arch, layer, rows, device, batch_rows)
    return keys.to(torch.float64).view(len(requests), len(templates), -1).mean(1)


def left_vectors(kbar: torch.Tensor, solver: MomentSolver | None) -> torch.Tensor:
    """u = C⁻¹k̄/‖C⁻¹k̄‖ (or k̄/‖k̄‖ when solver is None), in float64."""
    u = kbar.to(torch.float64) if solver is None else solver.solve(kbar)
    return u / u.norm(dim=-1, keepdim=True)


def compute_u(model, tok, arch, layer: int, requests: Sequence[dict], templates: Sequence[str],
              solver: MomentSolver | None, device, batch_rows: int = 128) -> torch.Tensor:
    """Left vectors [B, key_dim] in float64 (callers cast to the working dtype)."""
    kbar = mean_template_keys(model, tok, arch, layer, requests, templates, device, batch_rows)
    if solver is not None and solver.dim != kbar.shape[1]:
        raise ConfigError(f"second moment has dimension {solver.dim}, the layer-{layer} key has {kbar.shape[1]}")
    return left_vectors(kbar, solver)
