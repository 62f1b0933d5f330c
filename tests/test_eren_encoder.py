"""Encoders: MiniLM mean pooling + L2 norm equals sentence-transformers; Contriever offline is a clear error."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from robustedit.errors import ModelNotAvailableError
from robustedit.eren.encoder import HashEncoder, encoder_spec, load_encoder, mean_pool

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
    from robustedit.eren.reader import load_chat_reader

    with pytest.raises(ConfigError, match="CUDA"):
        load_encoder("minilm", device="cuda")
    with pytest.raises(ConfigError, match="CUDA"):
        load_chat_reader("/nonexistent", device="cuda")
