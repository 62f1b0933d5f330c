"""ROME core (templates, u, v*, execute) on tiny random models with the real SmolLM2 (no BOS) and
Gemma-3 (BOS) tokenizers. v* is checked against a plain one-case implementation of the reference
loop written below (full model forward, full logits, -100 labels), in float64."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_gemma, tiny_llama
from robustedit.edits import apply_rank_one, restore
from robustedit.errors import ConfigError, RecordError
from robustedit.hooks import capture_input, capture_output, edit_output
from robustedit.models.arch import Architecture
from robustedit.rome import (MomentSolver, ROMEHyperParams, compute_u, compute_v, execute_rome,
                             execute_rome_detailed, generate_context_templates, mean_template_keys)
from robustedit.readout import logits_from_hidden
from robustedit.rome.prompts import case_rows, templated_prompt
from robustedit.rome.v_batch import build_batch, select_cases
from robustedit.rome.v_forward import hidden_with_delta, prepare_batch
from robustedit.rome.templates import sample_continuations
from robustedit.tokens import encode_with_span, subject_last_index, target_token_ids

LAYER = 1
ARCH = {"llama": Architecture("llama", 4), "gemma3": Architecture("gemma3", 4)}
TEMPLATES = ["{}", "The man said. {}", "Because it rained all day. {}", "I think. {}", "You. {}", "Therefore. {}"]
CASES = [
    {"case_id": 11, "prompt": "The mother tongue of Danielle Darrieux is", "subject": "Danielle Darrieux",
     "target_new": "English"},
    {"case_id": 12, "prompt": "Toko Yasuda, the", "subject": "Toko Yasuda", "target_new": "guitar player"},
    {"case_id": 13, "prompt": "Apple A5 was created by", "subject": "Apple A5", "target_new": "Google"},
]
# a random tiny model has a tiny ‖v_init‖ (~5e-3): the REP values (lr 0.5, wd 1e-3, clamp 4) make the
# weight decay dominate and the loss rise; these let the NLL fall. REP_HP checks the real values too.
HP = ROMEHyperParams(v_num_grad_steps=5, v_lr=0.05, v_weight_decay=1e-6, clamp_norm_factor=1000.0,
                     early_stop_loss=None, context_template_length_params=((5, 5),))  # 6 templates, as TEMPLATES
REP_HP = dataclasses.replace(ROMEHyperParams(), v_num_grad_steps=5, context_template_length_params=((5, 5),))


@pytest.fixture(scope="module")
def llama64(llama_tok):
    return tiny_llama(len(llama_tok), seed=3).double()


@pytest.fixture(scope="module")
def gemma64(gemma_tok):
    return tiny_gemma(len(gemma_tok), seed=4).double()


def spd(dim: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(dim, 3 * dim, generator=g, dtype=torch.float64)
    return a @ a.T / (3 * dim)


# ---------------------------------------------------------------- plain reference (one case)
def plain_v_star(model, tok, arch, req, templates, hp):
    """The reference loop for one case, straightforwardly (clean target mode)."""
    y = target_token_ids(tok, req["prompt"], req["target_new"], mode="clean")
    texts = [t.format(req["prompt"]) for t in templates]
    seqs = [tok(t)["input_ids"] + y[:-1] for t in texts] + [tok(f"{req['subject']} is a")["input_ids"]]
    idxs = [subject_last_index(tok, t, req["subject"]) for t in texts]
    idxs.append(subject_last_index(tok, f"{req['subject']} is a", req["subject"]))
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), 0, dtype=torch.long)
    att = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        att[i, : len(s)] = 1
        if i < len(texts):
            labels[i, len(s) - len(y): len(s)] = torch.tensor(y)
    mlp = arch.module(model, "mlp", LAYER)
    delta = torch.zeros(mlp.down_proj.out_features, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=hp.v_lr)
    state = {"init": None, "kl": None}
    losses, updates = [], 0

    def add(out):
        if state["init"] is None:
            state["init"] = out[0, idxs[0]].detach().clone()
        out = out.clone()
        for i, ix in enumerate(idxs):
            out[i, ix] = out[i, ix] + delta
        return out

    for it in range(hp.v_num_grad_steps):
        opt.zero_grad()
        with edit_output(mlp, add):
            logits = model(input_ids=ids, attention_mask=att).logits
        kl_lp = torch.log_softmax(logits[-1:, idxs[-1]], dim=1)
        if state["kl"] is None:
            state["kl"] = kl_lp.detach().clone()
        lp = torch.log_softmax(logits[:-1], dim=2)
        lab = labels[:-1]
        tok_lp = lp.gather(2, lab.clamp(min=0)[..., None])[..., 0] * (lab != -100)
        nll = (-tok_lp.sum(1) / len(y)).mean()
        kl = hp.kl_factor * F.kl_div(state["kl"], kl_lp, log_target=True, reduction="batchmean")
        loss = nll + kl + hp.v_weight_decay * delta.norm() / state["init"].norm() ** 2
        losses.append(loss.item())
        if hp.early_stop_loss is not None and loss.item() < hp.early_stop_loss:
            break
        if it == hp.v_num_grad_steps - 1:
            break
        loss.backward()
        opt.step()
        updates += 1
        max_norm = hp.clamp_norm_factor * state["init"].norm()
        if delta.norm() > max_norm:
            with torch.no_grad():
                delta[...] = delta * max_norm / delta.norm()
    return state["init"] + delta.detach(), losses, updates


def u_for(model, tok, arch, cases, templates):
    return compute_u(model, tok, arch, LAYER, cases, templates, None, "cpu")


# ---------------------------------------------------------------- templates
def test_templates_seeded_21_one_placeholder(llama_tok, tiny_llama_model):
    make = lambda s: generate_context_templates(tiny_llama_model, llama_tok, torch.Generator().manual_seed(s))  # noqa
    a, b, c = make(7), make(7), make(8)
    assert a == b and a != c
    assert len(a) == 21 and a[0] == "{}"
    assert all(t.count("{}") == 1 for t in a) and all(t.endswith(". {}") for t in a[1:])
    assert all(t.replace("{}", "").count("{") == 0 and t.replace("{}", "").count("}") == 0 for t in a)


@pytest.mark.parametrize("tok_name,model_name", [("llama_tok", "tiny_llama_model"), ("gemma_tok", "tiny_gemma_model")])
def test_sampled_length_counts_prompt_tokens(request, tok_name, model_name):
    tok, model = request.getfixturevalue(tok_name), request.getfixturevalue(model_name)
    seqs = sample_continuations(model, tok, "The", 2, 5, 5, torch.Generator().manual_seed(0))
    assert [len(s) for s in seqs] == [5, 5]
    assert [s[: len(tok("The")["input_ids"])] for s in seqs] == [tok("The")["input_ids"]] * 2


# ---------------------------------------------------------------- indices and u
def test_subject_index_hand_picked(llama_tok, gemma_tok):
    # SmolLM2: The|Ġmother|Ġtongue|Ġof|ĠDaniel|le|ĠDar|rie|ux|Ġis  -> "ux" at 8 (no BOS)
    # Gemma:   <bos>|The|▁mother|▁tongue|▁of|▁Danielle|▁Dar|rie|ux|▁is -> "ux" at 8 (BOS at 0)
    # with the template "Therefore it. {}" both shift by 3 tokens (Therefore|it|.)
    for tok in (llama_tok, gemma_tok):
        text, s, e = templated_prompt("{}", CASES[0]["prompt"], "Danielle Darrieux")
        assert encode_with_span(tok, text, s, e)[1] == 8
        text, s, e = templated_prompt("Therefore it. {}", CASES[0]["prompt"], "Danielle Darrieux")
        assert encode_with_span(tok, text, s, e)[1] == 11
        assert tok.convert_ids_to_tokens(tok(text)["input_ids"])[11] == "ux"


def test_subject_located_in_prompt_not_in_template(llama_tok):
    text, s, e = templated_prompt("Toko Yasuda met. {}", CASES[1]["prompt"], "Toko Yasuda")
    assert text.find("Toko Yasuda") < s  # the template holds the subject first
    idx = encode_with_span(llama_tok, text, s, e)[1]
    assert idx > subject_last_index(llama_tok, text, "Toko Yasuda")
    assert llama_tok.decode(llama_tok(text)["input_ids"][: idx + 1]) == text[:e]


@pytest.mark.parametrize("tok_name,family", [("llama_tok", "llama"), ("gemma_tok", "gemma3")])
def test_template_keys_equal_unpadded_single_forwards(request, tok_name, family):
    tok = request.getfixturevalue(tok_name)
    model = tiny_llama(len(tok), 5) if family == "llama" else tiny_gemma(len(tok), 5)
    arch = ARCH[family]
    kbar = mean_template_keys(model, tok, arch, LAYER, CASES[:2], TEMPLATES, "cpu")
    down = arch.module(model, "down_proj", LAYER)
    for b, case in enumerate(CASES[:2]):
        keys = []
        for t in TEMPLATES:
            text = t.format(case["prompt"])
            with capture_input(down) as cap:
                model(**tok(text, return_tensors="pt"))
            keys.append(cap.value[0, subject_last_index(tok, text, case["subject"])])
        torch.testing.assert_close(kbar[b], torch.stack(keys).double().mean(0), atol=1e-6, rtol=1e-5)


def test_u_solves_second_moment(llama_tok, llama64):
    arch = ARCH["llama"]
    C = spd(arch.key_dim(llama64, LAYER))
    kbar = mean_template_keys(llama64, llama_tok, arch, LAYER, CASES, TEMPLATES, "cpu")
    u = compute_u(llama64, llama_tok, arch, LAYER, CASES, TEMPLATES, MomentSolver(C), "cpu")
    torch.testing.assert_close(u.norm(dim=1), torch.ones(3, dtype=torch.float64))
    cu = u @ C  # rows C u (C symmetric)
    cos = F.cosine_similarity(cu, kbar, dim=1)
    torch.testing.assert_close(cos, torch.ones(3, dtype=torch.float64), atol=1e-12, rtol=0)
    assert (F.cosine_similarity(u, kbar, dim=1) < 0.999).all()  # the adjustment really changed u
    u0 = compute_u(llama64, llama_tok, arch, LAYER, CASES, TEMPLATES, None, "cpu")
    torch.testing.assert_close(u0, kbar / kbar.norm(dim=1, keepdim=True))


def test_solver_rejects_singular_moment():
    x = torch.randn(3, 8, dtype=torch.float64)
    with pytest.raises(ConfigError, match="not positive definite"):
        MomentSolver(x.T @ x)


# ---------------------------------------------------------------- v*
def test_v_star_matches_plain_reference(llama_tok, llama64):
    arch = ARCH["llama"]
    case = CASES[0]
    u = u_for(llama64, llama_tok, arch, [case], TEMPLATES)
    for hp in (HP, dataclasses.replace(HP, reuse_lower_layers=False), REP_HP):
        (res,) = compute_v(llama64, llama_tok, arch, LAYER, [case], u, TEMPLATES, hp, "cpu")
        ref_v, ref_losses, ref_updates = plain_v_star(llama64, llama_tok, arch, case, TEMPLATES, hp)
        torch.testing.assert_close(res.v_star, ref_v, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(torch.tensor(res.losses), torch.tensor(ref_losses), atol=1e-10, rtol=1e-10)
        if hp.early_stop_loss is None or min(res.losses) >= hp.early_stop_loss:
            assert res.n_updates == ref_updates == hp.v_num_grad_steps - 1
            assert len(res.losses) == hp.v_num_grad_steps and not res.stopped_early
        assert res.delta.abs().sum() > 0


def test_loss_decreases(llama_tok, llama64):
    arch = ARCH["llama"]
    u = u_for(llama64, llama_tok, arch, CASES[:1], TEMPLATES)
    (res,) = compute_v(llama64, llama_tok, arch, LAYER, CASES[:1], u, TEMPLATES, HP, "cpu")
    assert res.losses[-1] < res.losses[0] - 0.05
    assert all(b < a for a, b in zip(res.losses, res.losses[1:]))


def test_early_stop_and_clamp_follow_reference(llama_tok, llama64):
    arch = ARCH["llama"]
    case = CASES[0]
    u = u_for(llama64, llama_tok, arch, [case], TEMPLATES)
    free = compute_v(llama64, llama_tok, arch, LAYER, [case], u, TEMPLATES, HP, "cpu")[0]
    # a threshold between the 3rd and 4th loss: stops at the 4th forward after 3 updates
    assert free.losses[3] < free.losses[2]
    hp = dataclasses.replace(HP, early_stop_loss=(free.losses[2] + free.losses[3]) / 2)
    (res,) = compute_v(llama64, llama_tok, arch, LAYER, [case], u, TEMPLATES, hp, "cpu")
    ref_v, ref_losses, ref_updates = plain_v_star(llama64, llama_tok, arch, case, TEMPLATES, hp)
    assert res.stopped_early and res.n_updates == ref_updates == 3 and len(res.losses) == 4
    torch.testing.assert_close(res.v_star, ref_v, atol=1e-10, rtol=1e-10)
    # stop before any update: v* = v_init
    (res0,) = compute_v(llama64, llama_tok, arch, LAYER, [case], u, TEMPLATES,
                        dataclasses.replace(HP, early_stop_loss=1e9), "cpu")
    assert res0.n_updates == 0 and torch.equal(res0.v_star, res0.v_init)
    # clamp: a tiny ball is hit and respected
    hp = dataclasses.replace(HP, clamp_norm_factor=0.01, v_lr=0.5)
    (resc,) = compute_v(llama64, llama_tok, arch, LAYER, [case], u, TEMPLATES, hp, "cpu")
    torch.testing.assert_close(resc.delta.norm(), 0.01 * resc.v_init.norm(), atol=1e-12, rtol=1e-12)
    ref_v, _, _ = plain_v_star(llama64, llama_tok, arch, case, TEMPLATES, hp)
    torch.testing.assert_close(resc.v_star, ref_v, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_batched_equals_one_at_a_time(request, family):
    tok = request.getfixturevalue("llama_tok" if family == "llama" else "gemma_tok")
    model = request.getfixturevalue("llama64" if family == "llama" else "gemma64")
    arch = ARCH[family]
    cases = CASES if family == "llama" else CASES[:2]  # Gemma's 262k vocabulary is slow on CPU
    u = u_for(model, tok, arch, cases, TEMPLATES)
    free = compute_v(model, tok, arch, LAYER, cases, u, TEMPLATES, HP, "cpu")
    # a threshold that stops the case with the lowest 3rd loss there, while another goes on
    hp = dataclasses.replace(HP, early_stop_loss=min(r.losses[2] for r in free) + 1e-6)
    alone = [compute_v(model, tok, arch, LAYER, [c], u[i:i + 1], TEMPLATES, hp, "cpu")[0] for i, c in enumerate(cases)]
    together = compute_v(model, tok, arch, LAYER, cases, u, TEMPLATES, hp, "cpu")
    assert sum(r.stopped_early for r in alone) >= 1 and not all(r.stopped_early for r in alone)
    for a, t in zip(alone, together):
        assert (a.n_updates, a.stopped_early, len(a.losses)) == (t.n_updates, t.stopped_early, len(t.losses))
        torch.testing.assert_close(t.v_star, a.v_star, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(t.right_vector, a.right_vector, atol=1e-9, rtol=1e-9)


def test_batched_equals_one_at_a_time_float32(llama_tok, tiny_llama_model):
    arch = ARCH["llama"]
    u = u_for(tiny_llama_model, llama_tok, arch, CASES[:2], TEMPLATES)
    alone = [compute_v(tiny_llama_model, llama_tok, arch, LAYER, [c], u[i:i + 1], TEMPLATES, HP, "cpu")[0]
             for i, c in enumerate(CASES[:2])]
    together = compute_v(tiny_llama_model, llama_tok, arch, LAYER, CASES[:2], u, TEMPLATES, HP, "cpu")
    for a, t in zip(alone, together):  # fp32: padding changes summation order only
        torch.testing.assert_close(t.v_star, a.v_star, atol=1e-5, rtol=1e-4)


def _gemma_mixed(vocab):
    """Tiny Gemma with a short sliding window, mixed layer types and a final softcap."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(9)
    cfg = Gemma3TextConfig(vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
                           num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=4,
                           layer_types=["sliding_attention", "full_attention", "sliding_attention",
                                        "full_attention"], final_logit_softcapping=5.0,
                           bos_token_id=2, eos_token_id=1, pad_token_id=0)
    return Gemma3ForCausalLM(cfg).double().eval()


