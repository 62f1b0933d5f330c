"""Second moment E[k kᵀ] of the down_proj input: against X.T@X/n from keys captured by hand, and
invariant to batching, chunking, document order and resumption (float64 tiny models, so agreement
is to ~1e-12)."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from conftest import tiny_gemma, tiny_llama
from robustedit.errors import ConfigError
from robustedit.hooks import capture_input, run_until, stop_after
from robustedit.models.arch import Architecture
from robustedit.rome import SecondMoment, compute_second_moment, select_documents
from robustedit.rome.stats import token_budget_batches

LAYER = 1
ARCH = Architecture("llama", 4)  # Gemma-3 has the same module paths
WIKI = Path(__file__).resolve().parents[1] / "resources" / "data" / "wikitext" / "wiki.valid.raw"
TIGHT = dict(atol=1e-12, rtol=1e-10)


@pytest.fixture(scope="module")
def texts():
    lines = WIKI.read_text(encoding="utf-8").split("\n")[:22]
    assert " " in lines  # the raw file's blank lines are " "; the hub dataset's are ""
    return lines + ["", ""]  # empty rows: no key without BOS, one BOS key with it


@pytest.fixture(scope="module")
def llama64(llama_tok):
    return tiny_llama(len(llama_tok), seed=1).double()


@pytest.fixture(scope="module")
def gemma64(gemma_tok):
    return tiny_gemma(len(gemma_tok), seed=2).double()


def hand_keys(model, tok, texts, max_length, drop_bos=False):
    """Keys of every token, one unpadded document at a time."""
    down = ARCH.module(model, "down_proj", LAYER)
    rows = []
    for t in texts:
        ids = tok(t, truncation=True, max_length=max_length)["input_ids"]
        if not ids:
            continue
        with capture_input(down) as cap, stop_after(down):  # unpadded, one document per forward
            run_until(model, input_ids=torch.tensor([ids]))
        keys = cap.value[0]
        rows.append(keys[1:] if drop_bos and ids[0] == tok.bos_token_id else keys)
    return torch.cat(rows).double()


@pytest.mark.parametrize("tok_name,model_name", [("llama_tok", "llama64"), ("gemma_tok", "gemma64")])
def test_moment_equals_hand_computed(request, texts, tok_name, model_name):
    tok, model = request.getfixturevalue(tok_name), request.getfixturevalue(model_name)
    res = compute_second_moment(model, tok, ARCH, LAYER, texts, n_samples=16, seed=1, max_length=40,
                                batch_tokens=100, checkpoint_every=5)
    chosen = [texts[i] for i in select_documents(len(texts), 16, 1)]
    x = hand_keys(model, tok, chosen, 40)
    torch.testing.assert_close(res.moment, x.T @ x / x.shape[0], **TIGHT)
    assert res.accumulator.count == x.shape[0] == res.stats["tokens"]
    assert res.stats["docs"] == 16 and res.moment.dtype == torch.float64
    assert x.shape[0] == sum(min(len(tok(t)["input_ids"]), 40) for t in chosen)  # truncation, no pads


def test_invariant_to_batching_chunking_and_order(llama_tok, llama64, texts):
    base = compute_second_moment(llama64, llama_tok, ARCH, LAYER, texts, max_length=40).moment
    for batch_tokens, every in [(16, 1), (64, 3), (10_000, 1000)]:
        other = compute_second_moment(llama64, llama_tok, ARCH, LAYER, texts, max_length=40,
                                      batch_tokens=batch_tokens, checkpoint_every=every).moment
        torch.testing.assert_close(other, base, **TIGHT)
    shuffled = list(texts)
    random.Random(5).shuffle(shuffled)
    other = compute_second_moment(llama64, llama_tok, ARCH, LAYER, shuffled, max_length=40, seed=9).moment
    torch.testing.assert_close(other, base, **TIGHT)


def test_resume_after_kill_equals_one_pass(llama_tok, llama64, texts):
    kw = dict(n_samples=20, max_length=40, batch_tokens=64, checkpoint_every=4)
    full = compute_second_moment(llama64, llama_tok, ARCH, LAYER, texts, **kw)
    saved = []

    def save_then_die(state):
        saved.append(state)
        if len(saved) == 2:
            raise KeyboardInterrupt  # the job is killed after its 2nd checkpoint

    with pytest.raises(KeyboardInterrupt):
        compute_second_moment(llama64, llama_tok, ARCH, LAYER, texts, on_checkpoint=save_then_die, **kw)
    assert saved[-1]["n_docs_done"] == 8
    resumed = compute_second_moment(llama64, llama_tok, ARCH, LAYER, texts, state=saved[-1], **kw)
    torch.testing.assert_close(resumed.moment, full.moment, **TIGHT)
    assert resumed.accumulator.count == full.accumulator.count
    assert resumed.stats["docs"] == 12 and resumed.stats["resumed_from_docs"] == 8
    with pytest.raises(ConfigError, match="cannot resume"):
        compute_second_moment(llama64, llama_tok, ARCH, LAYER, texts, state=saved[-1],
                              **{**kw, "max_length": 30})


def test_include_bos_toggles_exactly_the_bos_rows(gemma_tok, gemma64, llama_tok, llama64, texts):
    kw = dict(n_samples=None, max_length=40)
    with_bos = compute_second_moment(gemma64, gemma_tok, ARCH, LAYER, texts, include_bos=True, **kw).accumulator
    no_bos = compute_second_moment(gemma64, gemma_tok, ARCH, LAYER, texts, include_bos=False, **kw).accumulator
    n_docs = len(texts)  # every document, empty lines included, starts with <bos>
    assert with_bos.count - no_bos.count == n_docs
    with capture_input(ARCH.module(gemma64, "down_proj", LAYER)) as cap:
        gemma64(input_ids=torch.tensor([[gemma_tok.bos_token_id]]))
    k_bos = cap.value[0, 0]
    torch.testing.assert_close(with_bos.sum - no_bos.sum, n_docs * torch.outer(k_bos, k_bos), **TIGHT)
    x = hand_keys(gemma64, gemma_tok, texts, 40, drop_bos=True)
    torch.testing.assert_close(no_bos.sum, x.T @ x, **TIGHT)
    # a tokenizer without BOS: the option changes nothing
    a = compute_second_moment(llama64, llama_tok, ARCH, LAYER, texts, include_bos=True, **kw).accumulator
    b = compute_second_moment(llama64, llama_tok, ARCH, LAYER, texts, include_bos=False, **kw).accumulator
    assert a.count == b.count and torch.equal(a.sum, b.sum)


def test_forward_stops_after_down_proj(llama_tok, texts):
    model = tiny_llama(len(llama_tok), seed=1)
    calls = []
    handles = [ARCH.module(model, "layer", LAYER + 1).register_forward_hook(lambda *a: calls.append(1)),
               ARCH.module(model, "lm_head").register_forward_hook(lambda *a: calls.append(1))]
    res = compute_second_moment(model, llama_tok, ARCH, LAYER, texts, n_samples=4, max_length=20)
    for h in handles:
        h.remove()
    assert calls == [] and res.moment.dtype == torch.float64  # float32 model, float64 sums


def test_accumulates_in_float64():
    acc = SecondMoment(1)
    x = torch.tensor([[1 + 2 ** -12]], dtype=torch.float32)  # x² = 1 + 2^-11 + 2^-24: not a float32
    acc.add(x)
    assert (x.T @ x).item() != (1 + 2 ** -12) ** 2
    assert acc.sum.item() == (1 + 2 ** -12) ** 2 and acc.sum.dtype == torch.float64
    with pytest.raises(ConfigError, match="not allowed"):
        SecondMoment(4, dtype=torch.float16)
    other = SecondMoment(1)
    other.add(torch.tensor([[2.0], [3.0]]))
    acc.merge(other)
    assert acc.count == 3 and acc.moment().item() == pytest.approx(((1 + 2 ** -12) ** 2 + 13) / 3)
    restored = SecondMoment(1)
    restored.load_state_dict(acc.state_dict())
    assert restored.count == 3 and torch.equal(restored.sum, acc.sum)


def test_document_subsample_is_the_reference_sampler():
    expected = list(range(100))
    random.Random(1).shuffle(expected)
    assert select_documents(100, 10, 1) == expected[:10]
    assert sorted(select_documents(100, None, 1)) == list(range(100))
    with pytest.raises(ConfigError, match="n_samples=101"):
        select_documents(100, 101, 1)


def test_token_budget_batches():
    lengths = [5, 0, 17, 3, 9, 9, 1, 40]
    batches = token_budget_batches(lengths, 20)
    assert sorted(i for b in batches for i in b) == [i for i, n in enumerate(lengths) if n > 0]
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 20
