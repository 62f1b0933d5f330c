"""EREN's pipeline stages: config and hashes, the stage functions on stub models (hash encoder, stub reader)
and real vendored data, the tables, and the Snakemake plan."""
import itertools
import json
import subprocess
import sys

import pytest

from conftest import REPO

from robustedit.pipeline.config import compose  # noqa: E402
from robustedit.pipeline.stage import stage_dir  # noqa: E402

import eren_eval  # noqa: E402
import eren_index  # noqa: E402
import eren_scaling  # noqa: E402
import eren_suite  # noqa: E402
import eren_scaling_plot as eren_scaling_plot_script  # noqa: E402
import eren_table as eren_table_script  # noqa: E402
from robustedit.errors import ConfigError, DataIntegrityError, RecordError  # noqa: E402
from robustedit.eren.encoder import HashEncoder  # noqa: E402
from robustedit.eren.reader import StubReader, TimedReader  # noqa: E402
from robustedit.manifest import DataStore  # noqa: E402
from robustedit.pipeline.eren import calibration_items  # noqa: E402
from robustedit.pipeline.tables import rows_from  # noqa: E402
from robustedit.stages import per_split  # noqa: E402
from robustedit.hashing import stage_hash  # noqa: E402

EREN_STAGES = ("eren_index", "eren_eval", "eren_scaling", "eren_suite")


def hashes(*overrides):
    cfg = compose(list(overrides))
    return {s: stage_hash(cfg, s, "valid" if per_split(s) else None) for s in EREN_STAGES}  # the suite: per split


def changed(*overrides):
    """The EREN stages whose directory changes under the overrides."""
    base, new = hashes(), hashes(*overrides)
    return {s for s in EREN_STAGES if base[s] != new[s]}


def test_eren_stage_hash_examples():
    """A few overrides by hand; tests/test_stage_hashes.py checks every key of every stage."""
    assert changed("eren.n_records=null") == {"eren_eval"}
    assert changed("eren.encoder=contriever") == {"eren_index", "eren_eval", "eren_scaling", "eren_suite"}
    assert changed("eren.scaling.sizes=[100]") == {"eren_scaling"}
    assert changed("eren.suite.n_cases=3", "eval.long_id_passages=2") == {"eren_suite"}
    assert changed("eren.k=3") == {"eren_eval", "eren_scaling", "eren_suite"}
    # the query side is not the notebook's (notes are always cut on the right); the gate's calibration set
    assert changed("eren.query_truncation=right") == {"eren_eval", "eren_scaling", "eren_suite"}
    assert changed("eren.score_gate.n_calibration=8") == {"eren_eval", "eren_suite"}
    # the edit model's cases feed only the suite; ROME, REP, batch sizes and the faiss device feed none
    assert changed("model=gemma3-270m") == {"eren_suite"}
    assert changed("rome.v_lr=0.1", "rep.gate_threshold=0.5", "hardware.batch_size=3", "eren.encoder_batch_size=8",
                   "eren.faiss_device=gpu") == set()


@pytest.mark.parametrize("model,hardware", list(itertools.product(
    ["smollm2-135m", "gemma3-270m", "llama2-7b", "mistral-7b"], ["cpu", "gpu"])))
def test_every_model_and_hardware_composes_with_eren(model, hardware):
    cfg = compose([f"model={model}", f"hardware={hardware}"])
    assert cfg["eren"]["reader"] == "smollm2-135m" and cfg["eren"]["n_records"] >= 1
    assert str(stage_dir(cfg, "eren_suite", "valid")).startswith(f"results/{model}/eren_suite/")


@pytest.mark.parametrize("override,message", [
    ("eren.index=ivf", "eren.index: 'ivf' is not one of"),
    ("eren.n_records=0", "eren.n_records: 0 is less than the minimum"),
    ("eren.methods=[eren,mend]", "eren.methods.1: 'mend' is not one of"),
    ("eren.query_truncation=middle", "eren.query_truncation: 'middle' is not one of"),
    ("eren.score_gate.n_calibration=0", "eren.score_gate.n_calibration: 0 is less than the minimum"),
    ("eren.suite.groups=[success,long]", "eren.suite.groups.1: 'long' is not one of"),
])
def test_bad_eren_config_is_named(override, message):
    with pytest.raises(ConfigError, match=message):
        compose([override])


