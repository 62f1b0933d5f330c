"""Table and figure scripts on hand-made summaries and per-case results (no model)."""
import csv
import json
import sys

import pytest

import gate_threshold as gate_threshold_script  # noqa: E402
import table1 as table1_script  # noqa: E402

from robustedit.eren.robustness import suite_summaries  # noqa: E402
from robustedit.errors import DataIntegrityError  # noqa: E402
from robustedit.eren.robustness import per_case_items  # noqa: E402
from robustedit.evaluate.suite import summarise  # noqa: E402
from robustedit.pipeline.tables import METRIC_COLUMNS, TABLE1_CSV, rows_from, sibling  # noqa: E402

GROUPS = ("success", "locality", "rephrase_id", "long_ood")  # the columns these cases have items in


def summary(method, split="valid", success=50.0, include_unedited=True, model="m"):
    cols = {"success": success, "locality": 90.0, "rephrase_id": 40.0, "long_ood": 70.0}
    block = {"metric": "exact_match@1", "locality_metric": "locality_agreement@1", "n_cases": 3, "columns": cols}
    pre = dict(block, columns={k: v / 2 for k, v in cols.items()})
    return {"method": method, "model": model, "split": split, "include_unedited": include_unedited,
            "summaries": {"post/exact_match/micro": block, "pre/exact_match/micro": pre}}


def results(n_cases, hit, pre_hit=lambda ci, j: 0.0, n_items=lambda ci, group: 2):
    """Per-case records as evaluate_cases writes them; hit(ci, j) is item j's exact match (locality: 1)."""
    out = []
    for ci in range(n_cases):
        items = []
        for group in GROUPS:
            for j in range(n_items(ci, group)):
                post = {"exact_match@1": hit(ci, j), "locality_agreement@1": 1.0 if group == "locality" else 0.5,
                        # the generation protocol: only item 0 of a hit generates its target
                        "generation_match@1": hit(ci, j) * (j == 0), "generation_unchanged@1": float(j == 0)}
                pre = {"exact_match@1": pre_hit(ci, j), "locality_agreement@1": 1.0,
                       "generation_match@1": pre_hit(ci, j), "generation_unchanged@1": 1.0}
                items.append({"group": group, "prompt": f"p{ci}.{j}", "target": "t", **post, "pre": pre})
        out.append({"case_id": 100 + ci, "items": items})
    return out


def eval_summary(method, per_case, include_unedited=True, split="valid", model="m"):
    blocks = {f"{stage}/exact_match/{agg}": summarise(per_case, "exact_match", agg, stage=stage)
              for stage in ("pre", "post") for agg in ("micro", "case_mean")}
    blocks.update({f"{stage}/generation_match/{agg}": summarise(per_case, "generation_match", agg, stage=stage,
                                                                locality_metric="generation_unchanged")
                   for stage in ("pre", "post") for agg in ("micro", "case_mean")})
    return {"method": method, "model": model, "split": split, "include_unedited": include_unedited,
            "summaries": blocks}


def eren_results(case_ids, correct, teacher_forced=True):
    """EREN suite items (robustedit.eren.robustness format, teacher-forced fields as robustedit.eren.teacher_forced
    adds them) of the given cases; correct(cid, j) in scope: generated, and teacher-forced for item j == 0 only."""
    items = []
    for cid in case_ids:
        for group in GROUPS:
            for j in range(2):
                it = {"id": cid, "group": group, "in_scope": group != "locality"}
                if it["in_scope"]:
                    it.update(correct=bool(correct(cid, j)), correct_unedited=False)
                else:
                    it["unchanged"] = j == 0
                hit = float(correct(cid, j) and j == 0)
                it.update({"exact_match@1": hit, "token_mean_acc@1": hit, "locality_agreement@1": 1.0,
                           "pre": {"exact_match@1": 0.0, "token_mean_acc@1": 0.0, "locality_agreement@1": 1.0}})
                items.append(it)
    return per_case_items(items), {"method": "EREN", "model": "m", "split": "valid", "include_unedited": False,
                                   "summaries": suite_summaries(items, teacher_forced)}


def save(tmp_path, name, summary_, per_case):
    path = tmp_path / name / "valid.summary.json"
    path.parent.mkdir()
    path.write_text(json.dumps(summary_))
    sibling(path).write_text("".join(json.dumps(c) + "\n" for c in per_case))
    return path


def run_script(module, args):
    old, sys.argv = sys.argv, ["x", *map(str, args)]
    try:
        module.main()
    finally:
        sys.argv = old


def test_table1_rows_unedited_once_and_rep_without_unedited():
    rows = rows_from(summary("ROME"), "exact_match", "micro")
    assert [r["method"] for r in rows] == ["Unedited", "ROME"]
    assert rows[0]["success"] == "25.0" and rows[1]["success"] == "50.0" and rows[1]["shuffle_id"] == ""
    rep = rows_from(summary("ROME+REP", include_unedited=False), "exact_match", "micro")
    assert [r["method"] for r in rep] == ["ROME+REP"]


