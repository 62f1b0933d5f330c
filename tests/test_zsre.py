"""zsRE through the same suite (README 'zsRE'): REP's zsRE records become cases of the CounterFact schema
without a pool (robustedit.data.zsre), a split entry {file, kind: zsre} says so and is hashed by its kind and
its file's content, `benchmark=zsre` adds the split and reports it in its own Table 1 without moving the
valid or test directories."""
from __future__ import annotations

import json
import re

import cases as cases_script
import pytest
from robustedit.pipeline.config import compose
from robustedit.pipeline.stage import run_stage, stage_dir, with_split
from test_shell_quoting import dry_run, shell_commands

from conftest import REPO
from robustedit.data.splits import split_source
from robustedit.data.zsre import zsre_case
from robustedit.errors import ConfigError, RecordError
from robustedit.evaluate.items import GROUPS, build_items
from robustedit.hashing import stage_config, stage_hash
from robustedit.manifest import DataStore, sha256_file
from robustedit.pipeline.tables import table1_stem
from robustedit.stages import STAGES, per_split

ZSRE = REPO / "resources" / "data" / "rep" / "test.zsre_para_prompt_para_subject_llama2-7b.json"
COUNTERFACT = REPO / "resources" / "data" / "rep" / "valid.counterfact_para_prompt_para_subject.json"
SPLIT_STAGES = [s for s in STAGES if per_split(s)]


def records(n: int = 3) -> list[dict]:
    return json.loads(ZSRE.read_text())[:n]


def test_a_zsre_record_becomes_a_case_with_its_own_locality_prompt():
    rec = records(1)[0]
    case = zsre_case(rec, "zsre", "zsre.json", 0)
    assert (case["case_id"], case["prompt"], case["subject"]) == (rec["case_id"], rec["prompt"], rec["subject"])
    assert (case["target_new"], case["target_true"]) == (rec["target_new"], rec["target_true"])
    assert case["neighborhood_prompts"] == rec["locality_prompt"] and len(rec["locality_prompt"]) == 1
    assert case["locality_ground_truth"] == rec["locality_ground_truth"] != rec["target_true"]  # the NQ answer
    assert case["dataset_subject_rephrases"] == rec["subject_rephrase"]
    assert case["paraphrase_prompts"] == [] and case["patil_prompts"] == []  # rephrase_prompt is null in REP's file
    assert case["prompt_template"].format(rec["subject"]) == rec["prompt"]
    # the evaluation's items, given the perturbations the cases stage attaches
    built = {**case, "subject_rephrases": {"id": rec["subject_rephrase"][:5], "ood": rec["subject_rephrase"][5:]},
             "shuffled_subjects": {"id": ["x y"], "ood": ["y x"]}, "long_context": {"eval": "text", "held": ["h"]}}
    items = build_items(built)
    count = {g: sum(it.group == g for it in items) for g in GROUPS}
    assert count == {"success": 1, "locality": 1, "rephrase_id": 5, "shuffle_id": 1, "long_id": 1,
                     "rephrase_ood": 5, "shuffle_ood": 1, "long_ood": 1, "paraphrase": 0, "patil": 0}
    (loc,) = [it for it in items if it.group == "locality"]
    assert (loc.prompt, loc.target) == (rec["locality_prompt"][0], rec["locality_ground_truth"])
    one = zsre_case({**rec, "rephrase_prompt": "Which language did Pierre Bersuire use?"}, "zsre", "f", 0)
    assert one["paraphrase_prompts"] == ["Which language did Pierre Bersuire use?"]


@pytest.mark.parametrize("edit,message", [
    ({"locality_prompt": None}, "record 0: missing field 'locality_prompt'"),
    ({"locality_prompt": []}, "field 'locality_prompt' must be a non-empty list of non-empty strings"),
    ({"locality_prompt": ["q", " "]}, "field 'locality_prompt' must be a non-empty list of non-empty strings"),
    ({"subject": "Nobody"}, "subject 'Nobody' not found in prompt"),
    ({"rephrase_prompt": 3}, "field 'rephrase_prompt' must be a string, a list of strings or null"),
    ({"subject_rephrase": [""]}, "subject_rephrase must be a list of non-empty strings"),
    ({"case_id": "101"}, "record 0: field 'case_id' should be int, got str"),
])
def test_a_malformed_zsre_record_is_named_by_file_record_and_field(edit, message):
    rec = {**records(1)[0], **edit}
    if edit.get("locality_prompt", 1) is None:
        del rec["locality_prompt"]
    with pytest.raises(RecordError, match="^mine.json record 0") as err:
        zsre_case(rec, "mine", "mine.json", 0)
    assert message in str(err.value)


def test_split_entries_name_a_file_the_pool_or_a_file_and_its_kind():
    assert split_source("rep/x.json", "s") == ("rep/x.json", "counterfact", None, None)
    assert split_source(None, "s") == (None, "counterfact", None, None)
    assert split_source({"file": "z.json", "kind": "zsre", "filter": False, "max_cases": 5}, "s") == (
        "z.json", "zsre", False, 5)
    assert split_source({"file": "z.json"}, "s") == ("z.json", "counterfact", None, None)
    with pytest.raises(ConfigError, match="data.split_files.s.filter='no' must be true, false or null"):
        split_source({"file": "z.json", "filter": "no"}, "s")
    with pytest.raises(ConfigError, match="data.split_files.s.max_cases=0 must be a positive integer or null"):
        split_source({"file": "z.json", "max_cases": 0}, "s")
    with pytest.raises(ConfigError, match=r"data.split_files.s.kind='qa' is not one of \['counterfact', 'zsre'\]"):
        split_source({"file": "z.json", "kind": "qa"}, "s")
    with pytest.raises(ConfigError, match=r"data.split_files.s must be a file, null \(the pool\) or \{file, kind, "):
        split_source({"path": "z.json"}, "s")
    with pytest.raises(ConfigError, match="data.split_files.mine"):  # the schema refuses a bad kind before any stage
        compose(["+data.split_files.mine={file:z.json,kind:qa}", "data.splits=[mine]"])


