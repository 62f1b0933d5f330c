"""The generation protocol: metrics on hand-made continuations, greedy decoding against transformers'
`generate`, and batched generation with per-row edits against the edit written into the weights."""
import copy

import pytest
import torch

from conftest import model_dir, tiny_gemma
from robustedit.edits import RankOneEditBatch
from robustedit.errors import ConfigError
from robustedit.evaluate import evaluate_cases, summarise
from robustedit.evaluate.generation import (GenerationSpec, eos_ids_of, generate_cases, generate_rows, generation_rows,
                                           merge_protocols, stop_rule)
from robustedit.metrics import METRICS, Continuation, get_metric, metrics_of
from robustedit.rep import RepEditBatch, adaptor_state
from test_evaluate import CASES, arch_for, make_case, random_edits

from test_rep_apply import CFG, trained_like


def gen(text, ids=(1, 2)):
    return Continuation(tuple(ids), text)


@pytest.mark.parametrize("text,target,match,span", [
    (" Paris, France.", "Paris", 1, 1),          # prefix after normalisation (space, punctuation)
    (" the PARIS of the east", "Paris", 1, 1),   # articles and case do not count
    (" Parisian food", "Paris", 0, 0),           # whole words only
    (" in Paris", "Paris", 0, 1),                # a span, not a prefix
    (" New York City", "New York", 1, 1),        # a multi-word target
    (" New", "New York", 0, 0),                  # cut short
    ("", "Paris", 0, 0),                         # an empty continuation
    (" The", "The", 0, 0),                       # a target that normalises to nothing never matches
    (" The capital of France is Paris", "Paris", 0, 1),  # a continuation that repeats the prompt
])
def test_generation_match_and_span(text, target, match, span):
    ref = gen("whatever")
    assert get_metric("generation_match")(gen(text), target=target, reference=ref) == match
    assert get_metric("generation_span")(gen(text), target=target, reference=ref) == span


def test_generation_unchanged_compares_token_ids_and_metrics_are_registered_by_protocol():
    m = get_metric("generation_unchanged@1")
    assert m(gen(" a", (5, 6)), target="x", reference=gen(" a", (5, 6))) == 1.0
    assert m(gen(" a", (5, 6)), target="x", reference=gen(" a", (5,))) == 0.0  # same text, other tokens
    assert set(metrics_of("generation")) == {"generation_match@1", "generation_span@1", "generation_unchanged@1"}
    assert set(metrics_of("teacher_forced")) | set(metrics_of("generation")) == set(METRICS)


def teststop_rule_and_spec(llama_tok):
    stopped = stop_rule(llama_tok, GenerationSpec())
    assert stopped(llama_tok(" Paris.\nThe")["input_ids"])
    assert stopped(llama_tok(" Paris. It")["input_ids"])
    assert not stopped(llama_tok(" St. Louis")["input_ids"][:2])  # " St" "." : no ". " yet
    assert not stopped(llama_tok(" Paris, France")["input_ids"])
    with pytest.raises(ConfigError, match="margin"):
        GenerationSpec(margin=-1)
    with pytest.raises(ConfigError, match="stop_strings"):
        GenerationSpec(stop_strings=("",))


def test_greedy_rows_equal_transformers_generate(llama_tok, tiny_llama_model):
    prompts = ["The mother tongue of Danielle Darrieux is", "Paris is", "I like the way the river"]
    ids = [llama_tok(p)["input_ids"] for p in prompts]
    rows = generate_rows(tiny_llama_model, ids, [6, 3, 5], batch_size=3, device="cpu", pad_id=0, eos=set())
    for p, budget, row in zip(ids, [6, 3, 5], rows):
        want = tiny_llama_model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                         do_sample=False, max_new_tokens=budget, min_new_tokens=budget,
                                         pad_token_id=0)[0, len(p):].tolist()
        assert row == want


def _per_case_reference(model, tok, edit_batch, prompts, budgets, row_case, stopped):
    """One row at a time, unpadded, with case c's edit written into the weights (for_case)."""
    out = []
    for p, b, c in zip(prompts, budgets, row_case):
        with edit_batch.for_case(c):
            out += generate_rows(model, [p], [b], 1, "cpu", pad_id=0, eos=eos_ids_of(model), stopped=stopped)
    return out


