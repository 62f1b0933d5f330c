"""EREN notebook: exact retrieval against numpy brute force, k clamping, empty notebook, HNSW,
statement cleaning, save/load round trip, and the no-silent-fallback GPU option."""
from __future__ import annotations

import json

import numpy as np
import pytest

from robustedit.errors import ConfigError, DataIntegrityError, RecordError
from robustedit.eren.encoder import HashEncoder
from robustedit.eren.notebook import Notebook, clean_statement


class TableEncoder:
    """Maps each text to a fixed random vector (not normalised, so inner products vary in scale)."""

    name, dim = "table", 32

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.table: dict[str, np.ndarray] = {}

    def encode(self, texts):
        for t in texts:
            if t not in self.table:
                self.table[t] = self.rng.standard_normal(self.dim).astype(np.float32)
        return np.stack([self.table[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)


def _notebook(n: int, index: str = "flat", seed: int = 0):
    enc = TableEncoder(seed)
    nb = Notebook(enc, index=index)
    nb.add([f"note {i}" for i in range(n)])
    return nb, enc


def test_flat_search_equals_numpy_brute_force():
    nb, enc = _notebook(200)
    queries = [f"query {j}" for j in range(30)]
    hits = nb.search(queries, k=5)
    note_emb = enc.encode(nb.notes)
    scores = enc.encode(queries) @ note_emb.T
    for j, row in enumerate(hits):
        expected = np.argsort(-scores[j], kind="stable")[:5]
        assert [h.note_id for h in row] == expected.tolist()
        np.testing.assert_allclose([h.score for h in row], scores[j, expected], rtol=1e-5, atol=1e-5)
        assert [h.note for h in row] == [nb.notes[i] for i in expected]


def test_k_larger_than_notebook_is_clamped():
    nb, _ = _notebook(3)
    hits = nb.search(["q1", "q2"], k=5)
    assert [len(r) for r in hits] == [3, 3]
    assert sorted(h.note_id for h in hits[0]) == [0, 1, 2]


def test_empty_notebook_returns_no_notes():
    nb = Notebook(TableEncoder())
    assert len(nb) == 0
    assert nb.search(["anything", "else"], k=5) == [[], []]
    assert nb.search([], k=5) == []
    with pytest.raises(ConfigError):
        nb.search(["q"], k=0)


def test_statements_lose_one_trailing_period_as_eren():
    assert clean_statement("Paris is in Italy.") == "Paris is in Italy"
    assert clean_statement("Paris is in Italy. ") == "Paris is in Italy"
    assert clean_statement("U.S.A..") == "U.S.A."
    assert clean_statement("no period") == "no period"
    nb = Notebook(HashEncoder())
    nb.add(["Paris is in Italy.", "Rome is in France"])
    assert nb.notes == ["Paris is in Italy", "Rome is in France"]
    with pytest.raises(RecordError, match=r"statement\[1\]"):
        nb.add(["fine", "  "])


def test_hash_encoder_retrieves_the_statement_sharing_words():
    nb = Notebook(HashEncoder())
    nb.add(["Danielle Darrieux's mother tongue is English.", "The Toyota Cresta is developed by BMW.",
            "Aerosvit Airlines was founded in Paris."])
    top = nb.search(["Who developed the Toyota Cresta?"], k=1)[0][0]
    assert top.note == "The Toyota Cresta is developed by BMW"


def test_precomputed_embeddings_are_checked():
    enc = TableEncoder()
    nb = Notebook(enc)
    with pytest.raises(ValueError, match="shape"):
        nb.add(["a", "b"], embeddings=np.zeros((3, enc.dim)))
    with pytest.raises(ValueError, match="NaN"):
        nb.add(["a"], embeddings=np.full((1, enc.dim), np.nan))
    assert len(nb) == 0


def test_hnsw_top5_mostly_agrees_with_exact():
    flat, enc = _notebook(500, "flat", seed=1)
    hnsw = Notebook(enc, index="hnsw")
    hnsw.add(flat.notes)
    queries = [f"q{j}" for j in range(50)]
    exact = [{h.note_id for h in r} for r in flat.search(queries, 5)]
    approx = [{h.note_id for h in r} for r in hnsw.search(queries, 5)]
    overlap = sum(len(a & b) for a, b in zip(exact, approx)) / (5 * len(queries))
    assert overlap >= 0.9  # efSearch=128 on 500 points is near-exact
    assert all(len(r) == 5 for r in approx)


def test_unknown_index_and_gpu_without_support_are_errors():
    import faiss

    with pytest.raises(ConfigError, match="ivf"):
        Notebook(TableEncoder(), index="ivf")
    if faiss.get_num_gpus() == 0:
        with pytest.raises(ConfigError, match="GPU"):
            Notebook(TableEncoder(), faiss_device="gpu")
    with pytest.raises(ConfigError):
        Notebook(TableEncoder(), faiss_device="tpu")


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_save_load_round_trip(tmp_path, index):
    nb, enc = _notebook(64, index)
    folder = tmp_path / "nb"
    nb.save(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["index.faiss", "meta.json", "notes.json"]
    again = Notebook.load(folder, enc)
    queries = [f"q{j}" for j in range(10)]
    assert again.notes == nb.notes and again.kind == index
    assert [[(h.note_id, h.note) for h in r] for r in again.search(queries, 5)] == \
           [[(h.note_id, h.note) for h in r] for r in nb.search(queries, 5)]
    # overwrite in place: the old content is replaced, no temporary folders are left behind
    again.add(["one more note."])
    again.save(folder)
    assert Notebook.load(folder, enc).notes[-1] == "one more note"
    assert [p.name for p in tmp_path.iterdir()] == ["nb"]


def test_load_checks_encoder_and_consistency(tmp_path):
    nb, _ = _notebook(5)
    nb.save(tmp_path / "nb")
    with pytest.raises(ConfigError, match="encoder"):
        Notebook.load(tmp_path / "nb", HashEncoder())
    (tmp_path / "nb" / "notes.json").write_text(json.dumps(["only one"]))
    with pytest.raises(DataIntegrityError, match="5 vectors"):
        Notebook.load(tmp_path / "nb", TableEncoder())
    with pytest.raises(DataIntegrityError, match="lacks"):
        Notebook.load(tmp_path / "missing", TableEncoder())
