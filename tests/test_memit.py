"""MEMIT and AlphaEdit's update (robustedit.memit) on a tiny random Llama in float64, against a plain
reference written from the papers' equations (one forward per prompt, explicit inverses), and against ROME
on one layer and one request."""
from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from conftest import tiny_llama
from test_rome_core import CASES, spd
from robustedit.errors import ConfigError
from robustedit.hooks import capture_input
from robustedit.memit import (alphaedit_solver, memit_solver, null_space_projector, residual_targets,
                              spread_update, template_weights)
from robustedit.models.arch import Architecture
from robustedit.rome import ROMEHyperParams, execute_rome_detailed
from robustedit.rome.prompts import templated_prompt
from robustedit.tokens import encode_with_span

ARCH = Architecture("llama", 4)
LAYERS = [1, 2]
TEMPLATES = ["{}", "The man said. {}", "Because it rained all day. {}"]
REQUESTS = CASES  # test_rome_core's three requests
# a tiny random model's v_init is tiny: small steps and a loose clamp let v* move (as tests/test_rome_core.py)
HP = ROMEHyperParams(v_num_grad_steps=4, v_lr=0.05, v_weight_decay=1e-6, clamp_norm_factor=1000.0,
                     early_stop_loss=None, context_template_length_params=((5, 2),),
                     template_prefixes=("The", "Because"))


@pytest.fixture(scope="module")
def model(llama_tok):
    return tiny_llama(len(llama_tok), seed=7).double()


# ---------------------------------------------------------------- plain reference
def subject_row(tok, template: str, req: dict) -> tuple[torch.Tensor, int]:
    text, s, e = templated_prompt(template, req["prompt"], req["subject"])
    ids, index = encode_with_span(tok, text, s, e)
    return torch.tensor([ids]), index


def plain_key(model, tok, layer: int, template: str, req: dict) -> torch.Tensor:
    ids, index = subject_row(tok, template, req)
    with torch.no_grad(), capture_input(model.model.layers[layer].mlp.down_proj) as cap:
        model(input_ids=ids)
    return cap.value[0, index].double()


def plain_block_output(model, tok, layer: int, req: dict) -> torch.Tensor:
    ids, index = subject_row(tok, "{}", req)
    with torch.no_grad():
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
    return hidden[layer + 1][0, index].double()  # hidden_states[l + 1]: block l's output (not the last block)


def plain_spread(model, tok, z_star, layers, templates, update) -> dict:
    """MEMIT's loop, one forward per prompt, on a copy of the model."""
    model = copy.deepcopy(model)
    n_bare, n_rest = 1, len(templates) - 1
    deltas = {}
    for i, layer in enumerate(layers):
        cols = []
        for req in REQUESTS:
            keys = [plain_key(model, tok, layer, t, req) for t in templates]
            rest = sum(keys[1:]) / n_rest if n_rest else None
            cols.append(keys[0] if rest is None else 0.5 * keys[0] / n_bare + 0.5 * rest)
        K = torch.stack(cols, 1)
        h = torch.stack([plain_block_output(model, tok, layers[-1], req) for req in REQUESTS])
        R = ((z_star - h) / (len(layers) - i)).T
        deltas[layer] = update(layer, K, R)
        with torch.no_grad():
            model.model.layers[layer].mlp.down_proj.weight += deltas[layer]
    return deltas


