"""Applying REP adaptors: one adaptor per batch, one per row, and together with ROME's rank-one edit."""
from __future__ import annotations

import pytest
import torch

from robustedit.edits import RankOneEdit, applied, batched_rank_one
from robustedit.errors import ConfigError
from robustedit.hooks import capture_input
from robustedit.models.arch import Architecture
from robustedit.rep import (Adaptor, AdaptorConfig, RepEditBatch, adaptor_hook, adaptor_state, batched_adaptor_forward,
                            batched_adaptors, init_params, stack_states)
from robustedit.rep.adaptor import adaptor_forward

LAYER = 1
CFG = AdaptorConfig(dropout=0.0, threshold=0.5)


def trained_like(d, seed, cfg=CFG):
    """An adaptor with nonzero B and a gate open at some positions and shut at others."""
    g = torch.Generator().manual_seed(seed)
    p = init_params(d, cfg, g)
    p["lora_B"] = torch.randn(d, cfg.rank, generator=g) * 0.2
    p["gate_w2"] = p["gate_w2"] * 20  # spread the gate so that g > 0.5 is mixed
    return p


def down_proj(model):
    return model.model.layers[LAYER].mlp.down_proj


def test_batched_forward_equals_per_case_forward():
    d = 48
    params = [trained_like(d, s) for s in range(3)]
    stacked, cfg = stack_states([adaptor_state(p, CFG) for p in params])
    x = torch.randn(5, 7, d)
    rows = torch.tensor([2, 0, 1, 2, 0])
    out = batched_adaptor_forward(stacked, cfg, x, rows)
    opened = 0
    for b, c in enumerate(rows.tolist()):
        want = adaptor_forward(params[c], CFG, x[b], "test")
        torch.testing.assert_close(out[b], want, rtol=1e-5, atol=1e-6)
        opened += int((want - x[b]).abs().amax(-1).gt(0).sum())
    assert 0 < opened < 5 * 7  # gates both open and shut somewhere: the comparison covers both
    torch.testing.assert_close(batched_adaptor_forward(stacked, cfg, x, rows, mode="train"),
                               torch.stack([adaptor_forward(params[c], CFG, x[b], "train")
                                            for b, c in enumerate(rows.tolist())]),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="row_to_case"):
        batched_adaptor_forward(stacked, cfg, x, rows[:3])


def test_missing_adaptor_is_identity_row():
    d = 16
    stacked, cfg = stack_states([None, adaptor_state(trained_like(d, 0), CFG)])
    x = torch.randn(2, 3, d)
    out = batched_adaptor_forward(stacked, cfg, x, torch.tensor([0, 1]))
    assert torch.equal(out[0], x[0])


