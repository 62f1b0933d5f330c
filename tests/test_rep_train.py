"""REP training: cached keys == training through the model, the schedule, the loss, the gate objective."""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from robustedit.errors import ConfigError
from robustedit.evaluate.leakage import LeakGuard
from robustedit.hooks import edit_input
from robustedit.rep import (AdaptorConfig, RepTrainConfig, batch_schedule, build_pool, collect_training_keys,
                            fit_rep_adaptor, init_params, load_adaptor_state, train_on_keys)
from robustedit.rep.adaptor import adaptor_forward
from robustedit.readout import read_down_proj
from robustedit.tokens import subject_last_index

PROMPT = "The mother tongue of Danielle Darrieux is"
SUBJECT = "Danielle Darrieux"
TEMPLATES = ["{}", "The. {}", "Because of this, we went home. {}", "I {}", "You know. {}", "Therefore, x. {}"]
REPH = ["Actress Danielle Darrieux", "The French actress Danielle Darrieux"]
SHUF = ["rieux DanielleDar", "DarDanielle rieux"]
LAYER = 1


def unit(d, seed):
    u = torch.randn(d, generator=torch.Generator().manual_seed(seed))
    return u / u.norm()


@pytest.fixture(scope="module")
def setup(llama_tok, tiny_llama_model):
    model = tiny_llama_model
    dp = model.model.layers[LAYER].mlp.down_proj
    original, pool = build_pool(PROMPT, SUBJECT, TEMPLATES, REPH, SHUF)
    return model, dp, original, pool


class RefAdaptor(nn.Module):
    """The reference's adaptor written with nn.Linear layers; dropout masks drawn like the library's
    (bernoulli(1-p) from a given generator) so both consume one stream identically."""

    def __init__(self, p, cfg):
        super().__init__()
        d, h = p["lora_A"].shape[1], p["gate_w1"].shape[0]
        self.cfg = cfg
        self.lora_A, self.lora_B = nn.Linear(d, cfg.rank, bias=False), nn.Linear(cfg.rank, d, bias=False)
        self.cls_mlp1, self.cls_mlp2 = nn.Linear(d, h), nn.Linear(h, 1)
        with torch.no_grad():
            self.lora_A.weight.copy_(p["lora_A"]), self.lora_B.weight.copy_(p["lora_B"])
            self.cls_mlp1.weight.copy_(p["gate_w1"]), self.cls_mlp1.bias.copy_(p["gate_b1"])
            self.cls_mlp2.weight.copy_(p["gate_w2"]), self.cls_mlp2.bias.copy_(p["gate_b2"])

    def forward(self, x, gen):
        xd = x
        if self.cfg.dropout > 0:
            xd = x * torch.empty(x.shape).bernoulli_(1 - self.cfg.dropout, generator=gen) / (1 - self.cfg.dropout)
        result = self.lora_B(self.lora_A(xd)) * self.cfg.scaling
        return x + result * torch.sigmoid(self.cls_mlp2(F.gelu(self.cls_mlp1(x))))

    def as_params(self):
        return {"lora_A": self.lora_A.weight, "lora_B": self.lora_B.weight, "gate_w1": self.cls_mlp1.weight,
                "gate_b1": self.cls_mlp1.bias, "gate_w2": self.cls_mlp2.weight, "gate_b2": self.cls_mlp2.bias}