def test_benchmark_zsre_adds_the_split_and_moves_no_other_directory():
    base, zsre = compose([]), compose(["benchmark=zsre"])
    assert zsre["data"]["splits"] == ["valid", "zsre"] and zsre["eval"]["report_split"] == "zsre"
    assert zsre["data"]["split_files"]["zsre"] == {"file": str(ZSRE.relative_to(REPO / "resources" / "data")),
                                                  "kind": "zsre", "filter": False, "max_cases": None}
    for split in ("valid", "test"):
        assert {s: stage_hash(zsre, s, split) for s in SPLIT_STAGES} == {s: stage_hash(base, s, split)
                                                                         for s in SPLIT_STAGES}
    others = [s for s in STAGES if not per_split(s)]
    assert {s: stage_hash(zsre, s) for s in others} == {s: stage_hash(base, s) for s in others}
    named = stage_config(zsre, "cases", "zsre")
    # the kind and the filter are hashed as keys, the file by its content (not its path)
    assert named["keys"]["data.split_files.zsre.kind"] == "zsre"
    assert named["keys"]["data.split_files.zsre.filter"] is False
    assert "data.split_files.zsre.file" not in named["keys"]
    assert named["data"] == {**named["data"], "data.split_files.zsre.file": sha256_file(ZSRE)}
    assert "data.split_files.zsre.kind" not in named["data"] and "data.split_files.zsre.filter" not in named["data"]
    for other in ("data.split_files.zsre.kind=counterfact", "data.split_files.zsre.filter=true",
                  "data.split_files.zsre.max_cases=100"):
        moved = compose(["benchmark=zsre", other])
        assert all(stage_hash(moved, s, "zsre") != stage_hash(zsre, s, "zsre") for s in SPLIT_STAGES), other


def test_a_split_of_its_own_size_keeps_the_other_splits_and_reads_that_many_records(tmp_path):
    base = compose(["benchmark=zsre"])
    small = compose(["benchmark=zsre", "data.split_files.zsre.max_cases=3"])
    assert {s: stage_hash(small, s, "valid") for s in SPLIT_STAGES} == {s: stage_hash(base, s, "valid")
                                                                        for s in SPLIT_STAGES}
    store = DataStore(REPO / "resources" / "data")
    cases, source, entry = cases_script.load_split(store, small["data"], "zsre")
    assert (entry.kind, entry.max_cases) == ("zsre", 3)
    assert [c["case_id"] for c in cases] == [r["case_id"] for r in records(3)] and source.endswith(ZSRE.name)
    both = {**small["data"], "max_cases": 2}  # the split's own size wins over data.max_cases
    assert len(cases_script.load_split(store, both, "zsre")[0]) == 3
    assert len(cases_script.load_split(store, {**base["data"], "max_cases": 2}, "zsre")[0]) == 2


def test_table1_of_another_split_never_overwrites_the_papers():
    assert table1_stem(["test"]) == table1_stem(["test", "valid"]) == table1_stem(["valid"]) == "table1"
    assert table1_stem(["zsre"]) == table1_stem(["zsre", "test"]) == "table1.zsre"
    assert table1_stem(["mine", "zsre"]) == "table1.mine+zsre"


def test_benchmark_zsre_plans_its_table1_from_the_zsre_directories(tmp_path):
    overrides = [f"paths.results={tmp_path}/results", "benchmark=zsre"]
    res = dry_run(tmp_path, overrides, "--printshellcmds", f"{tmp_path}/results/tables/table1.zsre.csv")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    cfg = compose(overrides)
    for stage in ("cases", "rome", "eval_rome", "rep", "eval_rep", "eren_suite"):
        assert str(stage_dir(cfg, stage, "zsre")) in res.stdout, stage
    assert "/test." not in res.stdout and "job.split=test" not in res.stdout
    cases = [c for c in shell_commands(res.stdout) if "scripts/cases.py" in c]
    assert len(cases) == 1 and "job.split=zsre" in cases[0]


def test_a_malformed_zsre_split_stops_the_cases_stage_before_any_model_loads(tmp_path):
    bad = records(2)
    del bad[1]["locality_ground_truth"]
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps(bad))
    cfg = with_split(compose([f"+data.split_files.mine={{file:'{mine}',kind:zsre}}", "data.splits=[mine]",
                              f"paths.results={tmp_path / 'results'}"]), "mine")
    with pytest.raises(RecordError, match="^" + re.escape(f"{mine} record 1: missing field 'locality_ground_truth'")):
        run_stage("cases", cases_script.main.stage_fn, cfg)
    assert not (stage_dir(cfg, "cases") / "stage_config.json").exists()


@pytest.mark.parametrize("kind", ["zsre", "counterfact"])
def test_a_repeated_case_id_stops_the_cases_stage(tmp_path, kind):
    source = ZSRE if kind == "zsre" else COUNTERFACT
    recs = json.loads(source.read_text())[:3]
    recs[2] = {**recs[0]}
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps(recs))
    cfg = with_split(compose([f"+data.split_files.mine={{file:'{mine}',kind:{kind}}}", "data.splits=[mine]",
                              f"paths.results={tmp_path / 'results'}"]), "mine")
    with pytest.raises(RecordError, match=re.escape(f"{mine} record 2 (case_id {recs[0]['case_id']}): case_id "
                                                    "repeats an earlier record's")):
        run_stage("cases", cases_script.main.stage_fn, cfg)