def small_cfg(tmp_path, *overrides):
    return compose([f"paths.results={tmp_path}/results", f"paths.data={REPO}/resources/data", "eren.n_records=2",
                    *overrides])


def stub_reader():
    """Answers from the first note when it reads notes, "unknown" closed-book: every step runs."""
    def answer(prompt):
        if "\n\n" in prompt and not prompt.startswith(("Please answer", "Is it true")):
            return prompt.split("\n\n")[1].split(".\n")[0].split()[-1]
        return "unknown"
    return TimedReader(StubReader(answer))


def build_index(cfg):
    store, out = DataStore(cfg["paths"]["data"]), stage_dir(cfg, "eren_index")
    for dataset, statements in eren_index.notebook_statements(cfg, store).items():
        eren_index.build_notebook(HashEncoder(), cfg["eren"]["index"], statements, out / dataset)


@pytest.mark.parametrize("dataset,n_notes", [("cfh", 1024), ("fever", 1024)])
def test_eval_stage_on_stubs_with_every_edit_in_the_notebook(tmp_path, dataset, n_notes):
    cfg = small_cfg(tmp_path)
    build_index(cfg)
    reader = stub_reader()
    records, summary = eren_eval.evaluate_dataset(cfg, dataset, HashEncoder(), reader)
    assert summary["n_notes"] == n_notes and summary["n_records_evaluated"] == 2
    assert list(summary["methods"]) == ["eren", "eren_score", "one_step", "unedited"]
    n_items = summary["timing"]["n_items"]
    assert len(records) == 4 * n_items and {r["method"] for r in records} == set(summary["methods"])
    # closed-book once per distinct query (shared by all methods), step 1 once per query and note-reading method
    # (EREN+score reuses EREN's step 1)
    assert reader.n_prompts <= 3 * summary["timing"]["n_distinct_queries"]
    assert summary["methods"]["unedited"]["BP"] == 100.0
    # EREN+score's threshold comes from held-out records, none of them scored
    gate = summary["score_gate"]
    assert gate["n_queries"] > 0 and summary["methods"]["eren_score"]["score_threshold"] == gate["threshold"]
    held = {it["id"] for it in calibration_items(cfg, DataStore(cfg["paths"]["data"]), dataset)}
    assert held and not held & {r["id"] for r in records}
    rows = eren_table_script.rows_from(summary, records)
    names = [eren_table_script.METHOD_NAMES.get(m, m) for m in summary["methods"]]
    assert [r["method"] for r in rows] == names + [f"EREN − {n}" for n in names if n != "EREN"]
    by = dict(zip([r["method"] for r in rows], rows))
    assert by["EREN"]["paper_EQ"] in (96.9, 80.5) and by["one-step MRC"]["paper_EQ"] is None
    assert by["EREN − one-step MRC"]["paper_EQ"] is None
    for r, s in zip(rows, summary["methods"].values()):  # the summary's values, inside record-level intervals
        assert r["ES"] == pytest.approx(s["ES"]) and r["BP"] == pytest.approx(s["BP"])
        for col in ("ES", "BP", "EQ", "fallback_in_scope", "own_note_retrieved_in_scope"):
            assert r[f"{col}_lo"] <= r[col] <= r[f"{col}_hi"], (r["method"], col)
    assert by["EREN − unedited reader"]["BP"] == pytest.approx(by["EREN"]["BP"] - 100.0)  # unedited: BP 100
    eren_table_script.write_tables(rows, tmp_path / "eren.csv", tmp_path / "eren.md")
    header = (tmp_path / "eren.csv").read_text().splitlines()[0]
    assert header.startswith("reader,dataset,method,ES,ES_lo,ES_hi,BP,BP_lo,BP_hi,EQ,EQ_lo,EQ_hi,paper_ES")
    assert f"| {rows[0]['ES']:.1f} [{rows[0]['ES_lo']:.1f}, {rows[0]['ES_hi']:.1f}] |" in \
        (tmp_path / "eren.md").read_text()