def train_through_model(model, tok, dp, original, pool, u, params, cfg, tcfg, schedule, gen, loss_on_hook_output):
    """Reference-style loop: tokenize each step's batch (pool items + the original, right padded), run the
    model with the adaptor as a down_proj input hook, and compute the loss at the subject-last tokens.
    loss_on_hook_output=True: from the hook's output (gradient through the hook); False: as the reference,
    from the retained raw inputs passed through the adaptor again."""
    ref = RefAdaptor(params, cfg)
    opt = torch.optim.Adam(ref.parameters(), lr=tcfg.lr, weight_decay=0)
    for batch in schedule:
        items = [pool[i] for i in batch] + [original]
        texts = [it.text for it in items]
        idx = [subject_last_index(tok, it.text, it.variant) for it in items]
        enc = tok(texts, return_tensors="pt", padding=True)
        seen = {}

        def hook(x, seen=seen):  # called within this iteration only; the default binds it explicitly
            seen["raw"] = x.detach()
            seen["out"] = ref(x.detach(), gen) if loss_on_hook_output else x  # keys are constants, as the reference
            return seen["out"]

        opt.zero_grad()
        with edit_input(dp, hook):
            model(**enc)
        rows = torch.arange(len(items))
        if loss_on_hook_output:
            a = seen["out"][rows, idx]
        else:
            a = ref(seen["raw"][rows, idx], gen)  # pool rows first, then the original (library order)
        k = seen["raw"][rows, idx]
        agg = -((a[:-1] / a[:-1].norm(dim=-1, keepdim=True)) @ u).mean()
        tc = F.mse_loss(a[-1], k[-1])
        (tcfg.agg_weight * agg + tcfg.consistency_weight * tc).backward()
        opt.step()
    return {k: v.detach() for k, v in ref.as_params().items()}


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_cached_key_training_equals_training_through_the_model(setup, llama_tok, dropout):
    model, dp, original, pool = setup
    cfg = AdaptorConfig(dropout=dropout, gate_inner_ratio=0.5)
    tcfg = RepTrainConfig(steps=10)
    d = dp.in_features
    u = unit(d, 3)
    params = init_params(d, cfg, torch.Generator().manual_seed(0))
    keys = collect_training_keys(model, llama_tok, dp, original, pool, batch_rows=8)
    cached, log = train_on_keys(params, cfg, keys, u, tcfg, batch_rng=random.Random(4),
                                dropout_generator=torch.Generator().manual_seed(9))
    schedule = batch_schedule(len(pool), tcfg.batch_size, tcfg.steps, random.Random(4))
    # with dropout the hook would draw masks for every position; compare on the reference's own path then
    through = train_through_model(model, llama_tok, dp, original, pool, u, params, cfg, tcfg, schedule,
                                  torch.Generator().manual_seed(9), loss_on_hook_output=dropout == 0)
    assert len(log.steps) == 10
    assert not torch.equal(cached["lora_B"], params["lora_B"])  # it trained
    for k in cached:
        torch.testing.assert_close(cached[k], through[k], rtol=1e-4, atol=1e-6, msg=k)


def test_batch_schedule_matches_reference_cursor_logic():
    def reference(n, bs, steps, rng):  # the reference's get_next_batch, over an already shuffled list
        data = list(range(n))
        rng.shuffle(data)
        index, out = 0, []
        for _ in range(steps):
            if index + bs > len(data):
                rng.shuffle(data)
                out.append(data[:bs])
                index = 0
            else:
                out.append(data[index:index + bs])
                index += bs
        return out

    for n in (7, 40, 125, 300):
        assert (batch_schedule(n, 15, 10, random.Random(1), compat_restart=True)
                == reference(n, 15, 10, random.Random(1)))
    s = batch_schedule(40, 15, 6, random.Random(1))
    assert len(set(s[0] + s[1])) == 30  # consecutive disjoint slices
    assert len(set(s[2] + s[3])) == 30  # after the reshuffle: slices 0:15 then 15:30 (no repeat)
    assert all(len(b) == 15 for b in s)


def test_loss_decreases_over_ten_release_steps(setup, llama_tok):
    model, dp, original, pool = setup
    keys = collect_training_keys(model, llama_tok, dp, original, pool)
    u = unit(dp.in_features, 5)
    cfg = AdaptorConfig()
    params = init_params(dp.in_features, cfg, torch.Generator().manual_seed(1))
    trained, log = train_on_keys(params, cfg, keys, u, RepTrainConfig(), batch_rng=random.Random(0),
                                 dropout_generator=torch.Generator().manual_seed(2))
    losses = [s["loss"] for s in log.steps]
    assert losses[-1] < losses[0]
    # mean cosine of the adapted (soft-gate, no-dropout) pool keys with u went up
    def cos(p):
        a = adaptor_forward(p, AdaptorConfig(dropout=0.0), keys.pool, "train")
        return (a / a.norm(dim=-1, keepdim=True) @ u).mean()
    assert cos(trained) > cos(params) + 1e-3
    assert log.gate["subject_last"]["n"] == len(pool) + 1


