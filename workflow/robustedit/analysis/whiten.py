"""Key similarity in the space whitened by ROME's second moment C = E[k kᵀ].

ROME's edit responds to a key k through uᵀk with u ∝ C⁻¹k̄, so the geometry that matters is
s(a, b) = aᵀC⁻¹b. With the Cholesky factor C = L Lᵀ (MomentSolver's, float64; C is never inverted),
z = L⁻¹k gives zₐ·z_b = aᵀC⁻¹b. The figures report the cosine in that space,

    s(a, b) = aᵀC⁻¹b / sqrt(aᵀC⁻¹a · bᵀC⁻¹b)   in [-1, 1],

next to the plain cosine of the raw keys.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..rome.compute_u import MomentSolver

TINY = 1e-300  # guards the division for an all-zero key (its similarity is then 0)


def load_solver(path: str | Path, device="cpu") -> MomentSolver:
    """MomentSolver of the `stats` stage's mom2.pt (the uncentred second moment, float64)."""
    C = torch.load(path, weights_only=True, map_location="cpu")["moment"]
    return MomentSolver(C.to(device))


def whiten(solver: MomentSolver, keys: torch.Tensor) -> torch.Tensor:
    """z = L⁻¹k for each row of keys [N, D] (float64, on the solver's device)."""
    if keys.shape[-1] != solver.dim:
        raise ValueError(f"keys have dimension {keys.shape[-1]}, the second moment {solver.dim}")
    k = keys.to(solver.factor.device, torch.float64)
    return torch.linalg.solve_triangular(solver.factor, k.reshape(-1, solver.dim).T, upper=False).T


def unit_rows(z: torch.Tensor) -> torch.Tensor:
    return z / z.norm(dim=-1, keepdim=True).clamp_min(TINY)


def whitened_units(solver: MomentSolver, keys: torch.Tensor) -> torch.Tensor:
    """Unit vectors of the whitened keys: their dot products are the whitened cosines."""
    return unit_rows(whiten(solver, keys))


def whitened_cosine(solver: MomentSolver, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """s(a_i, b_i) row by row (a, b: [N, D]; a [D] broadcasts against every row of b)."""
    za, zb = whitened_units(solver, a), whitened_units(solver, b)
    return (za * zb).sum(-1)


def raw_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Plain cosine of the unwhitened keys, row by row (float64)."""
    a64, b64 = unit_rows(a.to(torch.float64)), unit_rows(b.to(torch.float64))
    return (a64 * b64).sum(-1)