@pytest.mark.parametrize("family", ["llama", "gemma3"])
@pytest.mark.parametrize("layer", [0, 2])
def test_fast_forward_equals_full_model(request, family, layer):
    """Prefix K/V cache + reused lower layers + logits at read positions == the plain full forward."""
    tok = request.getfixturevalue("llama_tok" if family == "llama" else "gemma_tok")
    model = tiny_llama(len(tok), 2).double() if family == "llama" else _gemma_mixed(len(tok))
    arch = ARCH[family]
    templates = TEMPLATES[:-1] + ["Because it rained all day and all night long in the city. {}"]  # > window
    # "Paris" is token 0 without BOS: rows with an empty δ-free prefix
    cases = CASES + [{"prompt": "Paris is the capital of", "subject": "Paris", "target_new": "Italy"}]
    full = build_batch([case_rows(tok, c, templates, HP) for c in cases], 0, "cpu", torch.float64)
    delta = torch.randn(4, model.config.hidden_size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    keep = [0, 2, 3]
    plain = select_cases(full, keep)
    ar = torch.arange(plain.ids.shape[0])
    d_rows = delta[keep][plain.case]
    with edit_output(arch.module(model, "mlp", layer),
                     lambda o: o.index_put((ar, plain.index), d_rows, accumulate=True)):
        logits = model(input_ids=plain.ids, attention_mask=plain.mask).logits
    want_lab = logits[plain.lab_row, plain.lab_pos]
    want_kl = logits[plain.kl_row, plain.index[plain.kl_row]]
    for reuse, cache in [(True, True), (False, True), (True, False)]:
        hp = dataclasses.replace(HP, reuse_lower_layers=reuse, cache_prefix=cache)
        sub = select_cases(prepare_batch(model, arch, layer, full, hp, 0), keep)
        if cache:
            assert sub.ids.shape[1] < plain.ids.shape[1] and sub.prefix_len > 0
        h, _ = hidden_with_delta(model, arch, layer, sub, delta[keep][sub.case])
        torch.testing.assert_close(logits_from_hidden(model, arch, h[sub.lab_row, sub.lab_pos]), want_lab,
                                   atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(logits_from_hidden(model, arch, h[sub.kl_row, sub.index[sub.kl_row]]), want_kl,
                                   atol=1e-10, rtol=1e-10)
    assert all(type(m).__name__ != "_Fixed" for m in arch.module(model, "layers"))  # blocks restored


# ---------------------------------------------------------------- the edit
@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_edit_maps_k_star_to_v_star_and_restores(request, family):
    tok = request.getfixturevalue("llama_tok" if family == "llama" else "gemma_tok")
    model = request.getfixturevalue("llama64" if family == "llama" else "gemma64")
    arch = ARCH[family]
    C = spd(arch.key_dim(model, LAYER), 1)
    out = execute_rome_detailed(model, tok, arch, CASES[:2], C, TEMPLATES, HP, "cpu", LAYER)
    down = arch.module(model, "down_proj", LAYER)
    for (edit, res), case in zip(out, CASES[:2]):
        original = down.weight.detach().clone()
        idx = subject_last_index(tok, case["prompt"], case["subject"])
        with capture_output(down) as cap_before:
            model(**tok(case["prompt"], return_tensors="pt"))
        torch.testing.assert_close(cap_before.value[0, idx], res.out_star)
        saved = apply_rank_one(down, edit)
        with capture_input(down) as cin, capture_output(down) as cout:
            model(**tok(case["prompt"], return_tensors="pt"))
        restore(down, saved)
        assert torch.equal(down.weight, original)
        torch.testing.assert_close(cin.value[0, idx], res.k_star)
        # edits.apply_rank_one forms v uᵀ in float32, hence float32-level agreement on a float64 model
        torch.testing.assert_close(cout.value[0, idx], res.v_star, atol=1e-8, rtol=1e-6)
        assert not torch.allclose(res.v_star, res.out_star)


def test_execute_validates_and_batches(llama_tok, llama64):
    arch = ARCH["llama"]
    bad = dict(CASES[0], case_id=77, subject="Paris")
    with pytest.raises(RecordError, match="case 77: subject 'Paris' not found"):
        execute_rome(llama64, llama_tok, arch, [CASES[1], bad], None,
                     TEMPLATES, dataclasses.replace(HP, mom2_adjustment=False), "cpu", LAYER)
    with pytest.raises(ConfigError, match="no second moment"):
        execute_rome(llama64, llama_tok, arch, CASES, None, TEMPLATES, HP, "cpu", LAYER)
    C = spd(arch.key_dim(llama64, LAYER), 2)
    one = execute_rome(llama64, llama_tok, arch, CASES, C, TEMPLATES, dataclasses.replace(HP, batch_cases=1),
                       "cpu", LAYER)
    two = execute_rome(llama64, llama_tok, arch, CASES, C, TEMPLATES, dataclasses.replace(HP, batch_cases=2),
                       "cpu", LAYER)
    for a, b in zip(one, two):
        assert a.layer == b.layer == LAYER
        torch.testing.assert_close(a.u, b.u, atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(a.v, b.v, atol=1e-9, rtol=1e-9)


def test_easyedit_mode_right_aligns_reference_labels(gemma_tok):
    hp = dataclasses.replace(HP, target_mode="easyedit")
    rows = case_rows(gemma_tok, CASES[0], TEMPLATES, hp)
    y = target_token_ids(gemma_tok, CASES[0]["prompt"], CASES[0]["target_new"], mode="easyedit")
    for row, labels in zip(rows.rows, rows.labels):
        assert [p for p, _ in labels] == list(range(len(row.ids) - len(y), len(row.ids)))
        assert [t for _, t in labels] == y
    assert rows.n_target == len(y) and len(rows.rows) == len(TEMPLATES) + 1


def test_hparams_from_config():
    hp = ROMEHyperParams.from_config({"v_lr": 0.1, "templates": {"length_params": [[5, 10]], "top_k": 3}})
    assert hp.v_lr == 0.1 and hp.context_template_length_params == ((5, 10),) and hp.n_templates == 11
    with pytest.raises(ConfigError, match="unknown keys"):
        ROMEHyperParams.from_config({"v_lrr": 0.1})
    with pytest.raises(ConfigError, match="target_mode"):
        ROMEHyperParams(target_mode="dirty")


def test_row_groups_cover_rows_once_and_save_slots():
    from robustedit.rome.v_forward import plan_row_groups

    lengths = [2, 3, 4, 5, 6, 7, 8] * 5 + [3, 3]
    groups = plan_row_groups(lengths, 3, overhead=4)
    assert len(groups) <= 3 and sorted(i for g in groups for i in g) == list(range(len(lengths)))
    slots = sum(len(g) * max(lengths[i] for i in g) for g in groups)
    assert slots < len(lengths) * max(lengths)
    assert plan_row_groups(lengths, 1) == [list(range(len(lengths)))]
