"""Teacher-forced scoring and the robustness evaluation suite on tiny random models.

References are plain: the full model's logits on each item alone (no padding, no gathering), and the
sequential apply -> evaluate -> restore protocol for the batched per-row edits.
"""
import copy

import pytest
import torch

from conftest import tiny_gemma, tiny_model_cfg
from robustedit.edits import RankOneEdit
from robustedit.errors import RecordError
from robustedit.evaluate import build_items, encode_item, evaluate_cases, gathered_logits, score_items, summarise
from robustedit.evaluate.scoring import length_batches
from robustedit.batching import right_pad
from robustedit.models.arch import Architecture

PASSAGE = ("The river rises in the northern hills and flows south through farmland and two small towns "
           "before it reaches the sea near an old harbour.")


def make_case(case_id=0, subject="Danielle Darrieux", template="The mother tongue of {} is",
              new="English", true="French", n_held=2):
    held = ["A held passage about trains, weather and the price of bread in winter.", "Another held passage."]
    long_context = {"eval": PASSAGE, "held": held[:n_held]}
    return {
        "case_id": case_id, "split": "valid", "subject": subject, "prompt": template.format(subject),
        "prompt_template": template, "relation_id": "P103", "target_new": new, "target_true": true,
        "paraphrase_prompts": [f"He was born in the spring. {template.format(subject)}"],
        "patil_prompts": [f"What {subject} speaks natively is", f"In terms of native language, {subject} uses"],
        "neighborhood_prompts": [template.format("Léon Blum"), template.format("Raymond Barre")],
        "locality_ground_truth": true,
        "subject_rephrases": {"id": [f"the actress {subject}", "she"], "ood": [f"famous {subject}"],
                              "source": "dataset"},
        "shuffled_subjects": {"id": [" ".join(reversed(subject.split()))], "ood": []},
        "long_context": long_context,
    }


CASES = [
    make_case(0),
    make_case(1, "Toko Yasuda", "{}, a native speaker of", "Russian", "Japanese", n_held=1),
    make_case(2, "Apple A5", "{} was created by", "Google", "Apple"),
]


def arch_for(family):
    return Architecture.from_config(tiny_model_cfg(family))


def random_edits(model, arch, n, layer=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    lin = arch.module(model, "down_proj", layer)
    # |u| ~ 1 and |v| ~ 160: large enough to move the tiny models' argmax (asserted below)
    return [RankOneEdit(layer, torch.randn(lin.in_features, generator=g) / lin.in_features ** 0.5,
                        20 * torch.randn(lin.out_features, generator=g)) for _ in range(n)]


def test_build_items_groups_and_first_occurrence_replacement():
    case = make_case(subject="Paris", template="{} is the capital")
    case["prompt"] = "Paris is the capital; Paris lies on the river"
    items = build_items(case)
    groups = [it.group for it in items]
    assert groups.count("success") == 1 and groups.count("locality") == 2 and groups.count("patil") == 2
    assert groups.count("rephrase_id") == 2 and groups.count("rephrase_ood") == 1
    assert groups.count("long_id") == 2 and groups.count("long_ood") == 1
    reph = [it for it in items if it.group == "rephrase_id"][0]
    assert reph.prompt == "the actress Paris is the capital; Paris lies on the river"  # first occurrence only
    held = case["long_context"]["held"]
    assert [it.prompt for it in items if it.group == "long_id"] == [h + " " + case["prompt"] for h in held]
    assert [it.prompt for it in items if it.group == "long_ood"] == [PASSAGE + " " + case["prompt"]]
    loc = [it for it in items if it.group == "locality"][0]
    assert (loc.target, loc.alternative) == ("French", "English")
    assert [it.prompt for it in build_items(case, 1) if it.group == "long_id"] == [held[0] + " " + case["prompt"]]
    bad = make_case(case_id=9)
    bad["long_context"]["held"] = "not a list"
    with pytest.raises(RecordError, match="case_id 9: long_context.held"):
        build_items(bad)


def test_subject_missing_from_prompt_names_the_case():
    case = make_case(case_id=4242)
    case["prompt"] = "The mother tongue of somebody else is"
    with pytest.raises(RecordError, match="case_id 4242"):
        build_items(case)
    case = make_case(case_id=77)
    del case["neighborhood_prompts"]
    with pytest.raises(RecordError, match="case_id 77: missing keys"):
        build_items(case)


@pytest.mark.parametrize("family,tok_name", [("llama", "llama_tok"), ("gemma3", "gemma_tok")])
def test_gathered_logits_equal_full_logits(request, family, tok_name):
    tok = request.getfixturevalue(tok_name)
    model = request.getfixturevalue(f"tiny_{'llama' if family == 'llama' else 'gemma'}_model")
    arch = arch_for(family)
    seqs = [tok(t)["input_ids"] for t in ["The mother tongue of Danielle Darrieux is French",
                                          "Apple A5 was created by", PASSAGE]]
    ids, mask = right_pad(seqs, device="cpu")
    rows = torch.tensor([0, 0, 1, 2, 2, 2])
    pos = torch.tensor([0, len(seqs[0]) - 1, len(seqs[1]) - 1, 3, 10, len(seqs[2]) - 1])
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask).logits
        got = gathered_logits(model, arch, ids, mask, rows, pos)
    torch.testing.assert_close(got, full[rows, pos], rtol=1e-5, atol=1e-5)


