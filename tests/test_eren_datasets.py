"""EREN data sets by config (eren.data.<name>: <file> or {file, kind}): a hand-made QA file in EREN's format
(several statements per edit, no unrelated questions in one record or in the whole set) through eren_index,
eren_eval and eren_table on stubs; a user file named by path is hashed by content; the Snakemake plan
has an eren_eval job per configured name; malformed records are named by file, record and field."""
import json
import shutil
import subprocess
import sys

import pytest

from conftest import REPO

from robustedit.pipeline.config import compose  # noqa: E402
from robustedit.pipeline.stage import data_file_guard, stage_dir  # noqa: E402

import eren_eval  # noqa: E402
import eren_index  # noqa: E402
import eren_table as eren_table_script  # noqa: E402
from robustedit.errors import ConfigError, RecordError  # noqa: E402
from robustedit.eren.data import check_qa, dataset_spec, load_qa  # noqa: E402
from robustedit.eren.encoder import HashEncoder  # noqa: E402
from robustedit.manifest import DataStore, sha256_file  # noqa: E402
from robustedit.hashing import stage_config, stage_hash  # noqa: E402
from robustedit.stage_view import stage_view  # noqa: E402
from test_eren_pipeline import stub_reader  # noqa: E402  (answers from the first note it reads)

RECORDS = [
    {"id": "q1", "edit_statement": ["Arthur's Magazine was started in 1844.", "First for Women was started in 1989."],
     "edit_scope": [["Which magazine was started first, Arthur's Magazine or First for Women?", "Arthur's Magazine"]],
     "edit_scope_true_ans": ["Arthur's Magazine"]},
    {"id": "q2", "edit_statement": "The mother tongue of Danielle Darrieux is English.",
     "edit_scope": [["What is the mother tongue of Danielle Darrieux?", "English"],
                    ["Which language did Danielle Darrieux speak?", ["English", "the English language"]]]},
    {"id": 3, "edit_statement": ["The Oberoi Group is based in Delhi.", "The Oberoi family runs The Oberoi Group."],
     "edit_scope": [["The Oberoi family is part of a hotel company with a head office in what city?", "Delhi"]],
     "subject_name": "ignored"},
    {"id": 4, "edit_statement": "Paris is the capital of Italy.",
     "edit_scope": [["What is the capital of Italy?", "Paris"]]},
]
N_STATEMENTS = 6


def write(path, records):
    path.write_text(json.dumps(records))
    return path




