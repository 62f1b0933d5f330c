"""REP's setting search: the grid's overrides, the declared selection rule, and the table built from hand-made
per-case results (values, paired differences to ROME, diagnostics, the selected row)."""
from __future__ import annotations

import csv
import json

import pytest

import rep_search as rep_search_script  # noqa: E402  (scripts/ is on the test path)
from robustedit.errors import ConfigError
from robustedit.pipeline.config import compose, search_points
from robustedit.pipeline.rep_search import MAX_DROP, gap_closed, select, selection_score, training_diagnostics
from test_tables import eval_summary, results, run_script, save


def test_search_points_are_every_combination_as_hydra_literals():
    grid = {"train": {"objective": ["cosine_u", "distance_raw"], "lr": [5e-4, 0.005], "batch_size": [None]}}
    points = search_points(grid)
    assert points[0] == ["rep.train.batch_size=null", "rep.train.lr=0.0005", "rep.train.objective=cosine_u"]
    assert len(points) == 4 and len({tuple(p) for p in points}) == 4
    cfg = compose(points[-1])  # every point composes and validates
    assert cfg["rep"]["train"]["batch_size"] is None and cfg["rep"]["train"]["lr"] == 0.005
    flags = search_points({"train": {"gate_original_positive": [True, False]}})
    assert flags[1] == ["rep.train.gate_original_positive=false"]
    with pytest.raises(ConfigError, match="rep.search.grid.train.lr"):
        search_points({"train": {"lr": []}})


def test_the_default_search_is_on_valid_and_composes():
    cfg = compose([])
    assert cfg["rep"]["search"]["split"] == "valid" != cfg["eval"]["report_split"]
    for point in search_points(cfg["rep"]["search"]["grid"]):
        compose(point)
    with pytest.raises(ConfigError, match="rep.search.split"):
        compose(["rep.search.split=nosuch"])


def test_selection_rule():
    base = {"success": 0.0, "locality": 0.0}
    a = {**base, "rephrase_id": 10.0, "shuffle_id": 10.0}
    b = {**base, "success": -MAX_DROP - 0.1, "rephrase_id": 50.0}  # too costly on Success
    c = {**base, "rephrase_id": 20.0, "shuffle_id": 10.0}
    assert selection_score(a) == 10.0 and selection_score(b) is None
    assert select([a, b, c]) == 2 and select([b]) is None and select([a, dict(a)]) == 0  # ties: the first
    assert gap_closed({"rephrase_id": 75.0}, {"success": 100.0, "rephrase_id": 50.0}, "rephrase_id") == 0.5
    assert gap_closed({"rephrase_id": 75.0}, {"success": 50.0, "rephrase_id": 50.0}, "rephrase_id") is None


def test_training_diagnostics_from_logs():
    logs = [{"steps": [{"agg": -0.1}, {"agg": -0.5, "consistency": 1e-6}],
             "gate": {"positives": {"frac_open": 0.9}, "negatives": {"frac_open": 0.0}}},
            {"steps": [{"agg": -0.3, "consistency": 3e-6}],
             "gate": {"positives": {"frac_open": 0.7}, "negatives": None}}]
    d = training_diagnostics(logs)
    assert d["final_agg_loss"] == pytest.approx(-0.4) and d["final_consistency"] == pytest.approx(2e-6)
    assert d["gate_open_positives"] == pytest.approx(80.0) and d["gate_open_negatives"] == 0.0 and d["steps"] == 2


def test_search_table(tmp_path):
    rome = results(6, lambda ci, j: float(j == 0))
    better = results(6, lambda ci, j: 1.0)  # every item a hit: better than ROME on every case
    same = results(6, lambda ci, j: float(j == 0))
    paths = {}
    for name, per_case in (("rome", rome), ("better", better), ("same", same)):
        paths[name] = save(tmp_path, name, eval_summary("ROME" if name == "rome" else "ROME+REP", per_case), per_case)
    log = tmp_path / "valid.rep.jsonl"
    log.write_text(json.dumps({"steps": [{"agg": -0.9, "consistency": 0.0}], "gate": {}}) + "\n")
    out = tmp_path / "search.csv"
    run_script(rep_search_script, ["--out-csv", out, "--out-md", tmp_path / "search.md", "--settings", "a", "b",
                                 "--summaries", paths["same"], paths["better"], "--logs", log, log,
                                 "--rome-summaries", paths["rome"], paths["rome"]])
    rows = list(csv.DictReader(out.open()))
    assert [(r["setting"], r["method"]) for r in rows] == [("(baseline)", "ROME"), ("a", "ROME+REP"),
                                                           ("a", "ROME+REP − ROME"), ("b", "ROME+REP"),
                                                           ("b", "ROME+REP − ROME")]
    diff_a, diff_b = rows[2], rows[4]
    assert float(diff_a["rephrase_id"]) == 0 == float(diff_a["rephrase_id_lo"]) == float(diff_a["rephrase_id_hi"])
    assert float(diff_b["rephrase_id_lo"]) > 0  # better on every case: the interval excludes 0
    assert rows[3]["selected"] == "yes" and rows[1]["selected"] == "" and float(rows[3]["final_agg_loss"]) == -0.9
    assert "[" in (tmp_path / "search.md").read_text()
