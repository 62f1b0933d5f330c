"""Data construction: joins, perturbations, filtering and the errors that name the bad record."""
import json
import random
import shutil

import pytest
import torch

from robustedit.data.cases import attach_perturbations, attach_rephrases
from robustedit.data.counterfact import join_case, pool_index
from robustedit.data.filtering import teacher_forced_exact_match
from robustedit.data.perturb import long_context, shuffled_subjects, split_id_ood, wikitext_words
from robustedit.errors import DataIntegrityError, RecordError
from robustedit.manifest import DataStore
from robustedit.seeding import py_rng
from robustedit.tokens import replace_subject

from conftest import REPO, tiny_model_cfg
from robustedit.models.arch import Architecture

POOL = [{"case_id": 5, "requested_rewrite": {"prompt": "The mother tongue of {} is", "subject": "Danielle Darrieux",
                                             "relation_id": "P103", "target_new": {"str": "English"},
                                             "target_true": {"str": "French"}},
         "paraphrase_prompts": ["p1", "p2"], "neighborhood_prompts": ["n1"]}]
REP = {"case_id": 5, "prompt": "The mother tongue of Danielle Darrieux is", "subject": "Danielle Darrieux",
       "target_new": "English", "target_true": "French", "subject_rephrase": [f"r{i}" for i in range(10)]}


def test_join_case_takes_template_and_neighbours_from_pool():
    patil = {"The mother tongue of Danielle Darrieux is French": ["x ", " "]}
    case = join_case(REP, pool_index(POOL, "pool.json"), patil, "valid", "rep.json", 0)
    assert case["prompt_template"] == "The mother tongue of {} is"
    assert case["neighborhood_prompts"] == ["n1"] and case["patil_prompts"] == ["x"]  # stripped, empty dropped
    assert case["locality_ground_truth"] == "French"


@pytest.mark.parametrize("mutate,message", [
    (lambda r: r.pop("target_true"), "record 3: missing field 'target_true'"),
    (lambda r: r.update(target_new=""), "record 3: field 'target_new' is empty"),
    (lambda r: r.update(subject="Marie Curie"), r"case_id 5\).*subject 'Marie Curie' not found in prompt"),
    (lambda r: r.update(case_id="5"), "record 3: field 'case_id' should be int"),
    (lambda r: r.update(case_id=99), r"case_id 99\).*not found in the CounterFact pool"),
    (lambda r: r.update(subject_rephrase=["ok", ""]), "subject_rephrase must be a list of non-empty strings"),
])
def test_malformed_records_are_named(mutate, message):
    rec = json.loads(json.dumps(REP))
    mutate(rec)
    with pytest.raises(RecordError, match=message):
        join_case(rec, pool_index(POOL, "pool.json"), {}, "valid", "rep.json", 3)


def test_pool_template_without_placeholder_is_named():
    bad = json.loads(json.dumps(POOL))
    bad[0]["requested_rewrite"]["prompt"] = "no placeholder"
    with pytest.raises(RecordError, match=r"pool.json record 0 \(case_id 5\): prompt template"):
        pool_index(bad, "pool.json")


def test_shuffles_are_deterministic_distinct_and_exclude_identity(llama_tok, gemma_tok):
    for tok in (llama_tok, gemma_tok):
        a = shuffled_subjects(tok, "Danielle Darrieux", 10, random.Random(1))
        b = shuffled_subjects(tok, "Danielle Darrieux", 10, random.Random(1))
        c = shuffled_subjects(tok, "Danielle Darrieux", 10, random.Random(2))
        assert a == b and a != c
        assert len(a) == 10 and len(set(a)) == 10 and "Danielle Darrieux" not in a
        pieces = sorted(tok.tokenize("Danielle Darrieux"))
        for s in a:  # same multiset of characters (spaces aside) as the subject
            assert sorted(s.replace(" ", "")) == sorted("DanielleDarrieux")
        assert len(pieces) >= 2


def test_shuffles_of_short_subjects(llama_tok):
    one = [w for w in ("Paris", "Google", "Japan") if len(llama_tok.tokenize(w)) == 1]
    assert one, "need a one-token subject"
    assert shuffled_subjects(llama_tok, one[0], 10, random.Random(0)) == []
    two = "Toko Yasuda"
    n = len(llama_tok.tokenize(two))
    import math
    assert len(shuffled_subjects(llama_tok, two, 10, random.Random(0))) <= math.factorial(n) - 1


def test_raw_join_reproduces_reference_pieces(gemma_tok):
    raw = shuffled_subjects(gemma_tok, "Danielle Darrieux", 3, random.Random(0), join="raw")
    assert any("▁" in s for s in raw)


