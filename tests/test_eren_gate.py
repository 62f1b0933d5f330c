"""EREN+score: the threshold rule against a brute-force reference, its calibration on held-out items, the
gated editor on a stub reader, and that it reuses EREN's generations."""
import itertools

import numpy as np
import pytest

from robustedit.errors import ConfigError
from robustedit.eren.editor import ErenEditor
from robustedit.eren.encoder import HashEncoder
from robustedit.eren.evaluate import MemoReader, evaluate_methods
from robustedit.eren.gate import (CalibrationError, balanced_accuracy, calibrate, calibrate_or_skip, choose_threshold,
                                  held_out)
from robustedit.eren.notebook import Notebook
from robustedit.eren.reader import StubReader


def reference_threshold(scores, labels):
    """Plain reference: try every score, the midpoints and both ends; best balanced accuracy, lowest t on ties."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    u = sorted(set(scores))
    cands = [u[0] - 1.0] + [(a + b) / 2 for a, b in zip(u, u[1:])] + [u[-1] + 1.0]
    best = None
    for t in cands:
        bacc = (sum(s >= t for s in pos) / len(pos) + sum(s < t for s in neg) / len(neg)) / 2
        if best is None or bacc > best[1] + 1e-12:
            best = (t, bacc)
    return best


def test_threshold_separates_separable_scores():
    t, bacc = choose_threshold([0.9, 0.8, 0.3, 0.2], [True, True, False, False])
    assert t == pytest.approx(0.55) and bacc == 1.0
    assert balanced_accuracy([0.9, 0.8, 0.3, 0.2], [True, True, False, False], t) == 1.0


def test_ties_go_to_the_lowest_threshold():
    # 0.25 and 0.7 both reach 0.75 balanced accuracy: the lower wins (fewer closed-book answers)
    t, bacc = choose_threshold([0.1, 0.4, 0.6, 0.8], [False, True, False, True])
    assert t == pytest.approx(0.25) and bacc == 0.75
    # inverted scores: no threshold beats chance, so the lower end (every query read from its notes, as EREN)
    t, bacc = choose_threshold([0.5, 0.7], [True, False])
    assert t == pytest.approx(0.5 - 1.0) and bacc == 0.5


@pytest.mark.parametrize("seed", range(20))
def test_threshold_equals_the_brute_force_reference(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 40))
    scores = np.round(rng.normal(size=n), 1).tolist()  # rounded: ties among scores
    labels = (rng.random(n) < 0.5).tolist()
    labels[0], labels[-1] = True, False  # both classes
    t, bacc = choose_threshold(scores, labels)
    rt, rbacc = reference_threshold(scores, labels)
    assert t == pytest.approx(rt) and bacc == pytest.approx(rbacc)
    assert balanced_accuracy(scores, labels, t) == pytest.approx(bacc)


def test_bad_calibration_input_is_named():
    with pytest.raises(CalibrationError, match="1 relevant of 1"):
        choose_threshold([0.3], [True])
    with pytest.raises(ValueError, match="same length"):
        choose_threshold([0.3, 0.2], [True])
    with pytest.raises(ValueError, match="NaN"):
        choose_threshold([float("nan"), 0.2], [True, False])
    assert issubclass(CalibrationError, ConfigError)


NOTES = ["Danielle Darrieux speaks English", "The Toyota Cresta is made by BMW", "Marie Curie was born in Warsaw"]


def notebook():
    nb = Notebook(HashEncoder())
    nb.add(NOTES)
    return nb


def test_calibration_labels_own_top1_in_scope_queries_relevant():
    items = [{"input": "Danielle Darrieux speaks", "in_scope": True, "own_note": NOTES[0]},
             {"input": "Who makes the Toyota Cresta", "in_scope": True, "own_note": NOTES[1]},
             {"input": "Danielle Darrieux speaks", "in_scope": False, "own_note": NOTES[0]},  # out of scope
             {"input": "an unrelated sentence about weather", "in_scope": False, "own_note": None}]
    gate = calibrate(items, notebook())
    assert gate["n_queries"] == 4 and gate["n_relevant"] == 2 and "threshold" in gate
    assert "skipped" in calibrate_or_skip([], notebook()) and "skipped" in calibrate_or_skip(items[:2], notebook())


def test_held_out_is_disjoint_from_the_scored_records():
    records = [{"id": i} for i in range(10)]
    scored = [records[i] for i in (1, 4, 7)]
    held = held_out(records, scored, 4, seed=0, purpose="t")
    assert len(held) == 4 and not {r["id"] for r in held} & {1, 4, 7}
    assert held == held_out(records, scored, 4, seed=0, purpose="t")  # seeded
    assert held_out(records, records, 4, seed=0, purpose="t") == []


def notes_reader():
    """Answers the first note's last word when reading notes, "closed" closed-book: never abstains."""
    def answer(prompt):
        if "\n\n" in prompt and not prompt.startswith(("Please answer", "Is it true")):
            return prompt.split("\n\n")[1].split(".\n")[0].split()[-1].rstrip(".")
        return "closed"
    return StubReader(answer)


