"""ES/BP/EQ on hand-made CounterFact-Hard and FEVER examples with a stub reader; data checks,
seeded subsampling, the robustness-suite adapter and the retrieval scaling study."""
from __future__ import annotations

import json

import pytest

from robustedit.errors import ConfigError, RecordError
from robustedit.eren.data import (edit_statements, load_counterfact_easyedit, load_counterfact_hard, load_fever,
                                  scaling_pairs, subsample)
from robustedit.eren.encoder import HashEncoder
from robustedit.eren.evaluate import (build_editor, edit_quality, evaluate_counterfact_hard, evaluate_fever,
                                      run_counterfact_hard)
from robustedit.eren.reader import StubReader
from robustedit.eren.robustness import (EREN_LOCALITY_METRIC, EREN_METRIC, case_queries, edit_statement,
                                        evaluate_robustness, suite_summary)
from robustedit.eren.scaling import recall_at_k

CFH = [
    {"id": 0, "edit_statement": "The Toyota Cresta is developed by BMW.",
     "edit_scope": [["Who developed the Toyota Cresta?", "BMW"], ["Who makes the Toyota Cresta?", "BMW"]],
     "edit_scope_true_ans": ["Toyota", "Toyota"],
     "unrelated": {"neighbor_subj": ["Who developed the Toyota Camry?"],
                   "same_subj": ["When was the Toyota Cresta introduced?"]}},
    {"id": 1, "edit_statement": "Danielle Darrieux's mother tongue is English.",
     "edit_scope": [["What is Danielle Darrieux's mother tongue?", "English"]], "edit_scope_true_ans": ["French"],
     "unrelated": {"neighbor_subj": ["What is Leon Blum's mother tongue?", "Where was Leon Blum born?"],
                   "same_subj": []}},
]
STEP1 = {"Who developed the Toyota Cresta?": "BMW", "Who makes the Toyota Cresta?": "unanswerable",
         "What is Danielle Darrieux's mother tongue?": "It is English.",
         "Who developed the Toyota Camry?": "BMW"}
CLOSED = {"Who developed the Toyota Cresta?": "Toyota", "Who makes the Toyota Cresta?": "Toyota",
          "What is Danielle Darrieux's mother tongue?": "French", "Who developed the Toyota Camry?": "Toyota",
          "When was the Toyota Cresta introduced?": "1980", "What is Leon Blum's mother tongue?": "French",
          "Where was Leon Blum born?": "Paris"}


def qa_stub(prompt: str) -> str:
    if prompt.startswith("Please answer this question: "):
        return CLOSED[prompt.split(": ", 1)[1]]
    question = prompt.rsplit("\n\n", 1)[1]
    return STEP1.get(question, "Unanswerable")


def test_edit_quality_is_the_harmonic_mean():
    assert edit_quality(50.0, 100.0) == pytest.approx(66.6666667)
    assert edit_quality(0.0, 100.0) == 0.0 and edit_quality(0.0, 0.0) == 0.0


def test_counterfact_hard_es_bp_eq_by_hand():
    res = run_counterfact_hard(CFH, HashEncoder(), StubReader(qa_stub), method="eren")
    s = res.summary
    # in scope: BMW (step 1, correct), Toyota (fallback, wrong), "It is English." (correct) -> 2/3
    # out of scope: Camry "BMW" vs "Toyota" changed; the other three fall back, unchanged -> 3/4
    es, bp = 200 / 3, 75.0
    assert s["ES"] == pytest.approx(es) and s["BP"] == pytest.approx(bp)
    assert s["EQ"] == pytest.approx(2 * es * bp / (es + bp))
    assert (s["n_in_scope"], s["n_out_of_scope"], s["n_edits"]) == (3, 4, 2)
    assert s["BP_neighbor_subj"] == pytest.approx(200 / 3) and s["BP_same_subj"] == 100.0
    assert s["ES_unedited"] == 0.0
    camry = next(it for it in res.items if it["input"] == "Who developed the Toyota Camry?")
    assert (camry["output"], camry["unedited_output"], camry["unchanged"], camry["step"]) == ("BMW", "Toyota", False, 1)
    makes = next(it for it in res.items if it["input"] == "Who makes the Toyota Cresta?")
    assert (makes["step"], makes["correct"], makes["own_note_retrieved"]) == (2, False, True)


