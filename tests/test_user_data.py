"""Your own CounterFact-style data (README 'Use your own data'): any name given a file in data.split_files is a
split; each split's directories are hashed by that split's own file (its sha256, not its path) and settings,
so adding a split or editing another split's file never moves the valid or test directories; a user file
outside paths.data is hashed by its content (computed, recorded in stage_config.json), validated record by
record like the vendored files; an unknown split name fails at planning, naming the key."""
from __future__ import annotations

import json
import shutil

import cases as cases_script
import pytest
from robustedit.pipeline.config import compose
from robustedit.pipeline.stage import run_stage, stage_dir, with_split, write_stage_config
from test_shell_quoting import dry_run, shell_commands

from conftest import REPO
from robustedit.errors import ConfigError, RecordError
from robustedit.manifest import DataStore, only_files, sha256_file
from robustedit.stages import STAGES, per_split
from robustedit.hashing import stage_config, stage_hash

VALID = REPO / "resources" / "data" / "rep" / "valid.counterfact_para_prompt_para_subject.json"
SPLIT_STAGES = [s for s in STAGES if per_split(s)]


def user_file(path, n: int = 3, edit: dict | None = None):
    """The first n records of REP's valid split as a user file (record 0 changed by `edit`)."""
    records = json.loads(VALID.read_text())[:n]
    records[0].update(edit or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=1))
    return path


def hashes(cfg: dict, split: str) -> dict[str, str]:
    return {s: stage_hash(cfg, s, split) for s in SPLIT_STAGES}


def test_split_stages_are_those_that_build_or_consume_the_cases():
    assert set(SPLIT_STAGES) == {"cases", "rome", "eval_rome", "rep", "eval_rep", "rep_diagnostics", "fig_keys",
                                 "fig_unrelated", "fig_values", "eren_suite", "sequential_eval"}
    with pytest.raises(ConfigError, match="stage 'cases' has one directory per split"):
        stage_hash(compose([]), "cases")  # no split named: an error, not some directory
    with pytest.raises(ConfigError, match="split 'nope' is not in data.split_files"):
        stage_hash(compose([]), "rome", "nope")


def test_adding_a_split_or_editing_another_keeps_the_valid_and_test_directories(tmp_path):
    base = compose([])
    before = {split: hashes(base, split) for split in ("valid", "test")}
    others = {s: stage_hash(base, s) for s in STAGES if not per_split(s)}
    mine = user_file(tmp_path / "mine.json")
    added = compose([f"+data.split_files.mine={mine}", "data.splits=[valid,test,mine]"])
    assert {split: hashes(added, split) for split in ("valid", "test")} == before
    assert {s: stage_hash(added, s) for s in others} == others
    first = hashes(added, "mine")
    assert set(first.values()).isdisjoint(before["valid"].values()) and first["cases"] != before["test"]["cases"]
    user_file(mine, n=2)  # another split's file edited: valid and test stay, mine moves (every stage)
    assert {split: hashes(added, split) for split in ("valid", "test")} == before
    assert all(hashes(added, "mine")[s] != first[s] for s in SPLIT_STAGES)
    # and the test split's file changed (the old way in): the valid split's directories stay
    other_test = compose([f"data.split_files.test={mine}"])
    assert hashes(other_test, "valid") == before["valid"] and hashes(other_test, "test") != before["test"]


def test_a_user_file_is_hashed_by_content_and_recorded(tmp_path):
    mine = user_file(tmp_path / "a" / "mine.json")
    cfg = compose([f"+data.split_files.mine={mine}", "data.splits=[mine]", "eval.report_split=mine",
                   f"paths.results={tmp_path / 'results'}"])
    named = stage_config(cfg, "cases", "mine")
    assert named["data"]["data.split_files.mine"] == sha256_file(mine)  # computed, not from MANIFEST.json
    assert "data.split_files.mine" not in named["keys"] and "data.split_files.valid" not in named["data"]
    out = tmp_path / "out"
    out.mkdir()
    write_stage_config(with_split(cfg, "mine"), "cases", out, set())
    saved = json.loads((out / "stage_config.json").read_text())
    assert saved["data"]["data.split_files.mine"] == sha256_file(mine)
    assert saved["user_files"] == {"data.split_files.mine": str(mine.resolve())}
    assert saved["hash"] == stage_hash(cfg, "cases", "mine")
    first = hashes(cfg, "mine")

    moved = tmp_path / "elsewhere" / "renamed.json"  # the same bytes elsewhere: the same directories
    moved.parent.mkdir()
    shutil.move(mine, moved)
    assert hashes(compose([f"+data.split_files.mine={moved}", "data.splits=[mine]"]), "mine") == first
    user_file(moved, edit={"target_new": "Klingon"})  # edited: every stage of the split reruns
    edited = hashes(compose([f"+data.split_files.mine={moved}", "data.splits=[mine]"]), "mine")
    assert all(edited[s] != first[s] for s in SPLIT_STAGES)


