"""eval_rep in bounded memory: the adaptors file is memory-mapped and the cases are evaluated in chunks,
each stacking only its own adaptors. One chunk is the unchunked evaluation exactly; several chunks give
the same exact-match results (float scores to rounding, since rows are batched within a chunk)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from conftest import tiny_llama
from robustedit.edits import RankOneEdit
from robustedit.evaluate import evaluate_cases
from robustedit.io import save_torch
from robustedit.models.arch import Architecture
from robustedit.rep import AdaptorConfig, RepEditBatch, adaptor_state, init_params
from test_evaluate import make_case

import eval_rep as eval_rep_script  # noqa: E402

from robustedit.pipeline import evaluate  # noqa: E402

LAYER = 1
ARCH = Architecture("llama", 4)


def trained_like(d, seed, cfg):
    g = torch.Generator().manual_seed(seed)
    p = init_params(d, cfg, g)
    p["lora_B"] = torch.randn(d, cfg.rank, generator=g) * 0.2
    p["gate_w2"] = p["gate_w2"] * 20  # spread the gate so that g > threshold is mixed
    return p


@pytest.fixture(scope="module")
def rep_setup(llama_tok, tmp_path_factory):
    model = tiny_llama(len(llama_tok), seed=3)
    dp = ARCH.module(model, "down_proj", LAYER)
    names = [("Danielle Darrieux", "The mother tongue of {} is"), ("Toko Yasuda", "{}, a native speaker of"),
             ("Apple A5", "{} was created by"), ("Paris", "{} is the capital of"), ("Léon Blum", "{} was born in")]
    cases = [make_case(i, s, t, n_held=1 + i % 2) for i, (s, t) in enumerate(names)]
    g = torch.Generator().manual_seed(4)
    edits = [RankOneEdit(LAYER, torch.randn(dp.in_features, generator=g) / dp.in_features ** 0.5,
                         20 * torch.randn(dp.out_features, generator=g)) for _ in cases]
    folder, paths = tmp_path_factory.mktemp("rep"), {}
    for eval_dropout in (False, True):  # the adaptors' config says whether test-time dropout is on
        cfg = AdaptorConfig(dropout=0.1, threshold=0.5, eval_dropout=eval_dropout)
        paths[eval_dropout] = folder / f"dropout{int(eval_dropout)}.adaptors.pt"
        save_torch({"case_ids": [c["case_id"] for c in cases], "layer": LAYER,
                    "states": [adaptor_state(trained_like(dp.in_features, i, cfg), cfg) for i in range(len(cases))]},
                   paths[eval_dropout])
    lm = SimpleNamespace(model=model, tokenizer=llama_tok, arch=ARCH)
    return lm, cases, edits, paths


def stage_cfg(eval_dropout=False):
    """The config keys eval_rep_script.rep_edit_batch_fn reads."""
    return {"job": {"split": "valid"}, "seed": 0,
            "rep": {"adaptor": {"eval_dropout": eval_dropout}, "gate_threshold": 0.5}}


EVAL = {"max_length": None, "long_id_passages": None}


@pytest.mark.parametrize("eval_dropout", [False, True])
def test_one_chunk_is_the_unchunked_evaluation(rep_setup, eval_dropout):
    """A split whose adaptors fit the budget is one chunk, evaluated exactly as before this change
    (one RepEditBatch of every state), with the test-time dropout stream too."""
    lm, cases, edits, paths = rep_setup
    path = paths[eval_dropout]
    make, chunk = eval_rep_script.rep_edit_batch_fn(stage_cfg(eval_dropout), path)
    assert chunk >= len(cases)
    got = evaluate.evaluate_in_chunks(lm, cases, edits, "cpu", 4, EVAL, make, chunk_cases=chunk)
    saved = torch.load(path, weights_only=True)
    gen = eval_rep_script.torch_generator(0, "rep_eval_dropout", "valid", device="cpu") if eval_dropout else None
    old = RepEditBatch(lm.model, ARCH, LAYER, edits, saved["states"], "cpu", threshold=0.5, generator=gen)
    want = evaluate_cases(lm.model, lm.tokenizer, ARCH, cases, old, 4, "cpu", mode="batched", alternatives=True)
    assert got == want


def test_chunked_eval_rep_equals_unchunked(rep_setup):
    """Chunks change which rows share a batch (length_batches sorts all rows of a call), so padding and
    float sums differ: log-probabilities agree to rounding only (they do differ in the last bits here),
    while argmaxes and the exact-match metrics are identical, as for batched vs sequential evaluation.
    Only one chunk's adaptors are ever stacked."""
    lm, cases, edits, paths = rep_setup
    pre = evaluate_cases(lm.model, lm.tokenizer, ARCH, cases, edits, 4, "cpu")  # eval_rome's results
    make, _ = eval_rep_script.rep_edit_batch_fn(stage_cfg(), paths[False])
    built = []

    def spy(lm_, edits_, device, part):
        batch = make(lm_, edits_, device, part)
        built.append(len(batch))
        return batch

    whole = evaluate.evaluate_in_chunks(lm, cases, edits, "cpu", 4, EVAL, spy, pre, None)
    exact = ("argmax_ids", "alt_argmax_ids", "exact_match@1", "token_mean_acc@1", "locality_agreement@1", "pre")
    for chunk in (1, 2):
        built.clear()
        got = evaluate.evaluate_in_chunks(lm, cases, edits, "cpu", 4, EVAL, spy, pre, chunk)
        assert built == [chunk] * (len(cases) // chunk) + ([len(cases) % chunk] if len(cases) % chunk else [])
        assert [[{k: it[k] for k in exact} for it in c["items"]] for c in got] == \
               [[{k: it[k] for k in exact} for it in c["items"]] for c in whole]
        for cg, cw in zip(got, whole):
            for a, b in zip(cg["items"], cw["items"]):
                torch.testing.assert_close(torch.tensor(a["token_logprobs"]), torch.tensor(b["token_logprobs"]),
                                           rtol=1e-5, atol=1e-6)
    changed = sum(it["argmax_ids"] != it["pre"]["argmax_ids"] for c in whole for it in c["items"])
    assert changed > 0  # the edits and adaptors do act, so the equality is not vacuous


def test_chunk_size_follows_the_byte_budget():
    state = adaptor_state(init_params(1000, AdaptorConfig(), torch.Generator().manual_seed(0)), AdaptorConfig())
    per_case = eval_rep_script.adaptor_bytes(state)
    assert per_case == 4 * (2 * 32 * 1000 + 100 * 1000 + 100 + 100 + 1)
    assert eval_rep_script.chunk_cases_for([state], budget=10 * per_case + 1) == 10
    assert eval_rep_script.chunk_cases_for([state], budget=1) == 1 and eval_rep_script.chunk_cases_for([]) is None
    assert [list(r) for r in evaluate.case_chunks(5, 2)] == [[0, 1], [2, 3], [4]]
    assert [list(r) for r in evaluate.case_chunks(3, None)] == [[0, 1, 2]]


def test_chunked_generation_equals_unchunked_and_merges_both_protocols(rep_setup):
    """On a split eval.generation does not skip, every item carries both protocols' fields; the continuations do not
    depend on the chunking, and eval_rep's run reuses the unedited continuations of eval_rome's."""
    lm, cases, edits, paths = rep_setup
    gen_cfg = {"enabled": True, "skip_splits": ["valid"], "margin": 2, "stop_strings": ["\n"]}
    assert evaluate.generation_spec({"generation": gen_cfg}, "valid") is None  # valid: teacher forcing alone
    assert evaluate.generation_spec({"generation": {**gen_cfg, "enabled": False}}, "test") is None
    spec = evaluate.generation_spec({"generation": gen_cfg}, "test")
    rome = evaluate.evaluate_in_chunks(lm, cases, edits, "cpu", 4, EVAL, spec=spec)
    make, _ = eval_rep_script.rep_edit_batch_fn(stage_cfg(), paths[False])
    whole = evaluate.evaluate_in_chunks(lm, cases, edits, "cpu", 4, EVAL, make, rome, None, spec)
    one = evaluate.evaluate_in_chunks(lm, cases, edits, "cpu", 4, EVAL, make, rome, 1, spec)
    keys = ("continuation_ids", "generation_match@1", "generation_unchanged@1", "exact_match@1")
    assert [[{k: it[k] for k in keys} for it in c["items"]] for c in one] == \
           [[{k: it[k] for k in keys} for it in c["items"]] for c in whole]
    for c_rome, c_rep in zip(rome, whole):
        assert c_rep["generation"] == {"margin": 2, "stop_strings": ["\n"]}
        for a, b in zip(c_rome["items"], c_rep["items"]):
            assert a["pre"]["continuation_ids"] == b["pre"]["continuation_ids"]
    blocks = evaluate.summaries(whole)
    assert blocks["post/generation_match/micro"]["locality_metric"] == "generation_unchanged@1"
    assert "post/exact_match/micro" in blocks and "post/generation_match/micro" not in evaluate.summaries(
        evaluate.evaluate_in_chunks(lm, cases, edits, "cpu", 4, EVAL))