def test_eval_stage_refuses_a_notebook_of_other_statements(tmp_path):
    cfg = small_cfg(tmp_path)
    eren_index.build_notebook(HashEncoder(), "flat", ["A is B.", "C is D."], stage_dir(cfg, "eren_index") / "cfh")
    with pytest.raises(DataIntegrityError, match="cfh: the saved notes differ"):
        eren_eval.evaluate_dataset(cfg, "cfh", HashEncoder(), stub_reader())
    with pytest.raises(ConfigError, match="job.dataset='zsre'"):
        eren_eval.evaluate_dataset(cfg, "zsre", HashEncoder(), stub_reader())


def case(cid, subject, target):
    prompt = f"The mother tongue of {subject} is"
    return {"case_id": cid, "subject": subject, "prompt": prompt, "target_new": target, "target_true": "French",
            "neighborhood_prompts": ["The mother tongue of Leon Blum is"], "locality_ground_truth": "French",
            "paraphrase_prompts": [], "patil_prompts": [],
            "subject_rephrases": {"id": [f"the actor {subject}"], "ood": [f"Mx {subject}"]},
            "shuffled_subjects": {"id": [" ".join(reversed(subject.split()))], "ood": []},
            "long_context": {"eval": "Unseen text.", "held": ["Held text one.", "Held text two."]}}


def write_cases(cfg, cases):
    path = stage_dir(cfg, "cases", "valid") / "valid.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(c) + "\n" for c in cases))


def test_suite_summary_is_a_table1_row(tmp_path):
    cfg = small_cfg(tmp_path, "eval.long_id_passages=1", "eren.suite.teacher_forced=false")  # a stub reader
    write_cases(cfg, [case(1, "Danielle Darrieux", "English"), case(2, "Anna Karina", "Danish")])
    out = eren_suite.evaluate_split(cfg, "valid", HashEncoder(), stub_reader())
    per_case, summary = out["eren"]
    assert [c["case_id"] for c in per_case] == [1, 2] and summary["eren"]["n_notes"] == 2
    # every case is scored, none is left to choose EREN+score's threshold on: skipped, and said so
    skipped = out["eren_score"][1]
    assert out["eren_score"][0] == [] and set(skipped) == {"method", "model", "split", "skipped"}
    assert skipped["method"] == "EREN+score" and "no record or case is left out" in skipped["skipped"]
    block = summary["summaries"]["post/generation_match/micro"]
    assert set(block["columns"]) == {"success", "locality", "rephrase_id", "shuffle_id", "long_id", "rephrase_ood",
                                     "long_ood"}  # shuffle_ood has no items here
    assert block["n_items"]["long_id"] == 2 and "post/generation_match/case_mean" in summary["summaries"]
    assert not any("exact_match" in key for key in summary["summaries"])  # no teacher-forced blocks asked for
    for metric, agg in [("generation_match", "micro"), ("generation_match", "case_mean")]:
        rows = rows_from(summary, metric, agg)
        assert [(r["model"], r["method"], r["split"]) for r in rows] == [("smollm2-135m", "EREN", "valid")]
        assert rows[0]["metric"] == "eren_answer_match@1+eren_output_unchanged@1" and rows[0]["n_cases"] == 2
        assert rows[0]["shuffle_ood"] == "" and float(rows[0]["success"]) >= 0