def test_gathered_logits_apply_final_softcapping(gemma_tok):
    model = tiny_gemma(len(gemma_tok), seed=3)
    model.config.final_logit_softcapping = 0.05  # tiny cap: visibly changes logits of scale ~0.1
    ids, mask = right_pad([gemma_tok("Apple A5 was created by")["input_ids"]], device="cpu")
    rows, pos = torch.tensor([0, 0]), torch.tensor([1, 4])
    with torch.no_grad():
        full = model(input_ids=ids, attention_mask=mask).logits
        got = gathered_logits(model, arch_for("gemma3"), ids, mask, rows, pos)
        raw = model.lm_head(model.model(input_ids=ids, attention_mask=mask).last_hidden_state)
    assert full.abs().max() <= 0.05 + 1e-6 and not torch.allclose(full, raw)  # the cap is active
    torch.testing.assert_close(got, full[rows, pos], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family,tok_name", [("llama", "llama_tok"), ("gemma3", "gemma_tok")])
def test_scores_equal_unpadded_reference_even_with_left_padding_tokenizer(request, family, tok_name):
    tok = request.getfixturevalue(tok_name)
    model = request.getfixturevalue(f"tiny_{'llama' if family == 'llama' else 'gemma'}_model")
    pairs = [("The mother tongue of Danielle Darrieux is", "French"), (PASSAGE, "Atlantic Ocean"),
             ("Apple A5 was created by", "Apple")]
    old_side = tok.padding_side
    tok.padding_side = "left"  # the library must not depend on this
    try:
        enc = [encode_item(tok, p, t) for p, t in pairs]
        got = score_items(model, arch_for(family), enc, batch_size=3, device="cpu")
        # the two short items share a right-padded batch (the passage gets its own: length_batches)
        assert [0, 2] in [sorted(b) for b in length_batches([len(e.input_ids) for e in enc], 3)]
        assert len(enc[0].input_ids) != len(enc[2].input_ids)
    finally:
        tok.padding_side = old_side
    for (prompt, target), e, s in zip(pairs, enc, got):
        has_bos = tok(prompt)["input_ids"][0] == tok.bos_token_id
        assert has_bos == (family == "gemma3") and e.input_ids[0] == tok(prompt)["input_ids"][0]
        assert list(e.input_ids) == tok(prompt + " " + target)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([e.input_ids])).logits[0]
        read = logits[e.n_prompt - 1: e.n_prompt - 1 + len(e.target_ids)]
        assert s.argmax_ids == read.argmax(-1).tolist()
        want = torch.log_softmax(read, -1)[torch.arange(len(e.target_ids)), torch.tensor(e.target_ids)]
        torch.testing.assert_close(torch.tensor(s.logprobs), want, rtol=1e-4, atol=1e-5)


def _item_fields(per_case, fields):
    return [[{k: it[k] for k in fields} for it in case["items"]] for case in per_case]


@pytest.mark.parametrize("family,tok_name", [("llama", "llama_tok"), ("gemma3", "gemma_tok")])
def test_batched_per_row_edits_equal_sequential_apply_restore(request, family, tok_name):
    tok = request.getfixturevalue(tok_name)
    model = request.getfixturevalue(f"tiny_{'llama' if family == 'llama' else 'gemma'}_model")
    arch = arch_for(family)
    edits = random_edits(model, arch, len(CASES))
    edits[1] = None  # a case without an edit
    before = copy.deepcopy(model.state_dict())
    seq = evaluate_cases(model, tok, arch, CASES, edits, batch_size=4, device="cpu", mode="sequential")
    bat = evaluate_cases(model, tok, arch, CASES, edits, batch_size=5, device="cpu", mode="batched")
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit-identical weights

    exact = ["group", "prompt", "target", "target_ids", "argmax_ids", "alt_argmax_ids", "exact_match@1",
             "token_mean_acc@1", "locality_agreement@1"]
    assert _item_fields(seq, exact) == _item_fields(bat, exact)
    for cs, cb in zip(seq, bat):
        for a, b in zip(cs["items"], cb["items"]):
            torch.testing.assert_close(torch.tensor(a["token_logprobs"]), torch.tensor(b["token_logprobs"]),
                                       rtol=1e-4, atol=1e-4)
            assert a["pre"]["argmax_ids"] == b["pre"]["argmax_ids"]
    # the equality is not vacuous: edited cases change predictions, the unedited case does not
    changed = [sum(it["argmax_ids"] != it["pre"]["argmax_ids"] for it in case["items"]) for case in bat]
    assert changed[0] > 0 and changed[2] > 0 and changed[1] == 0
    for metric in ("exact_match", "token_mean_acc", "prob_compare"):
        for agg in ("micro", "case_mean"):
            assert summarise(seq, metric, agg) == summarise(bat, metric, agg)


