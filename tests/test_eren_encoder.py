"""Encoders: MiniLM mean pooling + L2 norm equals sentence-transformers; over-long queries cut on the left keep
their question (and equal the hand-cut token sequence); Contriever offline is a clear error."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from robustedit.errors import ConfigError, ModelNotAvailableError
from robustedit.eren.encoder import (HashEncoder, TransformerEncoder, encode_queries, encoder_spec, load_encoder,
                                     mean_pool)
from robustedit.eren.notebook import Notebook

TEXTS = ["Danielle Darrieux's mother tongue is English", "What is Danielle Darrieux's mother tongue?",
         "The Toyota Cresta is developed by BMW", "hi",
         "A much longer sentence, with punctuation and numbers like 1867, about Marie Curie's birth in Warsaw."]


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 6.0], [0.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert torch.equal(mean_pool(hidden, mask), torch.tensor([[2.0, 3.0], [5.0, 6.0]]))


def test_presets():
    assert encoder_spec("minilm").normalize and encoder_spec("minilm").max_length == 256
    c = encoder_spec("contriever")
    assert (c.path, c.normalize, c.local) == ("facebook/contriever", False, False)


@pytest.fixture(scope="module")
def minilm():
    return load_encoder("minilm", device="cpu", batch_size=2)


def test_minilm_equals_sentence_transformers(minilm):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(minilm.spec.path, device="cpu")
    ref = st.encode(TEXTS, batch_size=8, convert_to_numpy=True)
    ours = minilm.encode(TEXTS)  # batch_size=2: padding differs from the reference's batches
    assert ours.shape == (5, 384) and minilm.dim == 384
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # the question retrieves its own statement
    assert int(np.argmax(ours[1] @ ours[[0, 2, 4]].T)) == 0


# A long-context query as the suite builds it: a ~390-word-piece passage, then the question.
PASSAGE = " ".join(["The river winds past the old mill, under the stone bridge and through the quiet town."] * 20)
NOTES = ["Danielle Darrieux's mother tongue is English", "The Toyota Cresta is developed by BMW",
         "Marie Curie was born in Warsaw", "The river Thames flows through the town of Oxford"]


@pytest.fixture(scope="module")
def minilm_left(minilm):
    return TransformerEncoder(minilm.model, minilm.tokenizer, minilm.spec, batch_size=2, query_truncation="left")


def test_left_truncation_keeps_the_question_and_retrieves_its_note(minilm, minilm_left):
    query = PASSAGE + " What is the mother tongue of Danielle Darrieux?"
    assert len(minilm.tokenizer(query)["input_ids"]) > minilm.spec.max_length  # over-long
    for enc, top in ((minilm_left, NOTES[0]), (minilm, NOTES[3])):  # right truncation sees the passage only
        nb = Notebook(enc)
        nb.add(NOTES)
        assert nb.search([query], 1)[0][0].note == top
    # cut on the right, the question is gone: another question gives the same embedding
    other = PASSAGE + " Who developed the Toyota Cresta?"
    np.testing.assert_array_equal(minilm.encode_queries([query]), minilm.encode_queries([other]))
    assert not np.allclose(minilm_left.encode_queries([query]), minilm_left.encode_queries([other]))
    # notes are cut on the right whatever the query side: encode is sentence-transformers' in both
    np.testing.assert_array_equal(minilm_left.encode([query]), minilm.encode([query]))
    assert minilm.tokenizer.truncation_side == "right"  # the caller's tokenizer is not modified


def _hand_cut_embedding(enc, text):
    """Plain reference: [CLS] + the LAST max_length - 2 word pieces + [SEP], one forward, mean pool, L2 norm."""
    tok = enc.tokenizer
    pieces = tok(text, add_special_tokens=False)["input_ids"][-(enc.spec.max_length - 2):]
    ids = torch.tensor([[tok.cls_token_id, *pieces, tok.sep_token_id]])
    with torch.no_grad():
        hidden = enc.model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    return torch.nn.functional.normalize(hidden.mean(dim=1), dim=1)[0].numpy()


def test_left_truncated_query_equals_the_hand_cut_token_sequence(minilm_left):
    long = PASSAGE + " What is the mother tongue of Danielle Darrieux?"
    ours = minilm_left.encode_queries([long, "hi", long[:400]])  # padded batch with short and long queries
    np.testing.assert_allclose(ours[0], _hand_cut_embedding(minilm_left, long), atol=1e-5)
    np.testing.assert_allclose(ours[1], _hand_cut_embedding(minilm_left, "hi"), atol=1e-5)  # short: uncut
    np.testing.assert_allclose(ours[2], _hand_cut_embedding(minilm_left, long[:400]), atol=1e-5)


def test_query_truncation_side_is_checked_and_hash_encoder_queries_are_its_encoding(minilm):
    with pytest.raises(ConfigError, match="eren.query_truncation='middle'"):
        TransformerEncoder(minilm.model, minilm.tokenizer, minilm.spec, query_truncation="middle")
    h = HashEncoder()
    assert np.array_equal(encode_queries(h, TEXTS), h.encode(TEXTS))  # no encode_queries: encode


def test_contriever_offline_is_a_clear_error():
    with pytest.raises(ModelNotAvailableError, match="facebook/contriever"):
        load_encoder("contriever", local_files_only=True)


def test_hash_encoder_is_deterministic_and_normalised():
    a, b = HashEncoder().encode(TEXTS), HashEncoder().encode(TEXTS)
    assert np.array_equal(a, b)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-6)
    assert np.array_equal(HashEncoder().encode(["?!"]), np.zeros((1, 256), np.float32))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_an_error_not_a_fallback():
    from robustedit.errors import ConfigError
    from robustedit.eren.reader_load import load_chat_reader

    with pytest.raises(ConfigError, match="CUDA"):
        load_encoder("minilm", device="cuda")
    with pytest.raises(ConfigError, match="CUDA"):
        load_chat_reader("/nonexistent", device="cuda")
