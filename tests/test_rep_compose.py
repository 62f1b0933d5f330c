"""Several REP adaptors acting together (robustedit.rep.compose), against a plain sum of single adaptors."""
from __future__ import annotations

import pytest
import torch

from robustedit.errors import ConfigError
from robustedit.rep import (Adaptor, AdaptorConfig, adaptor_forward, adaptor_hook, adaptor_state,
                            composed_adaptor_forward, composed_adaptors, init_params, stack_states)

CFG = AdaptorConfig(dropout=0.0, threshold=0.5)


def trained_like(d, seed, cfg=CFG):
    """Nonzero B and a gate open at some positions and shut at others (as test_rep_apply's)."""
    g = torch.Generator().manual_seed(seed)
    p = init_params(d, cfg, g)
    p["lora_B"] = torch.randn(d, cfg.rank, generator=g) * 0.2
    p["gate_w2"] = p["gate_w2"] * 20
    return p


def plain_sum(params, x):
    """The definition, one adaptor at a time: x + Σ_n (adaptor_n(x) − x)."""
    return x + sum(adaptor_forward(p, CFG, x, "test") - x for p in params)


@pytest.mark.parametrize("chunk", [1, 2, 16])
def test_composed_adaptors_add_every_gated_branch_on_the_same_input(chunk):
    d = 40
    params = [trained_like(d, s) for s in range(5)]
    stacked, cfg = stack_states([adaptor_state(p, CFG) for p in params])
    x = torch.randn(4, 25, d, generator=torch.Generator().manual_seed(0))
    out = composed_adaptor_forward(stacked, cfg, x, chunk=chunk)
    torch.testing.assert_close(out, plain_sum(params, x), rtol=1e-5, atol=1e-5)
    # the gates are mixed: some positions open no gate, some open several
    opened = torch.stack([(adaptor_forward(p, CFG, x, "test") - x).abs().amax(-1) > 0 for p in params]).sum(0)
    assert (opened == 0).any() and (opened >= 2).any()
    # one adaptor: exactly the single test-time adaptor; a threshold override reaches every gate
    one, _ = stack_states([adaptor_state(params[0], CFG)])
    torch.testing.assert_close(composed_adaptor_forward(one, cfg, x), adaptor_forward(params[0], CFG, x, "test"))
    torch.testing.assert_close(composed_adaptor_forward(stacked, cfg, x, threshold=0.8, chunk=chunk),
                               x + sum(adaptor_forward(p, CFG, x, "test", threshold=0.8) - x for p in params),
                               rtol=1e-5, atol=1e-5)


def test_composed_adaptors_in_a_model_equal_the_plain_sum(llama_tok, tiny_llama_model):
    model = tiny_llama_model
    dp = model.model.layers[1].mlp.down_proj
    params = [trained_like(dp.in_features, s) for s in range(3)]
    enc = llama_tok(["The mother tongue of Danielle Darrieux is"], return_tensors="pt")
    seen = []
    with torch.no_grad():
        base = model(**enc).logits
        with composed_adaptors(dp, [adaptor_state(p, CFG) for p in params], "cpu"):
            composed = model(**enc).logits
        handle = dp.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
        model(**enc)
        handle.remove()
        with adaptor_hook(dp, Adaptor(params[0], CFG)):  # one adaptor: the single-edit hook
            single = model(**enc).logits
        with composed_adaptors(dp, [adaptor_state(params[0], CFG)], "cpu"):
            torch.testing.assert_close(model(**enc).logits, single)
        # the reference: down_proj fed the plain sum of the adaptors' outputs, everything else unchanged
        x = seen[0]
        handle = dp.register_forward_pre_hook(lambda _m, args: (plain_sum(params, x),))
        want = model(**enc).logits
        handle.remove()
    assert (composed - base).abs().max() > 1e-4
    torch.testing.assert_close(composed, want, rtol=1e-4, atol=1e-4)
    assert not dp._forward_pre_hooks  # every hook removed


def test_composed_adaptors_refuse_test_time_dropout():
    cfg = AdaptorConfig(eval_dropout=True)
    lin = torch.nn.Linear(16, 4)
    with pytest.raises(ConfigError, match="eval_dropout"), composed_adaptors(
            lin, [adaptor_state(trained_like(16, 0, cfg), cfg)], "cpu"):
        pass
