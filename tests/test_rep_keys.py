"""REP training pool and key reading."""
from __future__ import annotations

import pytest
import torch

from robustedit.errors import ConfigError, RecordError
from robustedit.hooks import capture_input
from robustedit.rep import build_pool, collect_training_keys, pool_from_case
from robustedit.readout import read_down_proj
from robustedit.tokens import encode_with_span, subject_last_index

PROMPT = "The mother tongue of Danielle Darrieux is"
SUBJECT = "Danielle Darrieux"
TEMPLATES = ["{}", "The. {}", "Because of this, we went home. {}", "I {}"]
REPH = ["Actress Danielle Darrieux", "Danielle Darrieux, the film star"]
SHUF = ["rieux DanielleDar"]
HELD = ["Danielle Darrieux was mentioned in a passage about ships .", "A second passage ."]


def down_proj(model, layer=1):
    return model.model.layers[layer].mlp.down_proj


def test_pool_layout_and_spans():
    original, pool = build_pool(PROMPT, SUBJECT, TEMPLATES + ["The. {}"], REPH, SHUF, HELD, long_context_aug=True)
    assert original.text == PROMPT and original.kind == "original"
    assert len(pool) == (1 + 2 + 1) * 4 - 1 + 2  # duplicate template dropped; original kept apart
    for it in pool + [original]:
        assert it.text[it.span[0]:it.span[1]] == it.variant
    texts = {it.text for it in pool}
    assert "The. The mother tongue of Actress Danielle Darrieux is" in texts
    assert "I The mother tongue of rieux DanielleDar is" in texts
    longs = [it for it in pool if it.kind == "long"]
    assert [it.text for it in longs] == [f"{h} {PROMPT}" for h in HELD]
    # the passage also holds the subject; the span points into the prompt part
    assert longs[0].span[0] == len(HELD[0]) + 1 + PROMPT.index(SUBJECT)


def test_long_context_noop_compat_and_off():
    _, on = build_pool(PROMPT, SUBJECT, TEMPLATES, REPH, SHUF, HELD, long_context_aug=True)
    _, noop = build_pool(PROMPT, SUBJECT, TEMPLATES, REPH, SHUF, HELD, long_context_aug=True, compat_long_noop=True)
    _, off = build_pool(PROMPT, SUBJECT, TEMPLATES, REPH, SHUF, HELD, long_context_aug=False)
    assert len(on) == len(noop) + 2 and [i.text for i in noop] == [i.text for i in off]
    with pytest.raises(RecordError, match="held long contexts"):
        build_pool(PROMPT, SUBJECT, TEMPLATES, long_context_aug=True)


def test_bad_inputs_are_named():
    with pytest.raises(RecordError, match="not found"):
        build_pool(PROMPT, "Nobody", TEMPLATES, where="case_id 3: ")
    with pytest.raises(ConfigError, match="bare"):
        build_pool(PROMPT, SUBJECT, ["The. {}"])
    with pytest.raises(ConfigError, match="exactly one"):
        build_pool(PROMPT, SUBJECT, ["{}", "{} and {}"])
    with pytest.raises(RecordError, match="case_id 9.*subject_rephrases"):
        pool_from_case({"case_id": 9, "prompt": PROMPT, "subject": SUBJECT}, TEMPLATES)


def test_pool_from_case_uses_in_domain_halves():
    case = {"case_id": 1, "prompt": PROMPT, "subject": SUBJECT,
            "subject_rephrases": {"id": REPH[:1], "ood": REPH[1:]}, "shuffled_subjects": {"id": SHUF, "ood": ["x y"]},
            "long_context": {"eval": "E .", "held": HELD}}
    _, pool = pool_from_case(case, TEMPLATES, long_context_aug=True)
    assert {it.variant for it in pool} == {SUBJECT, REPH[0], SHUF[0]}
    assert sum(it.kind == "long" for it in pool) == 2