def test_per_row_adaptors_in_the_model_equal_one_adaptor_per_forward(llama_tok, tiny_llama_model):
    model, dp = tiny_llama_model, down_proj(tiny_llama_model)
    d = dp.in_features
    params = [trained_like(d, s) for s in range(3)]
    stacked, cfg = stack_states([adaptor_state(p, CFG) for p in params])
    texts = ["The mother tongue of Danielle Darrieux is", "Paris is the capital of", "I like", "Hello there, my friend"]
    rows = torch.tensor([1, 0, 2, 1])
    enc = llama_tok(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        base = model(**enc).logits
        with batched_adaptors(dp, stacked, cfg, rows):
            batched = model(**enc).logits
    assert (batched - base).abs().max() > 1e-3  # the adaptors do something
    for b, c in enumerate(rows.tolist()):
        one = llama_tok(texts[b], return_tensors="pt")
        n = one.input_ids.shape[1]
        with torch.no_grad(), adaptor_hook(dp, Adaptor(params[c], CFG)):
            want = model(**one).logits[0]
        torch.testing.assert_close(batched[b, :n], want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("adaptor_first", [True, False])
def test_rank_one_term_sees_the_adapted_input(adaptor_first):
    """out = (W + v uᵀ) · adaptor(x), whichever context is entered first, and equal to ΔW in the weight."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(24, 10, bias=False)
    params = [trained_like(24, s) for s in range(2)]
    stacked, cfg = stack_states([adaptor_state(p, CFG) for p in params])
    u, v = torch.randn(2, 24), torch.randn(2, 10)
    x = torch.randn(2, 5, 24)
    rows = torch.tensor([0, 1])
    with torch.no_grad():
        if adaptor_first:
            with batched_adaptors(lin, stacked, cfg, rows), batched_rank_one(lin, u, v):
                out = lin(x)
        else:
            with batched_rank_one(lin, u, v), batched_adaptors(lin, stacked, cfg, rows):
                out = lin(x)
        for b in range(2):
            xa = adaptor_forward(params[b], CFG, x[b], "test")
            want = xa @ (lin.weight + torch.outer(v[b], u[b])).T
            torch.testing.assert_close(out[b], want, rtol=1e-5, atol=1e-5)
            with applied(lin, RankOneEdit(LAYER, u[b], v[b])), adaptor_hook(lin, Adaptor(params[b], CFG)):
                torch.testing.assert_close(out[b], lin(x[b:b + 1])[0], rtol=1e-5, atol=1e-5)
        # other pre-hooks on the module see the adapted input as well
        with capture_input(lin) as cap, adaptor_hook(lin, Adaptor(params[0], CFG)):
            lin(x[:1])
        torch.testing.assert_close(cap.value[0], adaptor_forward(params[0], CFG, x[0], "test"))


def test_rep_edit_batch_for_rows_equals_for_case(llama_tok, tiny_llama_model):
    model, dp = tiny_llama_model, down_proj(tiny_llama_model)
    arch = Architecture("llama", 4)
    d, h = dp.in_features, dp.out_features
    g = torch.Generator().manual_seed(3)
    edits = [RankOneEdit(LAYER, torch.randn(d, generator=g) / d ** 0.5, torch.randn(h, generator=g)), None,
             RankOneEdit(LAYER, torch.randn(d, generator=g) / d ** 0.5, torch.randn(h, generator=g))]
    states = [adaptor_state(trained_like(d, 0), CFG), adaptor_state(trained_like(d, 1), CFG), None]
    batch = RepEditBatch(model, arch, LAYER, edits, states, device="cpu")
    assert len(batch) == 3
    texts = ["The mother tongue of Danielle Darrieux is", "Paris is the capital of", "I like it", "Hello there"]
    rows = torch.tensor([0, 1, 2, 0])
    enc = llama_tok(texts, return_tensors="pt", padding=True)
    w0 = dp.weight.detach().clone()
    with torch.no_grad():
        with batch.for_rows(rows):
            batched = model(**enc).logits
        for b, c in enumerate(rows.tolist()):
            one = llama_tok(texts[b], return_tensors="pt")
            with batch.for_case(c):
                want = model(**one).logits[0]
            torch.testing.assert_close(batched[b, :one.input_ids.shape[1]], want, rtol=1e-4, atol=1e-4)
    assert torch.equal(dp.weight, w0)  # ROME's ΔW restored bit-for-bit


def test_eval_dropout_hook_needs_generator():
    lin = torch.nn.Linear(16, 4)
    cfg = AdaptorConfig(eval_dropout=True)
    ad = Adaptor(trained_like(16, 0, cfg), cfg)
    with pytest.raises(ConfigError, match="Generator"), adaptor_hook(lin, ad):
        lin(torch.randn(1, 2, 16))
    with adaptor_hook(lin, ad, generator=torch.Generator().manual_seed(0)):
        a = lin(torch.ones(1, 2, 16))
    with adaptor_hook(lin, ad, generator=torch.Generator().manual_seed(0)):
        b = lin(torch.ones(1, 2, 16))
    assert torch.equal(a, b)


def test_stack_rejects_mixed_configs():
    a = adaptor_state(trained_like(16, 0), CFG)
    b = adaptor_state(trained_like(16, 1, AdaptorConfig(dropout=0.0, threshold=0.7)),
                      AdaptorConfig(dropout=0.0, threshold=0.7))
    with pytest.raises(ConfigError, match="different"):
        stack_states([a, b])
    with pytest.raises(ConfigError, match="in_features"):
        stack_states([a], key_dim=32)
