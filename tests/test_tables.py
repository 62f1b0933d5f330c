"""Table and figure scripts on hand-made summaries (no model)."""

import pytest


import make_gate_table  # noqa: E402

from robustedit.pipeline.tables import rows_from  # noqa: E402


def summary(method, split="valid", success=50.0, include_unedited=True, model="m"):
    cols = {"success": success, "locality": 90.0, "rephrase_id": 40.0, "long_ood": 70.0}
    block = {"metric": "exact_match@1", "locality_metric": "locality_agreement@1", "n_cases": 3, "columns": cols}
    pre = dict(block, columns={k: v / 2 for k, v in cols.items()})
    return {"method": method, "model": model, "split": split, "include_unedited": include_unedited,
            "summaries": {"post/exact_match/micro": block, "pre/exact_match/micro": pre}}


def test_table1_rows_unedited_once_and_rep_without_unedited():
    rows = rows_from(summary("ROME"), "exact_match", "micro")
    assert [r["method"] for r in rows] == ["Unedited", "ROME"]
    assert rows[0]["success"] == "25.0" and rows[1]["success"] == "50.0" and rows[1]["shuffle_id"] == ""
    rep = rows_from(summary("ROME+REP", include_unedited=False), "exact_match", "micro")
    assert [r["method"] for r in rep] == ["ROME+REP"]


def test_gate_rows_sorted_by_threshold_and_deduplicated(tmp_path):
    sums = [summary("ROME+REP", success=s) for s in (10.0, 20.0, 30.0)]
    rows = make_gate_table.gate_rows(sums, [0.9, 0.5, 0.9], "exact_match", "micro")
    assert [(r["threshold"], r["success"]) for r in rows] == [(0.5, 20.0), (0.9, 30.0)]
    with pytest.raises(ValueError, match="2 summaries but 3 thresholds"):
        make_gate_table.gate_rows(sums[:2], [0.1, 0.2, 0.3], "exact_match", "micro")
    make_gate_table.write_csv(rows, tmp_path / "g.csv")
    lines = (tmp_path / "g.csv").read_text().splitlines()
    assert lines[0].startswith("model,method,split,threshold")
    assert lines[1].startswith("m,ROME+REP,valid,0.5,3,20.0,90.0,40.0,,")
    make_gate_table.plot(rows, tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