@pytest.fixture
def table1(tmp_path):
    """Table 1 of ROME (12 cases), ROME+REP (better on rephrase_id in every case) and EREN (8 of the cases)."""
    rome = results(12, hit=lambda ci, j: float((ci + j) % 3 == 0), pre_hit=lambda ci, j: float(ci % 4 == 0))
    rep = results(12, hit=lambda ci, j: 0.0)
    for case in rep:  # REP: the same as ROME except rephrase_id, all hits
        for item, base in zip(case["items"], next(c for c in rome if c["case_id"] == case["case_id"])["items"]):
            if item["group"] != "rephrase_id":
                item.update({k: base[k] for k in ("exact_match@1", "locality_agreement@1", "generation_match@1",
                                                  "generation_unchanged@1", "pre")})
            else:
                item["exact_match@1"] = item["generation_match@1"] = 1.0
    eren_cases, eren_sum = eren_results([100 + ci for ci in range(0, 12, 3)] + [104, 105, 107, 108],
                                        correct=lambda cid, j: cid % 2)
    paths = [save(tmp_path, "rome", eval_summary("ROME", rome), rome),
             save(tmp_path, "rep", eval_summary("ROME+REP", rep, include_unedited=False), rep),
             save(tmp_path, "eren", eren_sum, eren_cases),
             save(tmp_path, "eren_score", {"method": "EREN+score", "model": "m", "split": "valid",
                                           "skipped": "no held-out cases"}, [])]  # a skipped variant: no row
    out = tmp_path / "table1.csv"
    run_script(table1_script, [*paths, "--out-csv", out, "--out-md", tmp_path / "table1.md"])
    return list(csv.DictReader(out.open())), (tmp_path / "table1.md").read_text(), out


def test_table1_has_intervals_and_paired_differences_to_rome(table1):
    rows, md, out = table1
    assert out.read_text().splitlines()[0].split(",") == TABLE1_CSV
    tf, gen = "teacher_forced", "generation"
    gap = "generation − teacher_forced"
    assert [(r["method"], r["protocol"]) for r in rows] == [
        ("Unedited", tf), ("ROME", tf), ("ROME+REP", tf), ("ROME+REP − ROME", tf), ("EREN", tf), ("EREN − ROME", tf),
        ("Unedited", gen), ("ROME", gen), ("ROME+REP", gen), ("ROME+REP − ROME", gen), ("EREN", gen),
        ("EREN − ROME", gen), ("Unedited", gap), ("ROME", gap), ("ROME+REP", gap), ("EREN", gap)]
    assert [r["n_cases"] for r in rows] == (["12"] * 4 + ["8", "8"]) * 2 + ["12"] * 3 + ["8"]  # EREN: its 8 cases
    by = {(r["method"], r["protocol"]): r for r in rows}
    for r in rows:
        for col in METRIC_COLUMNS:
            if r[col] == "":
                assert r[f"{col}_lo"] == r[f"{col}_hi"] == ""  # no items (shuffle_id ...): no interval
            else:
                assert float(r[f"{col}_lo"]) <= float(r[col]) <= float(r[f"{col}_hi"]), (r["method"], col)
    assert by["Unedited", tf]["success"] == "25" and by["ROME", tf]["success"] == "33.3333"  # pre values, then post
    assert float(by["ROME", tf]["success_lo"]) < float(by["ROME", tf]["success_hi"])
    # item 1 of each group never generates its target: half of the teacher-forced hits
    half = pytest.approx(100 / 6, abs=1e-4)
    assert float(by["ROME", gen]["success"]) == float(by["ROME", gen]["rephrase_id"]) == half
    assert by["ROME", gen]["locality"] == "50" and by["ROME", gen]["metric"] == \
        "generation_match@1+generation_unchanged@1"
    diff = by["ROME+REP − ROME", tf]
    assert float(diff["rephrase_id"]) == pytest.approx(100 - 100 / 3) and 0 < float(diff["rephrase_id_lo"]) < 66
    assert 66.7 < float(diff["rephrase_id_hi"]) < 100.0
    assert diff["success"] == diff["success_lo"] == diff["success_hi"] == "0"  # the same on every case
    assert float(by["ROME+REP − ROME", gen]["rephrase_id"]) == pytest.approx(100 - 100 / 6, abs=1e-4)
    assert by["EREN − ROME", gen]["metric"] == "eren_answer_match@1+eren_output_unchanged@1 − " \
                                               "generation_match@1+generation_unchanged@1"
    # EREN teacher-forced: success hits on item 0 of the odd cases (4 of 8), i.e. a quarter of the items
    assert by["EREN", tf]["metric"] == "exact_match@1+locality_agreement@1" and by["EREN", tf]["success"] == "25"
    assert by["EREN", gen]["success"] == "50" and by["EREN", tf]["locality"] == "100"
    # the protocol gap: generation − teacher-forced on the same cases (ROME: 1/6 of the items vs 1/3)
    assert float(by["ROME", gap]["success"]) == pytest.approx(100 / 6 - 100 / 3, abs=1e-4)
    assert float(by["ROME", gap]["success_lo"]) <= float(by["ROME", gap]["success"]) <= 0
    assert by["EREN", gap]["success"] == "25" and by["EREN", gap]["metric"] == \
        "eren_answer_match@1+eren_output_unchanged@1 − exact_match@1+locality_agreement@1"
    assert "| m | ROME | generation − teacher_forced | 12 | -16.7 [" in md
    assert "| m | ROME | teacher_forced | 12 | 33.3 [" in md
    assert "| ROME+REP − ROME | teacher_forced | 12 | 0.0 [0.0, 0.0] |" in md
    assert "case-level percentile bootstrap (2000 resamples" in md


