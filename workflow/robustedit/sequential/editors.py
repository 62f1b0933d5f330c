"""Sequential editors: each edit is computed on the model as already edited, then written into its weights.

    editor = SEQUENTIAL_EDITORS["rome"](tok=tok, arch=arch, templates=templates, hp=hp, device="cpu",
                                        layers=(4,), moments={4: C})
    with down_proj_restored(model, arch, editor.layers):  # robustedit.edits
        for request in requests:
            editor.apply(model, [request])

- rome: ROME's rank-one update (robustedit.rome.execute_rome_detailed) of the model as edited so far: keys,
  v* and the update all read the current weights ("true sequential" ROME, EasyEdit's sequential_edit).
- memit: z* from ROME's v* objective at the last layer, spread over the layers (robustedit.memit), on the
  current model.
- alphaedit: MEMIT with AlphaEdit's null-space solver. After each batch, every layer's K Kᵀ joins K_p K_pᵀ
  (the reference's cache_c), so later edits are regularised towards keeping the earlier ones.
One editor holds one run's state (AlphaEdit's K_p K_pᵀ): make a new one per sequence.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch

from ..edits import add_to_down_proj, apply_rank_one
from ..errors import ConfigError
from ..memit import alphaedit_solver, check_layers, memit_solver, null_space_projector, residual_targets, spread_update
from ..rome.compute_u import MomentSolver
from ..rome.execute import execute_rome_detailed
from ..rome.hparams import ROMEHyperParams


def _write(model, arch, deltas: Mapping[int, torch.Tensor]) -> None:
    for layer, delta in deltas.items():
        add_to_down_proj(model, arch, layer, delta)


@dataclass
class SequentialEditor:
    tok: object
    arch: object
    templates: Sequence[str]
    hp: ROMEHyperParams
    device: str | torch.device
    layers: tuple[int, ...]
    moments: Mapping[int, torch.Tensor]  # E[kkᵀ] per layer (the `stats` stage's mom2.pt)

    def apply(self, model, requests: Sequence[dict]) -> dict:
        """Edit the model in place with `requests` (one batch); returns per-batch diagnostics."""
        raise NotImplementedError


@dataclass
class ROMESequential(SequentialEditor):
    def __post_init__(self):
        if len(self.layers) != 1:
            raise ConfigError(f"sequential ROME edits one layer, got layers={list(self.layers)}")
        (layer,) = self.layers
        # factorised once: C does not change as the weights do (the keys' statistics are the unedited model's,
        # as in every sequential ROME reference)
        self._solver = MomentSolver(self.moments[layer], self.device) if self.hp.mom2_adjustment else None

    def apply(self, model, requests: Sequence[dict]) -> dict:
        (layer,) = self.layers
        losses = []
        for request in requests:  # one at a time: each edit is computed on the model the earlier ones wrote
            ((edit, vres),) = execute_rome_detailed(model, self.tok, self.arch, [request], self._solver,
                                                    self.templates, self.hp, self.device, layer)
            apply_rank_one(self.arch.module(model, "down_proj", layer), edit)
            losses.append(vres.losses[-1])
        return {"v_loss": losses}


@dataclass
class MEMITSequential(SequentialEditor):
    mom2_update_weight: float = 15000.0  # MEMIT's λ for Llama-like models (kmeng01/memit, EasyEdit)

    def __post_init__(self):
        check_layers(self.arch, self.layers)  # a family MEMIT does not support fails before any edit

    def _solver(self):
        return memit_solver(self.moments, self.mom2_update_weight)

    def _after(self, keys: Mapping[int, torch.Tensor]) -> None:
        pass

    def apply(self, model, requests: Sequence[dict]) -> dict:
        z_star, vres = residual_targets(model, self.tok, self.arch, requests, self.templates, self.hp,
                                        self.layers[-1], self.device)
        keys: dict[int, torch.Tensor] = {}
        solve = self._solver()

        def recording(layer: int, K: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
            keys[layer] = K  # the keys each layer's update used (AlphaEdit's cache_c adds their K Kᵀ)
            return solve(layer, K, R)

        deltas = spread_update(model, self.tok, self.arch, requests, z_star, self.layers, self.templates, recording,
                               self.device, self.hp.key_batch_rows)
        _write(model, self.arch, deltas)
        self._after(keys)
        return {"v_loss": [v.losses[-1] for v in vres]}


@dataclass
class AlphaEditSequential(MEMITSequential):
    nullspace_threshold: float = 2e-2  # eigenvalues of C below this span AlphaEdit's null space (reference)
    l2: float = 10.0  # the official repository's L2 (EasyEdit's Llama-3 config uses 1)
    previous: dict[int, torch.Tensor] = field(default_factory=dict)  # K_p K_pᵀ per layer

    def __post_init__(self):
        super().__post_init__()
        self._projectors = {layer: null_space_projector(self.moments[layer], self.nullspace_threshold)
                            for layer in self.layers}

    def _solver(self):
        return alphaedit_solver(self._projectors, self.l2, self.previous or None)

    def _after(self, keys: Mapping[int, torch.Tensor]) -> None:
        for layer, K in keys.items():
            self.previous[layer] = self.previous.get(layer, 0) + (K @ K.T).cpu()


SEQUENTIAL_EDITORS: dict[str, type[SequentialEditor]] = {
    "rome": ROMESequential, "memit": MEMITSequential, "alphaedit": AlphaEditSequential}