def test_long_contexts_are_deterministic_and_clean():
    words = wikitext_words([" = Title = \n\n a {b} c d e f g h i j k l m n o p \n"])
    assert "=" not in words and "Title" not in words
    a = long_context(words, 5, random.Random(3))
    assert a == long_context(words, 5, random.Random(3))
    assert len(a.split()) == 5 and "{" not in a and "}" not in a
    with pytest.raises(ValueError, match="need at least 50 words"):
        long_context(words, 50, random.Random(0))


def test_per_case_generators_do_not_depend_on_order(llama_tok):
    words = [f"w{i}" for i in range(2000)]
    case = {"case_id": 11, "subject": "Danielle Darrieux"}
    kw = dict(seed=0, n_shuffles=10, n_words=300, n_held=5, id_fraction=0.5)
    a = attach_perturbations(case, llama_tok, words, **kw)
    attach_perturbations({"case_id": 12, "subject": "Toko Yasuda"}, llama_tok, words, **kw)
    assert a == attach_perturbations(case, llama_tok, words, **kw)
    assert len(a["long_context"]["held"]) == 5 and a["long_context"]["eval"] not in a["long_context"]["held"]
    assert len(a["shuffled_subjects"]["id"]) == 5 and len(a["shuffled_subjects"]["ood"]) == 5
    b = attach_perturbations(case, llama_tok, words, **{**kw, "seed": 1})
    assert b["long_context"]["eval"] != a["long_context"]["eval"]
    assert py_rng(0, "x").random() != py_rng(0, "y").random()


def test_id_ood_split_and_rephrases():
    assert split_id_ood(list("abcde"), 0.5) == {"id": list("abc"), "ood": list("de")}
    case = {"case_id": 1, "subject": "S", "dataset_subject_rephrases": []}
    out = attach_rephrases(case, ["A", "S", "A", " B ", "C"], "dataset", 10, 0.5)
    assert out["subject_rephrases"] == {"id": ["A", "B"], "ood": ["C"], "source": "dataset"}
    with pytest.raises(RecordError, match="case_id 1: no usable subject rephrases"):
        attach_rephrases(case, ["S"], "dataset", 10, 0.5)
    assert attach_rephrases(case, ["S"], "llm:local:x", 10, 0.5)["subject_rephrases"]["id"] == []
    assert replace_subject("S is S", "S", "T") == "T is S"


@torch.no_grad()
def test_filter_matches_unbatched_reference(llama_tok, tiny_llama_model):
    prompts = ["The mother tongue of Danielle Darrieux is", "Paris is the capital of", "A"]
    targets = ["French", "France", "long target words here"]
    arch = Architecture.from_config(tiny_model_cfg("llama"))
    got = teacher_forced_exact_match(tiny_llama_model, arch, llama_tok, prompts, targets, 2, torch.device("cpu"))
    for p, t, g in zip(prompts, targets, got):
        ids = llama_tok(p + " " + t, return_tensors="pt")["input_ids"]
        n = len(llama_tok(p)["input_ids"])
        pred = tiny_llama_model(input_ids=ids).logits[0].argmax(-1)
        assert g == bool((pred[n - 1 : ids.shape[1] - 1] == ids[0, n:]).all())
    # force a true answer: target = the model's own greedy continuation
    p = prompts[0]
    ids = llama_tok(p, return_tensors="pt")["input_ids"]
    nxt = tiny_llama_model(input_ids=ids).logits[0, -1].argmax().item()
    word = llama_tok.decode([nxt])
    if word.startswith(" ") and word.strip():
        assert teacher_forced_exact_match(tiny_llama_model, arch, llama_tok, [p], [word.strip()], 1,
                                          torch.device("cpu")) == [True]


def test_data_store_detects_corruption(tmp_path):
    root = tmp_path / "data"
    shutil.copytree(REPO / "resources" / "data" / "rep", root / "rep")
    shutil.copy(REPO / "resources" / "data" / "MANIFEST.json", root / "MANIFEST.json")
    store = DataStore(root)
    rel = "rep/valid.counterfact_para_prompt_para_subject.json"
    assert store.path(rel).is_file()
    with open(root / rel, "a") as fh:
        fh.write(" ")
    with pytest.raises(DataIntegrityError, match="valid.counterfact_para_prompt_para_subject.json: sha256"):
        DataStore(root).path(rel)
    with pytest.raises(DataIntegrityError, match="not listed"):
        store.path("rep/unknown.json")


def test_vendored_data_matches_manifest():
    store = DataStore(REPO / "resources" / "data")
    for rel in store.manifest:
        store.path(rel)