def test_table1_refuses_results_that_do_not_match_the_summary(tmp_path):
    rome = results(4, hit=lambda ci, j: 1.0)
    stale = eval_summary("ROME", results(4, hit=lambda ci, j: 0.0))
    path = save(tmp_path, "rome", stale, rome)
    with pytest.raises(DataIntegrityError, match="m ROME .valid.: column success is 0.0 in the summary but 100.0"):
        run_script(table1_script, [path, "--out-csv", tmp_path / "t.csv", "--out-md", tmp_path / "t.md"])


def entries(split="valid"):
    """(summary, per-case) of ROME and of ROME+REP at three thresholds (the last repeats 0.9)."""
    rome = results(6, hit=lambda ci, j: float(j == 0))
    reps = [results(6, hit=lambda ci, j, s=s: float(j == 0 or (ci < s))) for s in (2, 4, 6)]
    return ((eval_summary("ROME", rome, split=split), rome),
            [(eval_summary("ROME+REP", r, False, split=split), r) for r in reps])


def test_gate_rows_sorted_by_threshold_deduplicated_with_differences_to_rome(tmp_path):
    rome, reps = entries()
    rows = gate_threshold_script.gate_rows(reps, [0.9, 0.5, 0.9], "exact_match", "micro", [rome])
    assert [(r["method"], r["threshold"]) for r in rows] == [("ROME+REP", 0.5), ("ROME+REP", 0.9),
                                                             ("ROME+REP − ROME", 0.5), ("ROME+REP − ROME", 0.9)]
    assert [r["success"] for r in rows] == pytest.approx([100 * 10 / 12, 100.0, 100 * 4 / 12, 50.0])
    for r in rows:
        assert r["success_lo"] <= r["success"] <= r["success_hi"] and r["shuffle_id"] is None
    assert rows[3]["success_lo"] == rows[3]["success_hi"] == 50.0  # REP wins every case's second item
    with pytest.raises(ValueError, match="2 summaries but 3 thresholds"):
        gate_threshold_script.gate_rows(reps[:2], [0.1, 0.2, 0.3], "exact_match", "micro")
    assert len(gate_threshold_script.gate_rows(reps, [0.9, 0.5, 0.9], "exact_match", "micro")) == 2  # no ROME given


def test_the_declared_rule_selects_a_threshold_per_split_from_the_differences_to_rome():
    def row(method, split, t, success, locality, gain):
        return {"model": "m", "method": method, "split": split, "threshold": t, "success": success,
                "locality": locality, "rephrase_id": gain, "shuffle_ood": gain, "long_id": None}
    diff, score = "ROME+REP − ROME", "ROME+REP"
    rows = [row(score, "valid", t, 90.0, 80.0, 50.0) for t in (0.3, 0.5, 0.7, 0.9)]
    rows += [row(diff, "valid", 0.3, 0.0, -6.0, 30.0),  # the largest gain, but Locality falls over 5 points
             row(diff, "valid", 0.5, -1.0, -4.0, 20.0),
             row(diff, "valid", 0.7, 0.0, 0.0, 20.0),  # the same gain: the lower threshold (0.5) wins the tie
             row(diff, "valid", 0.9, 0.0, 0.0, 10.0)]
    rows += [row(diff, "test", 0.5, -9.0, 0.0, 40.0), row(diff, "test", 0.9, 0.0, 0.0, 1.0)]
    picked = {(r["method"], r["split"], r["threshold"]) for r in gate_threshold_script.mark_selected(rows)
              if r["selected"]}
    assert picked == {(score, "valid", 0.5), (diff, "valid", 0.5), (diff, "test", 0.9)}
    only_scores = gate_threshold_script.mark_selected([row(score, "valid", 0.5, 90.0, 80.0, 50.0)])
    assert only_scores[0]["selected"] is False  # no ROME run to compare with: nothing is selected


def test_gate_table_script_writes_bounds_and_a_plot(tmp_path):
    rome, reps = entries()
    paths = [save(tmp_path, f"rep{i}", s, pc) for i, (s, pc) in enumerate(reps[:2])]
    rome_path = save(tmp_path, "rome", *rome)
    run_script(gate_threshold_script, ["--summaries", *paths, "--thresholds", 0.9, 0.5, "--out-csv", tmp_path / "g.csv",
                                 "--out-png", tmp_path / "g.png", "--rome-summaries", rome_path])
    lines = (tmp_path / "g.csv").read_text().splitlines()
    assert lines[0].startswith("model,method,split,threshold,n_cases,success,success_lo,success_hi,locality,")
    assert lines[1].startswith("m,ROME+REP,valid,0.5,6,83.3333,")
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