def test_the_gate_sends_low_scoring_queries_closed_book():
    nb = notebook()
    queries = ["What does Danielle Darrieux speak?", "Zebras graze quietly"]  # the second shares no word
    scores = [h[0].score for h in nb.search(queries, 1)]
    assert scores[0] > 0.3 and scores[1] == 0.0
    eren = ErenEditor(notes_reader(), nb, "qa", "eren", k=1).answer(queries)
    gated = ErenEditor(notes_reader(), nb, "qa", "eren_score", k=1, score_threshold=0.1).answer(queries)
    assert [a.step for a in eren] == [1, 1] and [a.step for a in gated] == [1, 2]
    assert gated[0].output == eren[0].output == "English" and gated[1].output == "closed"
    assert gated[1].step1_output is None and gated[0].top_score == pytest.approx(scores[0])
    with pytest.raises(ConfigError, match="score_threshold"):
        ErenEditor(notes_reader(), nb, "qa", "eren_score")
    with pytest.raises(ConfigError, match="score_threshold"):
        ErenEditor(notes_reader(), nb, "qa", "eren", score_threshold=0.1)


def test_eren_score_reuses_erens_generations():
    items = [{"id": i, "group": "edit_scope", "in_scope": True, "input": q, "gold": g, "own_note": n}
             for i, (q, g, n) in enumerate([("What does Danielle Darrieux speak?", "English", NOTES[0]),
                                            ("Who makes the Toyota Cresta?", "BMW", NOTES[1])])]
    items.append({"id": 9, "group": "unrelated", "in_scope": False, "input": "Zebras graze quietly", "own_note": None})
    counted = {}
    for methods, t in (([("eren")], None), (["eren", "eren_score"], 0.1)):
        reader = notes_reader()
        res = evaluate_methods(items, reader, notebook(), "qa", methods, k=1, score_threshold=t)
        counted[len(methods)] = sum(len(c) for c in reader.calls)
    assert counted[1] == counted[2]  # EREN+score's step-1 prompts are EREN's: no new generation
    assert res["eren_score"].summary["score_threshold"] == 0.1 and res["eren_score"].summary["BP"] == 100.0
    assert res["eren"].summary["BP"] == 0.0  # EREN reads the zebra's unrelated note and changes the answer
    assert [it["step"] for it in res["eren_score"].items] == [1, 1, 2]
    with pytest.raises(ConfigError, match="score_threshold"):
        evaluate_methods(items, notes_reader(), notebook(), "qa", ["eren_score"])


def test_memo_reader_generates_each_prompt_once():
    inner = StubReader(lambda p: p.upper())
    memo = MemoReader(inner)
    assert memo.generate(["a", "b", "a"]) == ["A", "B", "A"] and memo.generate(["b", "c"], 20) == ["B", "C"]
    assert list(itertools.chain(*inner.calls)) == ["a", "b", "c"]
    assert memo.generate(["a"], max_new_tokens=10) == ["A"] and inner.calls[-1] == ["a"]  # another budget
