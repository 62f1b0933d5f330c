"""EREN with the real MiniLM encoder and the real SmolLM2-135M-Instruct reader on a handful of items."""
from __future__ import annotations

import pytest

from robustedit.eren.data import load_counterfact_hard
from robustedit.eren.encoder import load_encoder
from robustedit.eren.evaluate import run_counterfact_hard
from robustedit.eren.prompts import make_context, qa_closed_book_prompt, qa_prompt
from robustedit.eren.reader_load import load_chat_reader

from conftest import REPO, model_dir

pytestmark = pytest.mark.integration
CFH = REPO / "resources" / "data" / "eren" / "cfh_filtered.json"


@pytest.fixture(scope="module")
def reader():
    return load_chat_reader(model_dir("smollm2-135m"), device="cpu", batch_size=8)


@pytest.fixture(scope="module")
def records():
    by_id = {r["id"]: r for r in load_counterfact_hard(CFH)}
    out = []
    for rid in (56, 280):  # "BMW developed the Toyota Cresta." / "Aerosvit Airlines was formed in Paris."
        rec = dict(by_id[rid])
        rec["unrelated"] = {k: v[:2] for k, v in rec["unrelated"].items()}  # keep the run short
        out.append(rec)
    return out


def test_real_reader_batched_equals_unbatched(reader, records):
    prompts = [qa_prompt(make_context([r["edit_statement"].rstrip(".")]), r["edit_scope"][0][0], True)
               for r in records]
    prompts += [qa_closed_book_prompt(r["unrelated"]["neighbor_subj"][0]) for r in records]
    batched = reader.generate(prompts)
    reader.batch_size = 1
    try:
        single = reader.generate(prompts)
    finally:
        reader.batch_size = 8
    assert batched == single
    assert all(isinstance(o, str) and o for o in batched)


def test_real_end_to_end_on_two_edits(reader, records):
    enc = load_encoder("minilm", device="cpu")
    res = run_counterfact_hard(records, enc, reader, method="eren", k=5)
    s = res.summary
    n_out = sum(len(v) for r in records for v in r["unrelated"].values())
    assert s["n_in_scope"] == 5 and s["n_out_of_scope"] == n_out and s["n_edits"] == 2
    assert 0.0 <= s["ES"] <= 100.0 and 0.0 <= s["BP"] <= 100.0
    # MiniLM puts each edit question's own statement among the (two) notes
    assert s["own_note_retrieved_in_scope"] == 100.0
    for it in res.items:
        assert it["step"] in (1, 2)
        if it["step"] == 2:  # the fallback is the unedited model's closed-book answer
            assert it["output"] == it["unedited_output"]
    # SmolLM2 reads the note for this direct question (greedy, fp32 CPU)
    cresta = next(it for it in res.items if it["id"] == 56 and it["in_scope"])
    assert cresta["correct"], cresta["output"]