@pytest.mark.parametrize("family,tok_name", [("llama", "llama_tok"), ("gemma3", "gemma_tok")])
@pytest.mark.parametrize("method", ["rome", "rep"])
def test_batched_generation_with_per_row_edits_equals_edits_in_the_weights(request, family, tok_name, method):
    tok = request.getfixturevalue(tok_name)
    model = request.getfixturevalue(f"tiny_{'llama' if family == 'llama' else 'gemma'}_model")
    arch = arch_for(family)
    edits = random_edits(model, arch, 3, seed=2)
    edits[1] = None
    if method == "rome":
        batch = RankOneEditBatch(model, arch, edits, "cpu")
    else:
        d = arch.module(model, "down_proj", 1).in_features
        states = [adaptor_state(trained_like(d, s), CFG) if s != 1 else None for s in range(3)]
        batch = RepEditBatch(model, arch, 1, edits, states, "cpu")
    prompts = [tok(t)["input_ids"] for t in ("The mother tongue of Danielle Darrieux is", "Apple A5 was created by",
                                             "Toko Yasuda, a native speaker of", "A", "The river")]
    row_case, budgets = [0, 2, 1, 0, 2], [7, 5, 6, 4, 1]
    stopped = stop_rule(tok, GenerationSpec(stop_strings=("\n",)))
    before = copy.deepcopy(model.state_dict())
    batched = generate_rows(model, prompts, budgets, 2, "cpu", pad_id=0, eos=eos_ids_of(model), stopped=stopped,
                            row_context=batch.for_rows, row_case=row_case)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert batched == _per_case_reference(model, tok, batch, prompts, budgets, row_case, stopped)
    plain = generate_rows(model, prompts, budgets, 2, "cpu", pad_id=0, eos=eos_ids_of(model), stopped=stopped)
    assert plain[0] != batched[0] and plain[1] != batched[1]  # the edits change what is generated
    assert plain[2] == batched[2]                             # case 1 has no edit


def test_generate_cases_records_and_summary(llama_tok, tiny_llama_model):
    arch = arch_for("llama")
    edits = random_edits(tiny_llama_model, arch, len(CASES), seed=5)
    spec = GenerationSpec(margin=2)
    res = generate_cases(tiny_llama_model, llama_tok, arch, CASES, edits, 8, "cpu", spec)
    assert [c["case_id"] for c in res] == [c["case_id"] for c in CASES]
    for case in res:
        assert case["generation"] == {"margin": 2, "stop_strings": ["\n", ". "]}
        for it in case["items"]:
            n_target = len(llama_tok(" " + it["target"], add_special_tokens=False)["input_ids"])
            assert 0 <= len(it["continuation_ids"]) <= n_target + 2 + 1  # tokenisation of " "+target may differ by one
            assert it["continuation"] == llama_tok.decode(it["continuation_ids"], skip_special_tokens=True)
            assert it["pre"]["generation_unchanged@1"] == 1.0
            assert it["generation_unchanged@1"] == float(it["continuation_ids"] == it["pre"]["continuation_ids"])
    table = summarise(res, "generation_match", locality_metric="generation_unchanged")
    assert table["metric"] == "generation_match@1" and table["locality_metric"] == "generation_unchanged@1"
    loc = [it["generation_unchanged@1"] for c in res for it in c["items"] if it["group"] == "locality"]
    assert table["columns"]["locality"] == pytest.approx(100 * sum(loc) / len(loc))
    again = generate_cases(tiny_llama_model, llama_tok, arch, CASES, edits, 3, "cpu", spec, pre_from=res)
    assert again == res  # reusing the unedited continuations, and the batch size changes nothing
    with pytest.raises(ConfigError, match="stop rule"):
        generate_cases(tiny_llama_model, llama_tok, arch, CASES, edits, 3, "cpu", GenerationSpec(), pre_from=res)


