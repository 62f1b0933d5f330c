"""REP adaptor: definition (against nn.Linear / a plain formula), modes, gate threshold, dropout, state I/O."""
from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn as nn

from robustedit.errors import ConfigError
from robustedit.rep import Adaptor, AdaptorConfig, adaptor_forward, init_params, load_adaptor_state

D = 40
DEFAULT_ADAPTOR = AdaptorConfig()  # frozen dataclass: safe as a shared default


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def randomised(cfg=DEFAULT_ADAPTOR, seed=0, gate_bias=0.0):
    """A trained-looking adaptor: nonzero B, chosen gate output bias."""
    p = init_params(D, cfg, gen(seed))
    p["lora_B"] = torch.randn(D, cfg.rank, generator=gen(seed + 100)) * 0.1
    if cfg.gate:
        p["gate_b2"] = torch.tensor([gate_bias])
    return p


def plain(p, cfg, x, mode, keep=None, threshold=None):
    """The adaptor written out with torch.nn layers, as the reference's Adaptor.forward."""
    lora_A, lora_B = nn.Linear(D, cfg.rank, bias=False), nn.Linear(cfg.rank, D, bias=False)
    h = cfg.gate_dim(D)
    m1, m2 = nn.Linear(D, h), nn.Linear(h, 1)
    with torch.no_grad():
        lora_A.weight.copy_(p["lora_A"]), lora_B.weight.copy_(p["lora_B"])
        m1.weight.copy_(p["gate_w1"]), m1.bias.copy_(p["gate_b1"])
        m2.weight.copy_(p["gate_w2"]), m2.bias.copy_(p["gate_b2"])
        xd = x if keep is None else x * keep / (1 - cfg.dropout)
        result = lora_B(lora_A(xd)) * (cfg.alpha / cfg.rank)
        g = torch.sigmoid(m2(nn.GELU()(m1(x))))
        if mode == "test":
            g = (g > (cfg.threshold if threshold is None else threshold)).float()
        return x + result * g


def test_init_is_nn_linear_default_and_uses_only_the_generator():
    cfg = AdaptorConfig()
    torch.manual_seed(123)
    state = torch.get_rng_state()
    p = init_params(D, cfg, gen(7))
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    with torch.random.fork_rng():
        torch.manual_seed(7)  # nn.Linear's default init draws from the global generator in this order
        a, g1, g2 = nn.Linear(D, 32, bias=False), nn.Linear(D, int(0.1 * D)), nn.Linear(int(0.1 * D), 1)
    assert torch.equal(p["lora_A"], a.weight.detach())
    assert torch.equal(p["gate_w1"], g1.weight.detach()) and torch.equal(p["gate_b1"], g1.bias.detach())
    assert torch.equal(p["gate_w2"], g2.weight.detach()) and torch.equal(p["gate_b2"], g2.bias.detach())
    assert torch.equal(p["lora_B"], torch.zeros(D, 32))
    assert p["gate_w1"].shape == (4, D)  # int(0.1 * 40)
    assert init_params(D, cfg, gen(7))["lora_A"].equal(p["lora_A"])


@pytest.mark.parametrize("gate", [True, False])
def test_fresh_adaptor_is_identity_in_both_modes(gate):
    cfg = AdaptorConfig(gate=gate)
    ad = Adaptor.fresh(D, cfg, gen(0))
    x = torch.randn(3, 5, D)
    assert torch.equal(ad(x, "train", generator=gen(1)), x)
    assert torch.equal(ad(x, "test"), x)


def test_matches_plain_layers_in_train_and_test_mode():
    cfg = AdaptorConfig(dropout=0.0, threshold=0.5)
    p = randomised(cfg, gate_bias=0.0)
    x = torch.randn(4, 6, D)
    for mode in ("train", "test"):
        torch.testing.assert_close(adaptor_forward(p, cfg, x, mode), plain(p, cfg, x, mode), rtol=1e-6, atol=1e-6)
    # test mode = train mode with g replaced by the indicator [g > threshold]
    g = Adaptor(p, cfg).gate(x)
    assert 0 < (g > 0.5).float().mean() < 1  # a mix of open and closed positions, so the test bites