def test_gate_objective_opens_on_positives_and_closes_far_away(setup, llama_tok):
    model, dp, original, pool = setup
    neg = ["The native language of Montesquieu is", "Michel Rocard is a native speaker of",
           "Paris is the capital of", "Maurice Genevoix, speaker of"]
    keys = collect_training_keys(model, llama_tok, dp, original, pool, negative_prompts=neg, with_gate_data=True)
    u = unit(dp.in_features, 5)
    cfg = AdaptorConfig(dropout=0.0, gate_inner_ratio=0.5)
    tcfg = RepTrainConfig(steps=100, gate_loss_weight=1.0, gate_lr=3e-2)
    params = init_params(dp.in_features, cfg, torch.Generator().manual_seed(1))
    trained, log = train_on_keys(params, cfg, keys, u, tcfg, batch_rng=random.Random(0), dropout_generator=None)
    assert log.gate["positives"]["frac_open"] == 1.0
    assert log.gate["negatives"]["frac_open"] == 0.0
    # keys of unrelated prompts never seen in training: hard gate shut, so the adaptor is the identity there
    held_out = ["Berlin is a city in", "The Eiffel Tower was built by", "My favourite food is pizza and pasta"]
    far_ids = [llama_tok(t)["input_ids"] for t in held_out]
    far = read_down_proj(model, dp, far_ids, [range(len(x)) for x in far_ids])
    assert torch.equal(adaptor_forward(trained, cfg, far, "test"), far)
    pos_out = adaptor_forward(trained, cfg, keys.gate_pos, "test")
    assert (pos_out - keys.gate_pos).norm(dim=-1).min() > 0  # open: the delta is applied


def test_gate_loss_needs_gate_data(setup, llama_tok):
    model, dp, original, pool = setup
    keys = collect_training_keys(model, llama_tok, dp, original, pool)
    params = init_params(dp.in_features, AdaptorConfig(), torch.Generator().manual_seed(1))
    with pytest.raises(ConfigError, match="positives and negatives"):
        train_on_keys(params, AdaptorConfig(), keys, unit(dp.in_features, 0), RepTrainConfig(gate_loss_weight=1.0),
                      batch_rng=random.Random(0), dropout_generator=torch.Generator())
    with pytest.raises(ConfigError, match="key dim"):
        train_on_keys(params, AdaptorConfig(), keys, unit(7, 0), RepTrainConfig(), batch_rng=random.Random(0),
                      dropout_generator=torch.Generator())


def test_fit_is_deterministic_per_seed_and_case(llama_tok, tiny_llama_model):
    dp = tiny_llama_model.model.layers[LAYER].mlp.down_proj
    case = {"case_id": 5, "prompt": PROMPT, "subject": SUBJECT, "subject_rephrases": {"id": REPH, "ood": []},
            "shuffled_subjects": {"id": SHUF, "ood": []}, "long_context": {"eval": "e", "held": ["A passage ."]},
            "neighborhood_prompts": ["Paris is the capital of"]}
    u = unit(dp.in_features, 1)
    tcfg = RepTrainConfig(steps=3, gate_loss_weight=0.5)
    kw = {"tcfg": tcfg, "leaks": LeakGuard([]).leaks, "negative_texts": ["An unrelated line of text ."]}
    a = fit_rep_adaptor(tiny_llama_model, llama_tok, dp, case, TEMPLATES, u, seed=0, **kw)
    b = fit_rep_adaptor(tiny_llama_model, llama_tok, dp, case, TEMPLATES, u, seed=0, **kw)
    c = fit_rep_adaptor(tiny_llama_model, llama_tok, dp, case, TEMPLATES, u, seed=1, **kw)
    pa, _ = load_adaptor_state(a.state)
    assert all(torch.equal(pa[k], load_adaptor_state(b.state)[0][k]) for k in pa)
    assert not torch.equal(pa["lora_A"], load_adaptor_state(c.state)[0]["lora_A"])
    assert a.log["pool"] == {"original": len(TEMPLATES) - 1, "rephrase": 12, "shuffle": 12, "long": 1}
    assert len(a.log["steps"]) == 3 and "gate" in a.log["steps"][0]