@pytest.mark.integration
def test_batched_generation_equals_edit_in_weights_on_smollm2_with_rome_edits():
    from robustedit.models.load import load_model
    from robustedit.pipeline.config import compose
    from robustedit.rome.execute import execute_rome_detailed
    from robustedit.rome.hparams import ROMEHyperParams
    from test_rome_golden import REQUESTS, TEMPLATES

    lm = load_model(model_dir("smollm2-135m"), compose([])["model"], "cpu", "float32")
    hp = ROMEHyperParams(mom2_adjustment=False, context_template_length_params=((5, 5),), batch_cases=2)
    requests = REQUESTS[:2]
    edits = [e for e, _ in execute_rome_detailed(lm.model, lm.tokenizer, lm.arch, requests, None, TEMPLATES,
                                                 hp, "cpu", 4)]
    cases = [make_case(r["case_id"], r["subject"], r["prompt"].replace(r["subject"], "{}"), r["target_new"],
                       r["target_true"]) for r in requests]
    res = generate_cases(lm.model, lm.tokenizer, lm.arch, cases, edits, 8, "cpu")
    batch = RankOneEditBatch(lm.model, lm.arch, edits, "cpu")
    stopped = stop_rule(lm.tokenizer, GenerationSpec())
    rows = generation_rows(lm.tokenizer, cases, GenerationSpec())
    want = _per_case_reference(lm.model, lm.tokenizer, batch, [r[2] for r in rows], [r[3] for r in rows],
                               [r[0] for r in rows], stopped)
    got = [it["continuation_ids"] for c in res for it in c["items"]]
    assert got == want
    assert sum(it["generation_unchanged@1"] == 0 for c in res for it in c["items"]) > len(got) // 3  # edits act
    success = [it for c in res for it in c["items"] if it["group"] == "success"]
    assert all(it["generation_match@1"] == 1.0 for it in success), [it["continuation"] for it in success]


@pytest.mark.parametrize("family,tok_name", [("llama", "llama_tok"), ("gemma3", "gemma_tok")])
@pytest.mark.parametrize("method,mode", [("rome", "batched"), ("rep", "batched"), ("rome", "sequential")])
def test_continuations_from_the_teacher_forced_cache_equal_independent_generation(request, family, tok_name, method,
                                                                                  mode):
    """evaluate_cases(generation=spec) decodes from the packed teacher-forced batch's cache; its records equal
    evaluate_cases' and generate_cases' (which forwards every prompt again), merged, item for item."""
    tok = request.getfixturevalue(tok_name)
    model = request.getfixturevalue(f"tiny_{'llama' if family == 'llama' else 'gemma'}_model")
    arch = arch_for(family)
    edits = random_edits(model, arch, len(CASES), seed=3)
    edits[1] = None
    if method == "rep":
        d = arch.module(model, "down_proj", 1).in_features
        states = [adaptor_state(trained_like(d, s), CFG) if s != 1 else None for s in range(len(CASES))]
        edits = RepEditBatch(model, arch, 1, edits, states, "cpu")
    spec = GenerationSpec(margin=3, stop_strings=("\n",))
    fused = evaluate_cases(model, tok, arch, CASES, edits, 4, "cpu", mode, generation=spec)
    apart = merge_protocols(evaluate_cases(model, tok, arch, CASES, edits, 4, "cpu", mode),
                            generate_cases(model, tok, arch, CASES, edits, 5, "cpu", spec))
    assert fused == apart
    assert any(it["generation_unchanged@1"] == 0 for c in fused for it in c["items"])  # the edits act
    again = evaluate_cases(model, tok, arch, CASES, edits, 4, "cpu", mode, generation=spec, pre_from=fused)
    assert again == fused  # the unedited scores and continuations are reused
    with pytest.raises(ConfigError, match="stop rule"):
        evaluate_cases(model, tok, arch, CASES, edits, 3, "cpu", generation=GenerationSpec(), pre_from=fused)


def test_continuations_from_the_cache_keep_a_sliding_window_shorter_than_the_prompt(gemma_tok):
    """Gemma 3 with an 8-position window: the decoding masks limit sliding layers to the window, measured in
    positions (the cache holds the packed branches between the prompt and the new tokens)."""
    model = tiny_gemma(len(gemma_tok))
    model.config.sliding_window = 8
    for layer in model.model.layers:
        if getattr(layer.self_attn, "sliding_window", None):
            layer.self_attn.sliding_window = 8
    arch = arch_for("gemma3")
    spec = GenerationSpec(margin=6, stop_strings=("\n",))
    fused = evaluate_cases(model, gemma_tok, arch, CASES, None, 4, "cpu", generation=spec)
    apart = generate_cases(model, gemma_tok, arch, CASES, None, 4, "cpu", spec)
    assert max(len(gemma_tok(it["prompt"])["input_ids"]) for c in apart for it in c["items"]) > 3 * 8
    assert [it["continuation_ids"] for c in fused for it in c["items"]] == \
           [it["continuation_ids"] for c in apart for it in c["items"]]
