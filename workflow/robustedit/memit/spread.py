"""MEMIT and AlphaEdit: a batch of edits written into a range of layers' down-projections.

    z_star, vres = residual_targets(model, tok, arch, requests, templates, hp, layers[-1], device)
    deltas = spread_update(model, tok, arch, requests, z_star, layers, templates, memit_solver(moments, 15000), device)

MEMIT (Meng et al. 2023; kmeng01/memit `memit_main.py`), for requests r = 1..B and layers l_1 < ... < l_n:
1. **Targets** z*_r: ROME's v* objective (robustedit.rome.compute_v) with δ_r added at the last layer l_n,
   z*_r = h_{l_n}(prompt_r) + δ_r, h the block's output at the subject's last token of the bare prompt.
   compute_v adds δ to the MLP's output; a Llama-like block adds that output to the residual stream
   unchanged, so it is MEMIT's δ on the block output. A family with a norm after the MLP (gemma3) is refused.
2. **Spread**, layer by layer on the model as updated so far (i = 1..n):
       K_i = keys at l_i [D, B]: per request the down_proj input at the subject's last token, averaged over
             the context templates as MEMIT's compute_ks does (the bare template, the first, weighs 1/2 and
             the others share 1/2; one template: itself)
       R_i = (z* − h_{l_n}) / (n − i + 1) [H, B], h_{l_n} read on the current model
       Δ_i = solver(l_i, K_i, R_i) [H, D];  W_{l_i} ← W_{l_i} + Δ_i
   MEMIT's solver: Δ = R Kᵀ (λ C + K Kᵀ)⁻¹, with C = E[kkᵀ] of layer l_i (the `stats` stage) and λ MEMIT's
   mom2_update_weight, solved in float64 (`torch.linalg.solve`, no inverse).
   AlphaEdit's solver (Fang et al. 2025): Δ = (P (K Kᵀ + K_p K_pᵀ) + L2·I)⁻¹ P K Rᵀ, transposed to [H, D],
   with P the projector onto the eigenvectors of C whose eigenvalue is below a threshold (what no
   preserved key spans) and K_p K_pᵀ the earlier edits' keys (zero for one batch).
The weights are restored before spread_update returns; the deltas are the edit.
One MEMIT layer and one request equal ROME up to documented factors (tests/test_memit.py): with the bare
template only, Δ_MEMIT = Δ_ROME · s / (λ + s), s = kᵀC⁻¹k (Sherman-Morrison).
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch

from ..batching import pad_id_of, right_pad
from ..edits import add_to_down_proj, down_proj_restored
from ..errors import ConfigError
from ..hooks import capture_output, run_until, stop_after
from ..rome.compute_u import left_vectors, mean_template_keys
from ..rome.compute_v import VResult, compute_v
from ..rome.hparams import ROMEHyperParams
from ..rome.prompts import bare_rows, read_rows, templated_rows, where_of

# families whose MLP output joins the residual stream unchanged (a δ there is a δ on the block output)
RESIDUAL_MLP_FAMILIES = ("llama", "mistral", "custom")
Solver = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]  # (layer, K [D, B], R [H, B]) -> Δ [H, D]


def check_layers(arch, layers: Sequence[int]) -> list[int]:
    layers = [int(x) for x in layers]
    if not layers or layers != sorted(set(layers)):
        raise ConfigError(f"MEMIT layers {layers} must be a non-empty increasing list")
    for layer in layers:
        arch.check_layer(layer)
    if arch.family_name not in RESIDUAL_MLP_FAMILIES:
        raise ConfigError(f"MEMIT on family {arch.family_name!r}: its MLP output is normalised before the residual "
                          f"stream, so ROME's δ is not MEMIT's; supported: {RESIDUAL_MLP_FAMILIES}")
    return layers


@torch.no_grad()
def block_outputs(model, tok, arch, layer: int, requests: Sequence[dict], device) -> torch.Tensor:
    """h_layer at each request's subject-last token of the bare prompt: [B, H] in float64."""
    rows = bare_rows(tok, requests)
    ids, mask = right_pad([r.ids for r in rows], pad_id_of(tok), device)
    block = arch.module(model, "layer", layer)
    with capture_output(block) as out, stop_after(block):
        run_until(model, input_ids=ids, attention_mask=mask, use_cache=False)
    index = torch.tensor([r.index for r in rows], device=out.value.device)
    return out.value[torch.arange(len(rows), device=index.device), index].to(torch.float64)