# ---------------------------------------------------------------- objective variants, full batch, scaling
def _keys(n=6, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(d, generator=g)


def test_objectives_against_their_formulas():
    from robustedit.rep.train import agg_loss

    a, k = _keys()
    u = F.normalize(torch.randn(16, generator=torch.Generator().manual_seed(3)), dim=0)
    cos = sum(-float(torch.dot(a[i], u) / a[i].norm()) for i in range(6)) / 6
    raw = sum(float(((a[i] - k) ** 2).sum() / (k ** 2).sum()) for i in range(6)) / 6
    share = sum(max(0.0, 1 - float(torch.dot(u, a[i]) / torch.dot(u, k))) ** 2 for i in range(6)) / 6
    m = torch.randn(16, 16, generator=torch.Generator().manual_seed(4))
    C = m @ m.T + 16 * torch.eye(16)
    Cinv = torch.linalg.inv(C)
    white = sum(float((a[i] - k) @ Cinv @ (a[i] - k) / (k @ Cinv @ k)) for i in range(6)) / 6
    L = torch.linalg.cholesky(C)
    assert agg_loss("cosine_u", a, k, u).item() == pytest.approx(cos, rel=1e-5)
    assert agg_loss("distance_raw", a, k, u).item() == pytest.approx(raw, rel=1e-5)
    assert agg_loss("edit_share", a, k, u).item() == pytest.approx(share, rel=1e-5)
    assert agg_loss("distance_whitened", a, k, u, L).item() == pytest.approx(white, rel=1e-4)
    assert agg_loss("distance_raw", k.expand(3, 16), k, u).item() == 0  # the keys on k* itself: no loss
    with pytest.raises(ConfigError, match="whitening"):
        agg_loss("distance_whitened", a, k, u)
    with pytest.raises(ConfigError, match="objective"):
        RepTrainConfig(objective="cosine")


def test_full_batch_schedule_and_key_dim_scaling():
    from robustedit.rep.train import scaled_rates

    assert batch_schedule(5, None, 3, random.Random(0)) == [[0, 1, 2, 3, 4]] * 3
    release = RepTrainConfig()
    assert scaled_rates(release, 1536) == (release.lr, release.gate_lr, release.consistency_weight)
    lr, gate_lr, cw = scaled_rates(RepTrainConfig(key_dim_reference=11008, gate_lr=1e-3), 1536)
    assert lr == pytest.approx(5e-4 * (11008 / 1536) ** 0.5) and gate_lr == pytest.approx(1e-3 * (11008 / 1536) ** 0.5)
    assert cw == pytest.approx(50000.0 * 1536 / 11008)  # the same weight on the summed squared error
    assert scaled_rates(RepTrainConfig(key_dim_reference=11008), 11008) == (5e-4, None, 50000.0)


def test_k_star_is_a_gate_positive_only_when_asked(setup, llama_tok):
    """gate_original_positive=False trains the gate on the pool's subject-last keys only."""
    model, dp, original, pool = setup
    keys = collect_training_keys(model, llama_tok, dp, original, pool, negative_prompts=["Paris is nice"],
                                 with_gate_data=True)
    params = init_params(dp.in_features, AdaptorConfig(), torch.Generator().manual_seed(0))
    u = unit(dp.in_features, 0)
    runs = {}
    for flag in (True, False):
        tcfg = RepTrainConfig(steps=2, gate_loss_weight=1.0, gate_original_positive=flag)
        _, log = train_on_keys(params, AdaptorConfig(), keys, u, tcfg, batch_rng=random.Random(0),
                               dropout_generator=torch.Generator().manual_seed(0))
        runs[flag] = log
    assert runs[True].gate["positives"]["n"] == keys.gate_pos.shape[0]
    assert runs[False].gate["positives"]["n"] == keys.gate_pos.shape[0] - 1
    assert runs[True].steps[0]["gate"] != runs[False].steps[0]["gate"]


def test_detached_gate_is_trained_by_its_bce_only(setup, llama_tok):
    """gate_detached: L_agg and L_tc give the gate no gradient; without the BCE nothing would train it."""
    from robustedit.rep.adaptor import GATE_KEYS
    from robustedit.rep.train import rep_loss

    model, dp, original, pool = setup
    keys = collect_training_keys(model, llama_tok, dp, original, pool)
    params = init_params(dp.in_features, AdaptorConfig(dropout=0.0), torch.Generator().manual_seed(0))
    params["lora_B"] = torch.randn_like(params["lora_B"]) * 0.1  # a non-zero projection: the gate matters
    u = unit(dp.in_features, 0)
    for detached, has_grad in ((False, True), (True, False)):
        p = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        tcfg = RepTrainConfig(gate_loss_weight=1.0, gate_detached=detached)
        loss, _ = rep_loss(p, AdaptorConfig(dropout=0.0), keys.pool, keys.original, u, tcfg, None)
        loss.backward()
        assert all((p[k].grad is not None and bool(p[k].grad.abs().sum() > 0)) == has_grad for k in GATE_KEYS)
        assert p["lora_A"].grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="gate_detached"):
        RepTrainConfig(gate_detached=True, gate_loss_weight=0.0)