def test_one_step_and_unedited_baselines():
    one = run_counterfact_hard(CFH, HashEncoder(), StubReader(qa_stub), method="one_step").summary
    # no fallback: "unanswerable" / "Unanswerable" are final, and differ from every closed-book output
    assert one["ES"] == pytest.approx(200 / 3) and one["BP"] == 0.0 and one["EQ"] == 0.0
    base = run_counterfact_hard(CFH, None, StubReader(qa_stub), method="unedited").summary
    assert (base["ES"], base["BP"], base["EQ"]) == (0.0, 100.0, 0.0)


def test_evaluating_an_empty_notebook_is_refused():
    ed = build_editor([], HashEncoder(), StubReader(qa_stub), "qa", "eren")
    with pytest.raises(ConfigError, match="empty"):
        evaluate_counterfact_hard(CFH, ed)


def test_fever_es_bp_by_hand():
    edits = [{"id": 0, "edit_statement": "Fox 2000 Pictures refused to release the film Soul Food.",
              "edit_scope": [["Fox 2000 Pictures refused to release Soul Food.", "yes"],
                             ["Fox 2000 Pictures released Soul Food.", "no"]], "edit_scope_true_ans": ["no", "yes"]}]
    checks = [{"id": 1, "edit_statement": "The Faroe Islands are part of a kingdom.",
               "edit_scope": [["The Faroe Islands are no longer part of a kingdom.", "no"],
                              ["Paris is in France.", "yes"]], "edit_scope_true_ans": ["no", "yes"]}]

    def stub(prompt):
        if prompt.startswith("Is it true that "):
            return "yes"
        hyp = prompt.split('Can we conclude that "', 1)[1].split('"?', 1)[0]
        return {"Fox 2000 Pictures refused to release Soul Food.": "Yes",
                "Fox 2000 Pictures released Soul Food.": "It's impossible to say",
                "The Faroe Islands are no longer part of a kingdom.": "No"}.get(hyp, "It's impossible to say")

    ed = build_editor(edit_statements(edits), HashEncoder(), StubReader(stub), "nli", "eren")
    s = evaluate_fever(edits, checks, ed).summary
    # in scope: Yes (right), fallback "yes" (wrong) -> 50; out of scope: "No" vs "yes" changed, fallback kept -> 50
    assert (s["ES"], s["BP"], s["EQ"]) == (50.0, 50.0, 50.0)
    assert s["ES_unedited"] == 50.0  # closed book says yes to both in-scope claims


def test_loaders_check_records(tmp_path):
    good = tmp_path / "cfh.json"
    good.write_text(json.dumps(CFH))
    assert load_counterfact_hard(good)[1]["id"] == 1
    bad = [dict(CFH[0]), {**CFH[1], "edit_scope_true_ans": []}]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(RecordError, match=r"record 1 \(id 1\).*edit_scope_true_ans"):
        load_counterfact_hard(tmp_path / "bad.json")
    del bad[1]["unrelated"]
    bad[1]["edit_scope_true_ans"] = ["French"]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(RecordError, match="unrelated"):
        load_counterfact_hard(tmp_path / "bad.json")
    fever = [{"id": i, "edit_statement": "s", "edit_scope": [["c", "maybe" if i == 1 else "yes"]],
              "edit_scope_true_ans": ["yes"]} for i in range(2)]
    (tmp_path / "fever.json").write_text(json.dumps(fever))
    with pytest.raises(RecordError, match="record 1.*'maybe'"):
        load_fever(tmp_path / "fever.json")
    (tmp_path / "ee.json").write_text(json.dumps([{"case_id": 3, "prompt": "p", "target_new": "t", "subject": "s"}]))
    with pytest.raises(RecordError, match="case_id 3.*rephrase_prompt"):
        load_counterfact_easyedit([tmp_path / "ee.json"])