def test_hard_gate_is_strictly_greater_than_threshold():
    cfg = AdaptorConfig(dropout=0.0)
    p = randomised(cfg, gate_bias=2.0)
    x = torch.randn(1, 1, D)
    g = Adaptor(p, cfg).gate(x).item()
    delta = (adaptor_forward(p, cfg, x, "train") - x) / g  # the full (ungated) delta, up to rounding
    below = torch.nextafter(torch.tensor(g), torch.tensor(-1.0)).item()  # the next float32 below g
    closed = adaptor_forward(p, cfg, x, "test", threshold=g)  # g > g is false: gate closed
    opened = adaptor_forward(p, cfg, x, "test", threshold=below)
    assert torch.equal(closed, x)
    assert not torch.equal(opened, x)
    torch.testing.assert_close(opened - x, delta, rtol=1e-4, atol=1e-6)


def test_gate_disabled_means_g_equals_one():
    cfg = AdaptorConfig(gate=False, dropout=0.0)
    p = randomised(cfg)
    assert set(p) == {"lora_A", "lora_B"}
    x = torch.randn(2, 3, D)
    want = x + (x @ p["lora_A"].T) @ p["lora_B"].T
    torch.testing.assert_close(adaptor_forward(p, cfg, x, "test"), want)
    torch.testing.assert_close(adaptor_forward(p, cfg, x, "train"), want)


def test_dropout_off_at_eval_by_default_and_on_with_eval_dropout():
    x = torch.randn(3, 4, D)
    cfg = AdaptorConfig(threshold=0.1)
    p = randomised(cfg, gate_bias=5.0)
    det = adaptor_forward(p, cfg, x, "test")  # no generator needed: deterministic
    assert torch.equal(det, adaptor_forward(p, cfg, x, "test"))
    torch.testing.assert_close(det, plain(p, cfg, x, "test"), rtol=1e-6, atol=1e-6)

    qcfg = AdaptorConfig(threshold=0.1, eval_dropout=True)
    with pytest.raises(ConfigError, match="Generator"):
        adaptor_forward(p, qcfg, x, "test")
    noisy = adaptor_forward(p, qcfg, x, "test", generator=gen(5))
    keep = torch.empty(x.shape).bernoulli_(0.9, generator=gen(5))
    torch.testing.assert_close(noisy, plain(p, qcfg, x, "test", keep=keep), rtol=1e-6, atol=1e-6)
    assert not torch.allclose(noisy, det)
    # training mode always drops, with the same mask stream
    torch.testing.assert_close(adaptor_forward(p, cfg, x, "train", generator=gen(5)),
                               plain(p, cfg, x, "train", keep=keep), rtol=1e-6, atol=1e-6)


def test_computes_in_fp32_and_returns_input_dtype():
    cfg = AdaptorConfig(dropout=0.0, threshold=0.1)
    p = randomised(cfg, gate_bias=5.0)
    x = torch.randn(2, 3, D).to(torch.bfloat16)
    out = adaptor_forward(p, cfg, x, "test")
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, adaptor_forward(p, cfg, x.float(), "test").to(torch.bfloat16))


def test_state_round_trip_with_weights_only_load():
    cfg = AdaptorConfig(threshold=0.3, eval_dropout=False)
    ad = Adaptor(randomised(cfg, gate_bias=1.0), cfg)
    buf = io.BytesIO()
    torch.save(ad.state(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    back = Adaptor.from_state(state)
    assert back.cfg == cfg
    for k, v in ad.tensors().items():
        assert torch.equal(v, back.tensors()[k])
    x = torch.randn(2, 3, D)
    assert torch.equal(ad(x, "test"), back(x, "test"))


def test_bad_state_and_config_are_named():
    with pytest.raises(ConfigError, match="format"):
        load_adaptor_state({"params": {}})
    with pytest.raises(ConfigError, match="threshold"):
        AdaptorConfig(threshold=1.0)
    with pytest.raises(ConfigError, match="mode"):
        adaptor_forward(randomised(), AdaptorConfig(), torch.zeros(1, D), "eval")
    state = Adaptor(randomised(), AdaptorConfig()).state()
    state["params"].pop("gate_w2")
    with pytest.raises(ConfigError, match="gate_w2"):
        load_adaptor_state(state)


def test_gelu_is_exact_erf_form():
    cfg = AdaptorConfig()
    p = init_params(D, cfg, gen(0))
    x = torch.randn(5, D)
    h = p["gate_w1"] @ x.T + p["gate_b1"][:, None]
    want = torch.sigmoid(p["gate_w2"] @ (0.5 * h * (1 + torch.erf(h / math.sqrt(2)))) + p["gate_b2"][:, None])
    torch.testing.assert_close(Adaptor(p, cfg).gate(x), want.squeeze(0))