def template_weights(n_templates: int) -> torch.Tensor:
    """MEMIT's key average: the bare template 1/2, the other templates 1/2 together (one template: 1)."""
    if n_templates == 1:
        return torch.ones(1, dtype=torch.float64)
    return torch.tensor([0.5] + [0.5 / (n_templates - 1)] * (n_templates - 1), dtype=torch.float64)


@torch.no_grad()
def memit_keys(model, tok, arch, layer: int, requests: Sequence[dict], templates: Sequence[str], device,
               batch_rows: int = 128) -> torch.Tensor:
    """K at `layer`: [D, B] float64, each column the weighted template mean of a request's keys."""
    rows = [row for r in requests for row in templated_rows(tok, r["prompt"], r["subject"], templates, where_of(r))]
    keys = read_rows(model, tok, arch, layer, rows, device, batch_rows).to(torch.float64)
    keys = keys.view(len(requests), len(templates), -1)
    return torch.einsum("btd,t->db", keys, template_weights(len(templates)).to(keys.device))


def residual_targets(model, tok, arch, requests: Sequence[dict], templates: Sequence[str], hp: ROMEHyperParams,
                     layer: int, device) -> tuple[torch.Tensor, list[VResult]]:
    """z* [B, H] float64 at `layer` (MEMIT's last layer) and each request's v* diagnostics."""
    vres: list[VResult] = []
    for lo in range(0, len(requests), hp.batch_cases):
        chunk = list(requests[lo: lo + hp.batch_cases])
        # compute_v's right vector needs some u with k*·u != 0; MEMIT uses only δ
        u = left_vectors(mean_template_keys(model, tok, arch, layer, chunk, templates[:1], device), None)
        vres += compute_v(model, tok, arch, layer, chunk, u, templates, hp, device)
    h = block_outputs(model, tok, arch, layer, requests, device)
    return h + torch.stack([r.delta.to(torch.float64) for r in vres]).to(h.device), vres


def memit_solver(moments: Mapping[int, torch.Tensor], mom2_update_weight: float) -> Solver:
    """MEMIT's Δ = R Kᵀ (λ C + K Kᵀ)⁻¹ with each layer's second moment C (float64 solve)."""
    def solve(layer: int, K: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        C = moments[layer].to(K.device, torch.float64)
        adj_k = torch.linalg.solve(mom2_update_weight * C + K @ K.T, K)  # [D, B]
        return R @ adj_k.T
    return solve


def null_space_projector(C: torch.Tensor, threshold: float) -> torch.Tensor:
    """AlphaEdit's P = U_0 U_0ᵀ over the eigenvectors of C (symmetric PSD) with eigenvalue < threshold."""
    eigvals, eigvecs = torch.linalg.eigh(C.to(torch.float64))
    U0 = eigvecs[:, eigvals < threshold]
    return U0 @ U0.T


def alphaedit_solver(projectors: Mapping[int, torch.Tensor], l2: float,
                     previous: Mapping[int, torch.Tensor] | None = None) -> Solver:
    """AlphaEdit's Δ = ((P (K Kᵀ + K_p K_pᵀ) + L2·I)⁻¹ P K Rᵀ)ᵀ; previous[l] = K_p K_pᵀ of earlier edits."""
    def solve(layer: int, K: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        P = projectors[layer].to(K.device, torch.float64)
        KK = K @ K.T + (previous[layer].to(K.device, torch.float64) if previous is not None else 0)
        eye = torch.eye(K.shape[0], dtype=torch.float64, device=K.device)
        return torch.linalg.solve(P @ KK + l2 * eye, P @ K @ R.T).T
    return solve


def spread_update(model, tok, arch, requests: Sequence[dict], z_star: torch.Tensor, layers: Sequence[int],
                  templates: Sequence[str], solver: Solver, device, batch_rows: int = 128) -> dict[int, torch.Tensor]:
    """Δ per layer [H, D] float64 that writes z* into `layers` (MEMIT's update loop); the model comes back
    with its original weights, bit for bit."""
    layers = check_layers(arch, layers)
    deltas: dict[int, torch.Tensor] = {}
    with down_proj_restored(model, arch, layers):
        for i, layer in enumerate(layers):
            K = memit_keys(model, tok, arch, layer, requests, templates, device, batch_rows)
            h = block_outputs(model, tok, arch, layers[-1], requests, device)
            R = ((z_star.to(h.device) - h) / (len(layers) - i)).T  # [H, B]: spread over the layers left
            deltas[layer] = solver(layer, K, R.to(K.device))
            add_to_down_proj(model, arch, layer, deltas[layer])
    return deltas