def test_item_metrics_and_summary_match_their_definitions(llama_tok, tiny_llama_model):
    arch = arch_for("llama")
    edits = random_edits(tiny_llama_model, arch, len(CASES), seed=5)
    res = evaluate_cases(tiny_llama_model, llama_tok, arch, CASES, edits, batch_size=8, device="cpu")
    for case in res:
        for it in case["items"]:
            hits = [a == t for a, t in zip(it["argmax_ids"], it["target_ids"])]
            assert it["exact_match@1"] == float(all(hits))
            assert it["token_mean_acc@1"] == pytest.approx(sum(hits) / len(hits))
            agree = [a == p for a, p in zip(it["argmax_ids"], it["pre"]["argmax_ids"])]
            assert it["locality_agreement@1"] == pytest.approx(sum(agree) / len(agree))
            mean_new = sum(it["token_logprobs"]) / len(it["token_logprobs"])
            mean_alt = sum(it["alt_token_logprobs"]) / len(it["alt_token_logprobs"])
            assert it["prob_compare@1"] == float(mean_new > mean_alt)
            assert it["pre"]["locality_agreement@1"] == 1.0
    table = summarise(res, "token_mean_acc", "micro")
    assert table["metric"] == "token_mean_acc@1" and table["locality_metric"] == "locality_agreement@1"
    assert table["n_items"]["long_id"] == 5 and table["n_items"]["long_ood"] == 3  # case 1 holds one passage
    assert "shuffle_ood" not in table["columns"] and table["n_items"]["shuffle_ood"] == 0  # no case has one
    values = [it["token_mean_acc@1"] for c in res for it in c["items"] if it["group"] == "patil"]
    assert table["columns"]["patil"] == pytest.approx(100 * sum(values) / len(values))
    loc = [[it["locality_agreement@1"] for it in c["items"] if it["group"] == "locality"] for c in res]
    cm = summarise(res, "token_mean_acc", "case_mean")["columns"]["locality"]
    assert cm == pytest.approx(100 * sum(sum(v) / len(v) for v in loc) / len(loc))
    res2 = evaluate_cases(tiny_llama_model, llama_tok, arch, CASES[:1], None, batch_size=8, device="cpu",
                          alternatives=False)
    with pytest.raises(RecordError, match="prob_compare"):
        summarise(res2, "prob_compare")


def test_no_edit_scores_the_unedited_model_once(llama_tok, tiny_llama_model, monkeypatch):
    """With no edits the post phase is the pre phase: one scoring pass, the same fields in both phases."""
    import robustedit.evaluate.suite as suite

    calls = []
    monkeypatch.setattr(suite, "score_items", lambda *a, **k: calls.append(1) or score_items(*a, **k))
    res = evaluate_cases(tiny_llama_model, llama_tok, arch_for("llama"), CASES, None, batch_size=8, device="cpu")
    assert len(calls) == 1
    for case in res:
        for it in case["items"]:
            assert {k: v for k, v in it.items() if k in it["pre"]} == it["pre"]


def test_edits_in_the_weights_with_reused_pre_scores_score_the_model_as_it_is(llama_tok, tiny_llama_model):
    """The sequential protocol's call: every edit already written into the weights (no edit batch) and the
    unedited scores reused as pre. The post phase is this model's, never the reused pre phase."""
    from robustedit.edits import applied

    arch = arch_for("llama")
    unedited = evaluate_cases(tiny_llama_model, llama_tok, arch, CASES, None, batch_size=8, device="cpu")
    (edit,) = random_edits(tiny_llama_model, arch, 1, seed=4)
    with applied(arch.module(tiny_llama_model, "down_proj", edit.layer), edit):
        got = evaluate_cases(tiny_llama_model, llama_tok, arch, CASES, None, batch_size=8, device="cpu",
                             pre_from=unedited)
        want = evaluate_cases(tiny_llama_model, llama_tok, arch, CASES, None, batch_size=8, device="cpu")
    fields = ["argmax_ids", "token_logprobs"]
    assert _item_fields(got, fields) == _item_fields(want, fields) != _item_fields(unedited, fields)
    assert [[it["pre"] for it in c["items"]] for c in got] == [[it["pre"] for it in c["items"]] for c in unedited]


def test_pre_scores_can_be_reused(llama_tok, tiny_llama_model):
    arch = arch_for("llama")
    edits = random_edits(tiny_llama_model, arch, len(CASES), seed=2)
    first = evaluate_cases(tiny_llama_model, llama_tok, arch, CASES, edits, batch_size=8, device="cpu")
    again = evaluate_cases(tiny_llama_model, llama_tok, arch, CASES, edits, batch_size=8, device="cpu",
                           mode="sequential", pre_from=first)
    assert _item_fields(first, ["argmax_ids", "exact_match@1"]) == _item_fields(again, ["argmax_ids", "exact_match@1"])
    assert [[it["pre"] for it in c["items"]] for c in first] == [[it["pre"] for it in c["items"]] for c in again]