def test_subsample_is_seeded_ordered_and_complete_when_large():
    recs = [{"id": i} for i in range(100)]
    a, b = subsample(recs, 10, seed=3), subsample(recs, 10, seed=3)
    assert a == b and len(a) == 10 and [r["id"] for r in a] == sorted(r["id"] for r in a)
    assert subsample(recs, 10, seed=4) != a
    assert subsample(recs, None, 0) == recs and subsample(recs, 500, 0) == recs


CASE = {"case_id": 7, "subject": "Danielle Darrieux", "prompt": "The mother tongue of Danielle Darrieux is",
        "target_new": "English", "target_true": "French",
        "neighborhood_prompts": ["The mother tongue of Leon Blum is"], "locality_ground_truth": "French",
        "paraphrase_prompts": ["Danielle Darrieux speaks"], "patil_prompts": [],
        "subject_rephrases": {"id": ["the actress Darrieux"], "ood": ["D. Darrieux"]},
        "shuffled_subjects": {"id": ["Darrieux Danielle"], "ood": []},
        "long_context": {"eval": "Some unrelated text.", "held": ["Held one.", "Held two."]}}


def test_robustness_queries_are_table1_items():
    assert edit_statement(CASE) == "The mother tongue of Danielle Darrieux is English"
    q = case_queries(CASE, long_id_passages=1)
    assert q == {"success": ["The mother tongue of Danielle Darrieux is"],
                 "locality": ["The mother tongue of Leon Blum is"],
                 "rephrase_id": ["The mother tongue of the actress Darrieux is"],
                 "shuffle_id": ["The mother tongue of Darrieux Danielle is"],
                 "long_id": ["Held one. The mother tongue of Danielle Darrieux is"],
                 "rephrase_ood": ["The mother tongue of D. Darrieux is"],
                 "shuffle_ood": [],
                 "long_ood": ["Some unrelated text. The mother tongue of Danielle Darrieux is"]}
    assert len(case_queries(CASE)["long_id"]) == 2  # all held passages by default
    assert case_queries(CASE, ("success", "paraphrase")) == {"success": q["success"],
                                                              "paraphrase": ["Danielle Darrieux speaks"]}
    with pytest.raises(RecordError, match="case_id 7.*subject_rephrases"):
        case_queries({**CASE, "subject_rephrases": {"id": ["x"]}})
    with pytest.raises(ConfigError, match="eren.suite.groups"):
        case_queries(CASE, ("success", "long"))


def stub_suite_reader():
    def stub(prompt):
        if prompt.startswith("Please answer this question: "):
            return "French"
        question = prompt.rsplit("\n\n", 1)[1]
        return "English" if "Danielle Darrieux" in question or "the actress" in question else "unanswerable"
    return StubReader(stub)


def test_robustness_scoring():
    ed = build_editor([edit_statement(CASE)], HashEncoder(), stub_suite_reader(), "qa", "eren")
    s = evaluate_robustness([CASE], ed, long_id_passages=1).summary
    assert s["ES_success"] == 100.0 and s["ES_long_ood"] == 100.0 and s["ES_rephrase_id"] == 100.0
    assert s["ES_long_id"] == 100.0 and s["ES_rephrase_ood"] == 0.0 and s["ES_shuffle_id"] == 0.0
    assert s["ES"] == pytest.approx(400 / 6) and s["BP"] == 100.0 and s["BP_locality"] == 100.0