def z_targets(model, tok, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.stack([plain_block_output(model, tok, LAYERS[-1], r) for r in REQUESTS])
    return h + 0.5 * torch.randn(h.shape, generator=g, dtype=torch.float64)


def test_template_weights_halve_the_bare_prompt():
    assert template_weights(1).tolist() == [1.0]
    assert template_weights(3).tolist() == [0.5, 0.25, 0.25] and float(template_weights(21).sum()) == 1.0


def test_memit_equals_the_plain_reference_and_restores_the_weights(llama_tok, model):
    D = model.config.intermediate_size
    moments = {layer: spd(D, layer) for layer in LAYERS}
    lam = 3.0
    z_star = z_targets(model, llama_tok)
    before = [model.model.layers[x].mlp.down_proj.weight.clone() for x in LAYERS]
    got = spread_update(model, llama_tok, ARCH, REQUESTS, z_star, LAYERS, TEMPLATES, memit_solver(moments, lam), "cpu")
    assert all(torch.equal(b, model.model.layers[x].mlp.down_proj.weight) for b, x in zip(before, LAYERS))

    def plain_update(layer, K, R):
        return R @ K.T @ torch.linalg.inv(lam * moments[layer] + K @ K.T)
    want = plain_spread(model, llama_tok, z_star, LAYERS, TEMPLATES, plain_update)
    for layer in LAYERS:
        assert torch.allclose(got[layer], want[layer], rtol=1e-7, atol=1e-10), layer
    assert got[LAYERS[0]].abs().max() > 0 and got[LAYERS[1]].abs().max() > 0


def test_alphaedit_equals_the_plain_reference_and_leaves_preserved_keys_alone(llama_tok, model):
    D = model.config.intermediate_size
    moments = {layer: spd(D, 10 + layer) for layer in LAYERS}
    # a threshold between the eigenvalues: half of key space is "preserved", half is the null space
    thresholds = {layer: float(torch.linalg.eigvalsh(C)[D // 2]) for layer, C in moments.items()}
    P = {layer: null_space_projector(C, thresholds[layer]) for layer, C in moments.items()}
    z_star = z_targets(model, llama_tok, seed=1)
    got = spread_update(model, llama_tok, ARCH, REQUESTS, z_star, LAYERS, TEMPLATES, alphaedit_solver(P, 1.0), "cpu")

    def plain_update(layer, K, R):
        Pl = P[layer]
        return (torch.linalg.inv(Pl @ K @ K.T + torch.eye(D, dtype=torch.float64)) @ Pl @ K @ R.T).T
    want = plain_spread(model, llama_tok, z_star, LAYERS, TEMPLATES, plain_update)
    for layer in LAYERS:
        assert torch.allclose(got[layer], want[layer], rtol=1e-7, atol=1e-10), layer
        eigvals, eigvecs = torch.linalg.eigh(moments[layer])
        preserved = eigvecs[:, eigvals >= thresholds[layer]]  # directions the preserved keys span
        assert P[layer].shape == (D, D) and torch.allclose(P[layer] @ P[layer], P[layer], atol=1e-10)
        assert (got[layer] @ preserved).abs().max() < 1e-10 * got[layer].abs().max()  # Δ k0 = 0 there
        assert got[layer].abs().max() > 0


def test_one_memit_layer_and_one_request_is_rome_scaled_by_s_over_lambda_plus_s(llama_tok, model):
    """With the bare template only: Δ_MEMIT = (C⁻¹k)ᵀ-direction update δ (C⁻¹k)ᵀ / (λ + s), Δ_ROME the same over s
    (s = kᵀC⁻¹k), from the same v* (δ): MEMIT's λC regularises the update ROME makes exact."""
    layer, req, lam = 2, REQUESTS[0], 2.0
    C = spd(model.config.intermediate_size, 3)
    hp = dataclasses.replace(HP, context_template_length_params=())
    (rome_edit, rome_v), = execute_rome_detailed(model, llama_tok, ARCH, [req], C, ["{}"], hp, "cpu", layer)
    z_star, (vres,) = residual_targets(model, llama_tok, ARCH, [req], ["{}"], hp, layer, "cpu")
    assert torch.equal(vres.delta, rome_v.delta)  # the same v* objective at the same layer
    delta = spread_update(model, llama_tok, ARCH, [req], z_star, [layer], ["{}"], memit_solver({layer: C}, lam),
                          "cpu")[layer]
    k = plain_key(model, llama_tok, layer, "{}", req)
    s = float(k @ torch.linalg.solve(C, k))
    assert torch.allclose(delta * (lam + s) / s, rome_edit.delta().double(), rtol=1e-6, atol=1e-12)


def test_bad_layers_and_families_are_refused(llama_tok, model):
    z = torch.zeros(len(REQUESTS), model.config.hidden_size, dtype=torch.float64)
    solver = memit_solver({}, 1.0)
    for layers, message in (([2, 1], "increasing"), ([], "non-empty"), ([1, 9], "layer")):
        with pytest.raises(ConfigError, match=message):
            spread_update(model, llama_tok, ARCH, REQUESTS, z, layers, TEMPLATES, solver, "cpu")
    with pytest.raises(ConfigError, match="gemma3"):
        spread_update(model, llama_tok, Architecture("gemma3", 4), REQUESTS, z, [1], TEMPLATES, solver, "cpu")