def data_folder(tmp_path, extra: dict) -> str:
    """A copy of resources/data (symlinks) whose MANIFEST.json also lists `extra` (rel -> file)."""
    src, root = REPO / "resources" / "data", tmp_path / "data"
    manifest = json.loads((src / "MANIFEST.json").read_text())
    for rel in manifest:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(src / rel)
    for rel, path in extra.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(path.read_bytes())
        manifest[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    (root / "MANIFEST.json").write_text(json.dumps(manifest, indent=1))
    return str(root)


def mine_overrides(tmp_path, records, where: str) -> tuple[list[str], object]:
    """Overrides adding the data set `mine` (kind qa): a file of a data folder's MANIFEST.json
    (where="manifest") or a user file named by its path (where="path"); and the file."""
    path = write(tmp_path / "mine.json", records)
    if where == "manifest":
        return [f"paths.data={data_folder(tmp_path, {'eren/mine.json': path})}",
                "+eren.data.mine={file:eren/mine.json,kind:qa}"], path
    return [f"paths.data={REPO}/resources/data", f"+eren.data.mine={{file:'{path}',kind:qa}}"], path


def only_mine(tmp_path, records, where="path"):
    """A config whose only EREN data set is `mine`."""
    overrides, path = mine_overrides(tmp_path, records, where)
    return compose([f"paths.results={tmp_path}/results", "eren.n_records=null", "~eren.data.cfh", "~eren.data.fever",
                    *overrides]), path


def run_stage(cfg, stage, fn):
    """fn(stage's view of cfg) as robustedit.pipeline.stage runs a stage: only the hashed keys and data files."""
    with data_file_guard(cfg, stage):
        return fn(stage_view(cfg, stage))


@pytest.mark.parametrize("where", ["manifest", "path"])
def test_qa_file_through_index_eval_and_table(tmp_path, where):
    with_unrelated = [{**RECORDS[0], "unrelated": {"neighbor_subj": ["What is the capital of France?"]}},
                      {**RECORDS[1], "unrelated": ["Who wrote Hamlet?", "Where is Rome?"]}, *RECORDS[2:]]
    cfg, path = only_mine(tmp_path, with_unrelated, where)
    # the file is hashed by its content (the data folder's MANIFEST.json, or computed for a user file)
    assert stage_config(cfg, "eren_eval")["data"] == {"eren.data.mine.file": sha256_file(path)}
    store = DataStore(cfg["paths"]["data"])
    statements = run_stage(cfg, "eren_index", lambda v: eren_index.notebook_statements(v, store))
    assert list(statements) == ["mine"] and len(statements["mine"]) == N_STATEMENTS
    eren_index.build_notebook(HashEncoder(), "flat", statements["mine"], stage_dir(cfg, "eren_index") / "mine")

    records, summary = run_stage(cfg, "eren_eval",
                                 lambda v: eren_eval.evaluate_dataset(v, "mine", HashEncoder(), stub_reader()))
    assert summary["task"] == "qa" and summary["n_notes"] == N_STATEMENTS and summary["n_records_evaluated"] == 4
    unedited = summary["methods"]["unedited"]
    assert unedited["n_in_scope"] == 5 and unedited["n_out_of_scope"] == 3 and unedited["BP"] == 100.0
    eren = [r for r in records if r["method"] == "eren"]
    assert eren[0]["own_note"] == ["Arthur's Magazine was started in 1844", "First for Women was started in 1989"]
    assert {r["group"] for r in eren if not r["in_scope"]} == {"neighbor_subj", "unrelated"}
    assert eren[0]["true_answer"] == "Arthur's Magazine" and "true_answer" not in eren[1]
    assert summary["methods"]["eren"]["own_note_retrieved_in_scope"] == 100.0  # 6 notes, k=5: every own note

    # the same set without any unrelated question: BP is n/a in the table, not 0 and not a crash
    (tmp_path / "x").mkdir()
    cfg2, _ = only_mine(tmp_path / "x", RECORDS, where)
    statements2 = eren_index.notebook_statements(cfg2, DataStore(cfg2["paths"]["data"]))
    eren_index.build_notebook(HashEncoder(), "flat", statements2["mine"], stage_dir(cfg2, "eren_index") / "mine")
    records2, summary2 = eren_eval.evaluate_dataset(cfg2, "mine", HashEncoder(), stub_reader())
    assert summary2["methods"]["eren"]["n_out_of_scope"] == 0 and summary2["methods"]["eren"]["BP"] is None

    for name, s, recs in (("a", summary, records), ("b", summary2, records2)):
        (tmp_path / f"{name}.summary.json").write_text(json.dumps(s))
        (tmp_path / f"{name}.items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    old, sys.argv = sys.argv, ["x", str(tmp_path / "a.summary.json"), str(tmp_path / "b.summary.json"),
                               "--out-csv", str(tmp_path / "eren.csv"), "--out-md", str(tmp_path / "eren.md")]
    try:
        eren_table_script.main()
    finally:
        sys.argv = old
    lines = (tmp_path / "eren.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","))) for line in lines[1:]]
    names = [eren_table_script.METHOD_NAMES.get(m, m) for m in summary["methods"]]
    methods = names + [f"EREN − {n}" for n in names if n != "EREN"]  # each method, then EREN's differences
    assert [(r["dataset"], r["method"]) for r in rows] == [("mine", m) for m in methods * 2]
    first, second = rows[:len(methods)], rows[len(methods):]
    unedited = first[names.index("unedited reader")]
    assert unedited["BP"] == unedited["BP_lo"] == unedited["BP_hi"] == "100"  # the unedited reader, by definition
    assert rows[0]["paper_ES"] == ""  # no paper numbers for this set
    for r in first[:len(names)]:
        assert float(r["ES_lo"]) <= float(r["ES"]) <= float(r["ES_hi"])
    assert {(r["BP"], r["EQ"], r["BP_lo"], r["EQ_hi"]) for r in second} == {("n/a",) * 4}
    assert all(r["ES"] for r in second)


def test_user_file_content_names_the_directories(tmp_path):
    cfg, path = only_mine(tmp_path, RECORDS)
    before = {s: stage_hash(cfg, s) for s in ("eren_index", "eren_eval")}
    moved = tmp_path / "elsewhere" / "renamed.json"  # the same bytes elsewhere: the same directories
    moved.parent.mkdir()
    shutil.copy(path, moved)
    renamed = compose([f"paths.results={tmp_path}/results", "eren.n_records=null", "~eren.data.cfh",
                       "~eren.data.fever", f"paths.data={REPO}/resources/data",
                       f"+eren.data.mine={{file:'{moved}',kind:qa}}"])
    assert {s: stage_hash(renamed, s) for s in before} == before
    write(path, RECORDS[:3])
    after = {s: stage_hash(cfg, s) for s in ("eren_index", "eren_eval")}
    assert all(before[s] != after[s] for s in before)


def test_default_datasets_keep_their_hashes_and_kinds():
    cfg = compose([])
    assert {n: dataset_spec(n, v) for n, v in cfg["eren"]["data"].items()} == {
        "cfh": ("eren/cfh_filtered.json", "qa"), "fever": ("eren/fever_filtered.json", "fact_check")}
    assert set(stage_config(cfg, "eren_index")["data"]) == {"eren.data.cfh", "eren.data.fever"}
    # {file, kind} spelled out for the defaults names the same files
    spelled = compose(["eren.data.fever={file:eren/fever_filtered.json,kind:fact_check}"])
    assert sorted(stage_config(spelled, "eren_index")["data"].values()) == \
        sorted(stage_config(cfg, "eren_index")["data"].values())
    assert eren_eval.dataset_items(spelled, DataStore(spelled["paths"]["data"]), "fever")[0] == "nli"


def test_third_dataset_fact_check_kind_and_bad_specs(tmp_path):
    fever = json.loads((REPO / "resources/data/eren/fever_filtered.json").read_text())[:4]
    path = write(tmp_path / "claims.json", fever)
    cfg = compose([f"paths.results={tmp_path}", f"paths.data={data_folder(tmp_path, {'claims.json': path})}",
                   "+eren.data.claims={file:claims.json,kind:fact_check}", "eren.n_records=1"])
    task, items, statements, counts = eren_eval.dataset_items(cfg, DataStore(cfg["paths"]["data"]), "claims")
    assert task == "nli" and len(statements) == 2 and counts["n_checks_evaluated"] == 1
    assert {it["in_scope"] for it in items} == {True, False}
    with pytest.raises(RecordError, match=r"eren.data.x.kind: 'nli' is not one of"):
        dataset_spec("x", {"file": "a.json", "kind": "nli"})
    with pytest.raises(ConfigError, match=r"eren.data.mine: .* is not valid"):
        compose(["+eren.data.mine={file:a.json,kind:nli}"])
    with pytest.raises(ConfigError, match=r"eren.data.mine='/no/such/file.json' is not listed in .*MANIFEST.json"):
        stage_hash(compose(["+eren.data.mine=/no/such/file.json"]), "eren_index")


@pytest.mark.parametrize("change,message", [
    (lambda r: r[1].pop("edit_scope"), r"record 1 \(id q2\): missing field 'edit_scope'"),
    (lambda r: r[2].update(edit_statement=["A is B.", ""]), r"record 2 \(id 3\): edit_statement\[1\] should be"),
    (lambda r: r[2].update(edit_statement=[]), r"record 2 \(id 3\): edit_statement is an empty list"),
    (lambda r: r[0].update(edit_scope=[["Q?"]]), r"record 0 \(id q1\): edit_scope\[0\] should be \[question, answer"),
    (lambda r: r[0].update(edit_scope_true_ans=[]), r"record 0 \(id q1\): edit_scope has 1 items but edit_scope_true"),
    (lambda r: r[3].update(unrelated={"same_subj": "Who?"}), r"record 3 \(id 4\).unrelated.same_subj: expected a list"),
    (lambda r: r[3].update(id=None), r"record 3 \(id None\): field 'id' should be"),
])
def test_malformed_qa_records_are_named(tmp_path, change, message):
    records = json.loads(json.dumps(RECORDS))
    change(records)
    path = write(tmp_path / "bad.json", records)
    with pytest.raises(RecordError, match=f"{path}: {message}"):
        load_qa(path)
    with pytest.raises(RecordError, match="qa: expected a list of records"):
        check_qa({"id": 1})


@pytest.mark.parametrize("where", ["manifest", "path"])
def test_dry_run_plans_eren_eval_for_a_third_dataset(tmp_path, where):
    overrides, _ = mine_overrides(tmp_path, RECORDS, where)
    cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "2", "--nolock", "--directory", str(REPO),
           "--config", 'runs=["model=smollm2-135m"]',
           f"overrides=paths.results={tmp_path}/results {' '.join(overrides)}",
           "--", f"{tmp_path}/results/tables/eren.csv"]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr + res.stdout
    rules = [line.split()[1].rstrip(":") for line in res.stdout.splitlines() if line.startswith("rule ")]
    assert rules.count("eren_eval") == 3 and rules.count("eren_index") == 1 and rules.count("eren_table") == 1
    for name in ("cfh", "fever", "mine"):
        assert f"/{name}.summary.json" in res.stdout and f"job.dataset={name}" in res.stdout
    assert "/mine/index.faiss" in res.stdout


def test_counterfact_hard_items_unchanged_by_the_general_loader():
    """cfh now loads as a QA set in EREN's format: the same records, the same items (key order too, so the
    default items.jsonl, summaries and tables are byte-identical)."""
    from robustedit.eren.data import load_counterfact_hard
    from robustedit.eren.evaluate import counterfact_hard_items, qa_items

    path = REPO / "resources/data/eren/cfh_filtered.json"
    records = load_counterfact_hard(path)
    assert load_qa(path) == records
    assert json.dumps(qa_items(records)) == json.dumps(counterfact_hard_items(records))


def test_runs_naming_other_datasets_fail_at_planning(tmp_path):
    """eren_index declares one notebook per name, so every run must name the same data sets."""
    cmd = [sys.executable, "-m", "snakemake", "-n", "--cores", "2", "--nolock", "--directory", str(REPO),
           "--config", 'runs=["model=smollm2-135m", "model=smollm2-135m ~eren.data.fever"]',
           f"overrides=paths.results={tmp_path}/results"]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert res.returncode != 0 and "eren.data names the data sets ['cfh']" in res.stdout + res.stderr
    assert "EREN's rules need the same names in every run" in res.stdout + res.stderr