def test_suite_summary_micro_and_case_mean():
    other = {**CASE, "case_id": 8, "subject": "Leon Blum", "prompt": "The mother tongue of Leon Blum is",
             "neighborhood_prompts": ["The mother tongue of Danielle Darrieux is"],
             "subject_rephrases": {"id": ["Blum"], "ood": []}, "shuffled_subjects": {"id": [], "ood": []}}
    notes = [edit_statement(CASE), edit_statement(other)]
    ed = build_editor(notes, HashEncoder(), stub_suite_reader(), "qa", "eren")
    items = evaluate_robustness([CASE, other], ed, groups=("success", "locality", "rephrase_id")).items
    micro, mean = suite_summary(items, "micro"), suite_summary(items, "case_mean")
    assert micro["metric"] == EREN_METRIC and micro["locality_metric"] == EREN_LOCALITY_METRIC
    assert micro["n_cases"] == 2 and set(micro["columns"]) == {"success", "locality", "rephrase_id"}
    # case 7 answers its own queries; case 8's are answered "English" (the stub reads only Darrieux)
    assert micro["columns"]["success"] == 50.0 and micro["n_items"]["rephrase_id"] == 2
    assert mean["columns"] == micro["columns"]  # one item per case and column: the averages agree
    pre = suite_summary(items, "micro", unedited=True)
    assert pre["stage"] == "pre" and pre["columns"]["locality"] == 100.0 and pre["columns"]["success"] == 0.0


def _brute_force_recall(encoder, statements, queries, order, n, nq, k):
    """Plain numpy reference: notebook = first n of `order`, queries = first nq of them."""
    import numpy as np

    notes = [statements[i] for i in order[:n]]
    scores = encoder.encode([queries[i] for i in order[:nq]]) @ encoder.encode(notes).T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return sum(any(notes[t] == notes[j] for t in top[j]) for j in range(nq)) / nq


class NoisyHashEncoder(HashEncoder):
    """Few hash buckets (collisions make retrieval imperfect, so recall is informative) plus a small
    text-seeded perturbation so that no two scores tie (tie order is not part of the contract)."""

    def __init__(self):
        super().__init__(64, "noisy-hash")

    def encode(self, texts):
        import zlib

        import numpy as np

        out = super().encode(texts)
        for row, t in enumerate(texts):
            out[row] += 0.01 * np.random.default_rng(zlib.crc32(t.encode())).standard_normal(self.dim)
        return out.astype(np.float32)


def test_recall_at_k_matches_brute_force():
    from robustedit.seeding import py_rng

    cases = [{"prompt": f"The capital of country{i} is", "target_new": f"city{i % 7}",
              "rephrase_prompt": f"country{i} has its capital in city{i % 3}"} for i in range(40)]
    statements, queries = scaling_pairs(cases)
    assert statements[3] == "The capital of country3 is city3"
    enc = NoisyHashEncoder()
    out = recall_at_k(enc, statements, queries, sizes=[40, 10], ks=(1, 5), index_kinds=("flat", "hnsw"),
                      max_queries=25, n_latency=5, seed=0)
    assert [(r["size"], r["index"], r["n_queries"]) for r in out["rows"]] == \
           [(10, "flat", 10), (40, "flat", 25), (10, "hnsw", 10), (40, "hnsw", 25)]
    order = list(range(40))
    py_rng(0, "eren_scaling_order").shuffle(order)
    for r in out["rows"]:
        for k in (1, 5):
            ref = _brute_force_recall(enc, statements, queries, order, r["size"], r["n_queries"], k)
            if r["index"] == "flat":
                assert r[f"recall@{k}"] == pytest.approx(ref)
            else:  # approximate, but on 40 points HNSW with efSearch=128 visits everything
                assert abs(r[f"recall@{k}"] - ref) <= 0.04
    assert out["encode"]["n_statements"] == 40
    with pytest.raises(ConfigError):
        recall_at_k(HashEncoder(), statements, queries, sizes=[41])


def test_vendored_files_load():
    from conftest import REPO

    cfh = load_counterfact_hard(REPO / "resources/data/eren/cfh_filtered.json")
    edits, checks = load_fever(REPO / "resources/data/eren/fever_filtered.json")
    assert len(cfh) == 1024 and len(edits) == len(checks) == 1024
    assert sum(len(r["edit_scope"]) == 0 for r in cfh) == 8  # edits without in-scope questions
    assert edits[0]["edit_statement"].startswith("Fox 2000 Pictures")