@pytest.mark.parametrize("tok_name", ["llama_tok", "gemma_tok"])
def test_span_index_equals_subject_last_index_at_first_occurrence(tok_name, request):
    tok = request.getfixturevalue(tok_name)
    original, pool = build_pool(PROMPT, SUBJECT, TEMPLATES, REPH, SHUF)
    for it in [original] + pool:
        ids, idx = encode_with_span(tok, it.text, *it.span)
        assert ids == tok(it.text)["input_ids"]
        assert idx == subject_last_index(tok, it.text, it.variant)


@pytest.mark.parametrize("tok_name", ["llama_tok", "gemma_tok"])
def test_long_context_subject_found_after_the_passage(tok_name, request):
    tok = request.getfixturevalue(tok_name)
    _, pool = build_pool(PROMPT, SUBJECT, TEMPLATES, long_contexts=HELD[:1], long_context_aug=True)
    it = pool[-1]
    ids, idx = encode_with_span(tok, it.text, *it.span)
    first = subject_last_index(tok, it.text, SUBJECT)  # the occurrence inside the passage
    assert idx > first
    assert tok.decode(ids[:idx + 1]).endswith(f"{HELD[0]} The mother tongue of Danielle Darrieux")


def test_batched_keys_equal_single_forwards(llama_tok, tiny_llama_model):
    model, dp = tiny_llama_model, down_proj(tiny_llama_model)
    texts = [PROMPT, "Short", "The. The mother tongue of Actress Danielle Darrieux is here"]
    ids = [llama_tok(t)["input_ids"] for t in texts]
    pos = [3, 0, 6]
    keys = read_down_proj(model, dp, ids, pos, batch_rows=2, pad_id=llama_tok.pad_token_id)
    full = read_down_proj(model, dp, ids, [range(len(x)) for x in ids], batch_rows=3, pad_id=llama_tok.pad_token_id)
    full = torch.split(full, [len(x) for x in ids])
    for i, x in enumerate(ids):
        with torch.no_grad(), capture_input(dp) as cap:
            model(input_ids=torch.tensor([x]))
        torch.testing.assert_close(keys[i], cap.value[0, pos[i]], rtol=1e-5, atol=1e-5)
        assert full[i].shape == (len(x), dp.in_features)
        torch.testing.assert_close(full[i], cap.value[0], rtol=1e-5, atol=1e-5)


def test_training_keys_and_gate_data(llama_tok, tiny_llama_model):
    model, dp = tiny_llama_model, down_proj(tiny_llama_model)
    original, pool = build_pool(PROMPT, SUBJECT, TEMPLATES, REPH, SHUF)
    neg_prompts = ["The native language of Montesquieu is"]
    plain = collect_training_keys(model, llama_tok, dp, original, pool, batch_rows=5)
    gk = collect_training_keys(model, llama_tok, dp, original, pool, negative_prompts=neg_prompts,
                               with_gate_data=True, batch_rows=7)
    assert plain.pool.shape == (len(pool), dp.in_features) and plain.original.shape == (dp.in_features,)
    torch.testing.assert_close(gk.pool, plain.pool, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gk.gate_pos[0], plain.original, rtol=1e-5, atol=1e-5)
    # negatives: all positions but the subject-last one, minus positions whose prefix equals a positive's
    n_tokens = sum(len(llama_tok(it.text)["input_ids"]) for it in [original] + pool)
    n_neg_prompt = len(llama_tok(neg_prompts[0])["input_ids"])
    n_dupes = sum(it.variant == REPH[1] for it in pool)  # "...Danielle Darrieux" inside "..., the film star"
    assert gk.gate_neg.shape[0] == n_tokens - (len(pool) + 1) + n_neg_prompt - n_dupes
    # no negative coincides with a positive (they would be identical vectors)
    dist = torch.cdist(gk.gate_neg, gk.gate_pos).min()
    assert dist > 1e-3