def test_a_file_inside_paths_data_still_needs_the_manifest(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(REPO / "resources" / "data", data, ignore=shutil.ignore_patterns("eren", "wikitext"))
    user_file(data / "rep" / "mine.json")
    cfg = compose([f"paths.data={data}", "+data.split_files.mine=rep/mine.json", "data.splits=[mine]"])
    with pytest.raises(ConfigError, match=r"data.split_files.mine='rep/mine.json' is not listed in .*MANIFEST.json: "
                                          r"a file inside paths.data must be listed there with its sha256 and size"):
        stage_hash(cfg, "cases", "mine")
    gone = compose([f"+data.split_files.mine={tmp_path / 'nope.json'}", "data.splits=[mine]"])
    with pytest.raises(ConfigError, match=r"data.split_files.mine='.*nope.json' is not listed in .*, nor an existing "
                                          r"file outside paths.data"):
        stage_hash(gone, "rome", "mine")


@pytest.mark.parametrize("edit,message", [
    ({"subject": None}, "record 0: missing field 'subject'"),  # None: the key removed
    ({"target_new": 7}, "record 0: field 'target_new' should be str, got int"),
    ({"subject_rephrase": "x"}, "record 0 (case_id {cid}): subject_rephrase must be a list of non-empty strings"),
])
def test_a_malformed_user_record_is_named_by_file_record_and_field(tmp_path, edit, message):
    mine = user_file(tmp_path / "mine.json", edit=edit)
    if edit.get("subject", 1) is None:
        records = json.loads(mine.read_text())
        del records[0]["subject"]
        mine.write_text(json.dumps(records))
    cid = json.loads(mine.read_text())[0]["case_id"]
    cfg = with_split(compose([f"+data.split_files.mine={mine}", "data.splits=[mine]",
                              f"paths.results={tmp_path / 'results'}"]), "mine")
    with pytest.raises(RecordError) as err:  # the stage itself (its view, its data guard), before any model loads
        run_stage("cases", cases_script.main.stage_fn, cfg)
    assert str(err.value).startswith(str(mine)) and message.format(cid=cid) in str(err.value), str(err.value)
    assert not (stage_dir(cfg, "cases") / "stage_config.json").exists()


def test_a_user_file_changed_after_hashing_is_refused_when_opened(tmp_path):
    mine = user_file(tmp_path / "mine.json")
    store = DataStore(REPO / "resources" / "data")
    with only_files("cases", [str(mine)], {str(mine): sha256_file(mine)}):
        assert store.path(str(mine)) == mine.resolve()
        user_file(mine, n=1)
        with pytest.raises(Exception, match="changed while the stage ran"):
            store.path(str(mine))
    with only_files("stats", []), pytest.raises(ConfigError, match="stage 'stats' opened data file"):
        store.path(str(mine))


def test_a_new_split_plans_table1_without_the_valid_or_test_directories(tmp_path):
    mine = user_file(tmp_path / "mine.json")
    overrides = [f"paths.results={tmp_path}/results", f"+data.split_files.mine={mine}", "data.splits=[mine]",
                 "eval.report_split=mine"]
    res = dry_run(tmp_path, overrides, "--printshellcmds", "table1")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    cfg = compose(overrides)
    for stage in ("cases", "rome", "eval_rome", "rep", "eval_rep", "eren_suite"):
        assert str(stage_dir(cfg, stage, "mine")) in res.stdout, stage
    for split in ("valid", "test"):
        assert f"/{split}." not in res.stdout and f"job.split={split}" not in res.stdout
    cases = [c for c in shell_commands(res.stdout) if "scripts/cases.py" in c]
    assert len(cases) == 1 and "job.split=mine" in cases[0]


def test_an_unknown_split_fails_at_planning_naming_the_key(tmp_path):
    res = dry_run(tmp_path, [f"paths.results={tmp_path}/results", "eval.report_split=heldout"], "table1")
    assert res.returncode != 0
    assert "eval.report_split: split 'heldout' is not in data.split_files" in res.stdout + res.stderr
    assert "Job stats" not in res.stdout