def test_suite_reports_eren_score_beside_eren_with_a_held_out_threshold(tmp_path):
    cfg = small_cfg(tmp_path, "eval.long_id_passages=1", "eren.suite.n_cases=2", "eren.score_gate.n_calibration=2",
                    "eren.suite.teacher_forced=false")
    names = [("Danielle Darrieux", "English"), ("Anna Karina", "Danish"), ("Leon Blum", "Greek"),
             ("Marie Curie", "Polish"), ("Toyota Cresta", "Japanese")]
    write_cases(cfg, [case(i, subject, target) for i, (subject, target) in enumerate(names)])
    out = eren_suite.evaluate_split(cfg, "valid", HashEncoder(), stub_reader())
    (eren_cases, eren), (score_cases, score) = out["eren"], out["eren_score"]
    assert (eren["method"], score["method"]) == ("EREN", "EREN+score")
    assert [c["case_id"] for c in score_cases] == [c["case_id"] for c in eren_cases]  # the same scored cases
    gate = score["eren"]["score_gate"]
    assert gate["n_queries"] > 0 and score["eren"]["diagnostics"]["score_threshold"] == gate["threshold"]
    rows = rows_from(score, "generation_match", "micro")
    assert [(r["method"], r["n_cases"]) for r in rows] == [("EREN+score", 2)]


def test_suite_names_the_bad_case(tmp_path):
    cfg = small_cfg(tmp_path, "eren.suite.teacher_forced=false")
    bad = case(5, "Anna Karina", "Danish")
    del bad["long_context"]
    write_cases(cfg, [case(1, "Danielle Darrieux", "English"), bad])
    with pytest.raises(RecordError, match=r"case_id 5: missing keys \['long_context'\]"):
        eren_suite.evaluate_split(cfg, "valid", HashEncoder(), stub_reader())


def test_scaling_stage_and_figure(tmp_path):
    cfg = small_cfg(tmp_path, "eren.scaling.sizes=[20,50]", "eren.scaling.max_queries=20",
                    "eren.scaling.n_latency=5", "eren.scaling.reader_queries=3")
    report, items = eren_scaling.run_scaling(cfg, HashEncoder(), stub_reader)
    assert report["n_cases"] == 21919 and [(r["index"], r["size"]) for r in report["retrieval"]] == \
           [("flat", 20), ("flat", 50), ("hnsw", 20), ("hnsw", 50)]
    assert [r["size"] for r in report["reader"]["rows"]] == [20, 50] and len(items) == 2 * 2 * 3
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "scaling.json").write_text(json.dumps(report))
    sys_argv = ["x", str(tmp_path / "s" / "scaling.json"), "--out-csv", str(tmp_path / "t.csv"),
                "--out-png", str(tmp_path / "f.png"), "--out-fig-csv", str(tmp_path / "f.csv")]
    old, sys.argv = sys.argv, sys_argv
    try:
        eren_scaling_plot_script.main()
    finally:
        sys.argv = old
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert lines[0].startswith("stage,encoder,index,size,n_queries,recall@1,recall@5,recall@10") and len(lines) == 5
    assert (tmp_path / "f.csv").read_text() == (tmp_path / "t.csv").read_text()
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    skipped, no_items = eren_scaling.reader_part({"eren": {"scaling": {"reader_queries": 0}}}, None, None, [], None, [])
    assert "reader_queries=0" in skipped["skipped"] and no_items == []


def test_dry_run_plans_eren_once_per_directory(tmp_path):
    cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "2", "--nolock", "--directory", str(REPO),
           "--config", 'runs=["model=smollm2-135m", "model=gemma3-270m"]', f"overrides=paths.results={tmp_path}"]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr + res.stdout
    rules = [line.split()[1].rstrip(":") for line in res.stdout.splitlines() if line.startswith("rule ")]
    counts = {r: rules.count(r) for r in ("eren_index", "eren_eval", "eren_table", "eren_scaling",
                                           "eren_scaling_plot", "eren_suite")}
    # the models share the reader's stages; each runs the suite on its own cases (eval.report_split)
    assert counts == {"eren_index": 1, "eren_eval": 2, "eren_table": 1, "eren_scaling": 1, "eren_scaling_plot": 1,
                      "eren_suite": 2}
    assert f"{tmp_path}/gemma3-270m/eren_suite/" in res.stdout and "/test.summary.json" in res.stdout
