"""Stage hashes by construction (workflow/robustedit/stages.py).

Every leaf key of the composed config changes a stage's directory hash exactly when the stage, or a stage
upstream of it, reads it (NOT_HASHED, the speed-only and job-selection keys, being the only exception);
the stages' code is handed a view in which any other key raises, so a read the hash misses fails instead
of serving stale results; data files are hashed by content, not folder; unknown keys are refused when the
config is composed. The integration part runs every stage script under its view on a tiny random model.
"""
from __future__ import annotations

import copy
import csv
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from robustedit.pipeline.config import compose
from robustedit.pipeline.stage import stage_dir, with_split

from conftest import REPO, model_dir
from robustedit.errors import ConfigError
from robustedit.manifest import DataStore, only_files, sha256_file
from robustedit.rome.hparams import ROMEHyperParams
from robustedit.stages import (ALWAYS_READABLE, NOT_HASHED, OPTIONAL, READ_BY_NO_STAGE, SPLIT_FILES, SPLIT_LISTS,
                               STAGES, hashed_keys, leaves, lookup, per_split, stage_reads)
from robustedit.hashing import data_files, stage_config, stage_hash
from robustedit.stage_view import stage_view, StageReadError

BASE = compose(["job.split=valid"])  # per-split stages: the valid split's directories (others: tests/test_user_data.py)
MANIFEST = json.loads((REPO / "resources" / "data" / "MANIFEST.json").read_text())
FILE_PREFIXES = sorted({p for s in STAGES.values() for p in s.data_files})
EDIT_MODELS = sorted(p.stem for p in (REPO / "conf" / "model").glob("*.yaml")
                     if "family: t5" not in p.read_text())  # a seq2seq reader is refused as the edit model


def under(key: str, prefixes) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def hashed_by(key: str, split: str = BASE["job"]["split"]) -> set[str]:
    """The stages whose directory must change with `key`: it is under their (or an input's) reads; of
    data.split_files, a per-split stage's directory (of `split`, BASE's valid) reads only its split's entry."""
    other_split = under(key, [SPLIT_FILES]) and not under(key, [f"{SPLIT_FILES}.{split}"])
    return {s for s in STAGES if under(key, stage_reads(s)) and not under(key, NOT_HASHED)
            and not (other_split and per_split(s))}


def changed(cfg: dict) -> set[str]:
    cfg = cfg if cfg["job"]["split"] else with_split(cfg, BASE["job"]["split"])
    return {s for s in STAGES if stage_hash(cfg, s) != stage_hash(BASE, s)}


def perturbed(key: str, value):
    """Another valid-looking value of the same kind (a data file: another vendored file; a list of splits:
    BASE's split added or removed, what the split's directories see of it)."""
    if key in SPLIT_LISTS:
        split = BASE["job"]["split"]
        return [s for s in value if s != split] if split in value else [*value, split]
    if under(key, FILE_PREFIXES) and not isinstance(value, list):
        return next(f for f in sorted(MANIFEST) if f != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return value + value[:1] if value else ["x"]
    if isinstance(value, dict):
        return {"x": "y"}
    return 1  # None


def with_leaf(cfg: dict, key: str, value) -> dict:
    out = copy.deepcopy(cfg)
    *parents, last = key.split(".")
    node = out
    for part in parents:
        node = node[part]
    node[last] = value
    return out


# ------------------------------------------------------------------------------------------ every key

# paths.data: below; job.split names which split's directory a per-split stage means (tests/test_user_data.py)
@pytest.mark.parametrize("key", [k for k in leaves(BASE, "") if k not in ("paths.data", "job.split")])
def test_a_key_changes_exactly_the_stages_that_read_it(key):
    cfg = with_leaf(BASE, key, perturbed(key, leaves(BASE, "")[key]))
    assert changed(cfg) == hashed_by(key), key


@pytest.mark.parametrize("model", EDIT_MODELS)
def test_every_key_is_hashed_speed_only_or_read_by_no_stage(model):
    """A new key is hashed where its group is read; elsewhere this fails until someone decides."""
    unclassified = [k for k in leaves(compose([f"model={model}"]), "") if not hashed_by(k, k.split(".")[-1])
                    and not under(k, [*NOT_HASHED, *READ_BY_NO_STAGE, *ALWAYS_READABLE])]
    assert unclassified == []


def test_the_lists_agree_with_the_stages():
    for key in READ_BY_NO_STAGE:  # no stage reads it, nor anything inside it
        assert not any(under(key, STAGES[s].reads) or under(r, [key]) for s in STAGES for r in STAGES[s].reads), key
    for key in NOT_HASHED:  # each exception is a real key
        assert key in leaves(BASE, ""), key
    for stage in STAGES:  # each declared read exists (or is one a model description may leave out)
        for read in STAGES[stage].reads:
            assert read in OPTIONAL or any(under(k, [read]) for k in leaves(BASE, "")), (stage, read)
        for prefix in STAGES[stage].data_files:
            assert under(prefix, STAGES[stage].reads), (stage, prefix)


def test_speed_only_and_job_keys_change_no_directory():
    cfg = compose(["hardware.threads=3", "hardware.batch_size=3", "stats.batch_tokens=99", "stats.checkpoint_every=7",
                   "stats.checkpoint_minutes=0.5", "rome.batch_cases=1", "rep.train.key_batch_rows=5",
                   "eren.encoder_batch_size=8", "eren.faiss_device=gpu", "data.splits=[valid]",
                   "job.split=valid", "++job.fresh=true", "paths.results=elsewhere", "paths.models=other"])
    assert changed(cfg) == set()


@pytest.mark.parametrize("key", SPLIT_LISTS)
def test_a_list_of_splits_moves_only_the_directories_of_the_splits_it_adds_or_drops(key):
    """eval.generation.skip_splits=[valid, test] reruns test's evaluations, not valid's (still skipped)."""
    listed = with_leaf(BASE, key, [*lookup(BASE, key), "test"])
    assert changed(listed) == set()  # valid's directories
    test = with_split(BASE, "test")
    assert {s for s in STAGES if stage_hash(with_split(listed, "test"), s) != stage_hash(test, s)} == hashed_by(key)


# ------------------------------------------------------------------------------------------ the probes

def test_kl_prompt_is_a_configured_hashed_rome_hyperparameter():
    assert BASE["rome"]["kl_prompt"] == ROMEHyperParams().kl_prompt == "{} is a"
    other = compose(["rome.kl_prompt='{} was'"])
    assert ROMEHyperParams.from_config(stage_view(other, "rome")["rome"]).kl_prompt == "{} was"
    # a new rome directory
    assert changed(other) == {"rome", "eval_rome", "rep", "eval_rep", "rep_diagnostics", "fig_values",
                              "sequential_eval"}
    with pytest.raises(ConfigError, match="already at 'rome.kl_prompt'"):  # it exists: `+` cannot add it again
        compose(["+rome.kl_prompt='{} was'"])


@pytest.mark.parametrize("override,key", [("+rome.foo=1", "rome.foo"), ("+data.max_case=2", "data.max_case"),
                                          ("+rome.templates.n=2", "rome.templates.n"),
                                          ("+eval.metric=x", "eval.metric"),
                                          ("+hardware.cores=2", "hardware.cores"), ("+foo=1", "foo")])
def test_unknown_keys_are_refused_when_composing(override, key):
    with pytest.raises(ConfigError, match=rf"\n  {re.escape(key)}: unknown key \("):
        compose([override])


def test_a_stage_script_refuses_an_unknown_key_before_running(tmp_path):
    res = subprocess.run([sys.executable, "scripts/rome.py", "+rome.foo=1", f"paths.results={tmp_path}",
                          "job.split=valid"], cwd=REPO, capture_output=True, text=True)
    assert res.returncode != 0 and "rome.foo: unknown key" in res.stdout + res.stderr
    assert list(tmp_path.iterdir()) == []


def test_gate_threshold_is_hashed_by_the_evaluations_alone_and_hidden_from_rep():
    # eval_rep, its diagnostics, and sequential_eval (ROME+REP's composed adaptors), never the training
    assert changed(compose(["rep.gate_threshold=0.7"])) == {"eval_rep", "rep_diagnostics", "sequential_eval"}
    assert stage_view(BASE, "eval_rep")["rep"]["gate_threshold"] == 0.5
    with pytest.raises(StageReadError, match="stage 'rep' read config key 'rep.gate_threshold'"):
        stage_view(BASE, "rep")["rep"]["gate_threshold"]


def copy_data(dest: Path, edit: bool) -> Path:
    """resources/data copied to dest; with edit, one case's target_new changed (and re-hashed in the manifest)."""
    shutil.copytree(REPO / "resources" / "data", dest)
    if edit:
        rel = "rep/valid.counterfact_para_prompt_para_subject.json"
        records = json.loads((dest / rel).read_text())
        records[0]["target_new"] = "Klingon"
        (dest / rel).write_text(json.dumps(records))
        manifest = json.loads((dest / "MANIFEST.json").read_text())
        manifest[rel].update(sha256=sha256_file(dest / rel), bytes=(dest / rel).stat().st_size)
        (dest / "MANIFEST.json").write_text(json.dumps(manifest))
    return dest


def test_data_files_are_hashed_by_content_not_folder(tmp_path):
    same = compose([f"paths.data={copy_data(tmp_path / 'same', edit=False)}"])
    assert changed(same) == set()  # an identical copy elsewhere: every directory reused
    edited = compose([f"paths.data={copy_data(tmp_path / 'edited', edit=True)}"])
    assert changed(edited) == {s for s in STAGES if "cases" in stage_closure(s)}
    assert {"model", "stats", "templates", "eren_index", "eren_eval", "eren_scaling"}.isdisjoint(changed(edited))


def stage_closure(stage: str) -> set[str]:
    return {stage}.union(*(stage_closure(d) for d in STAGES[stage].inputs))


def test_a_data_file_missing_from_the_manifest_is_named():
    cfg = with_leaf(BASE, "data.pool_file", "counterfact/nope.json")
    with pytest.raises(ConfigError, match=r"data.pool_file='counterfact/nope.json' is not listed in .*MANIFEST"):
        stage_hash(cfg, "cases")


def test_a_stage_opens_only_the_data_files_its_hash_covers():
    store = DataStore(REPO / "resources" / "data")
    with only_files("stats", data_files(BASE, "stats").values()):
        assert store.path("wikitext/wiki.valid.raw").is_file()
        with pytest.raises(ConfigError, match="stage 'stats' opened data file 'counterfact/patil_paraphrases.json'"):
            store.path("counterfact/patil_paraphrases.json")
    assert store.path("counterfact/patil_paraphrases.json").is_file()  # outside a stage: any listed file


# ------------------------------------------------------------------------------------------ the view

def test_the_view_refuses_every_key_its_hash_misses_naming_key_and_stage():
    rep = stage_view(BASE, "rep")
    for read in (lambda: rep["rep"]["gate_threshold"], lambda: rep["rep"].get("gate_threshold"),
                 lambda: "gate_threshold" in rep["rep"]):
        with pytest.raises(StageReadError, match="stage 'rep' read config key 'rep.gate_threshold'"):
            read()
    with pytest.raises(StageReadError, match="'tracking'"):
        rep["tracking"]
    with pytest.raises(StageReadError, match="stage 'cases' read config key 'model.layer'"):
        stage_view(BASE, "cases")["model"]["layer"]
    with pytest.raises(StageReadError, match="stage 'eval_rome' read config key 'eval.report_split'"):
        stage_view(BASE, "eval_rome")["eval"]["report_split"]
    with pytest.raises(KeyError):  # a key the config does not have at all: a plain KeyError, as a dict
        rep["rep"]["train"]["nope"]
    assert rep["job"] == BASE["job"] and rep["paths"] == BASE["paths"]  # always readable, never hashed


def test_the_view_is_a_dict_that_library_code_can_copy_expand_and_dump():
    log: set[str] = set()
    view = stage_view(BASE, "rome", log)
    hp = ROMEHyperParams.from_config(view["rome"])  # dict(...) then cls(**...)
    assert hp.v_lr == BASE["rome"]["v_lr"] and hp.context_template_length_params == ((5, 10), (10, 10))
    assert {"rome.v_lr", "rome.kl_prompt", "rome.templates.top_k", "rome.batch_cases"} <= log
    assert isinstance(view["model"], dict) and json.loads(json.dumps(view["rome"])) == BASE["rome"]
    assert dict(**view["hardware"]) == {k: BASE["hardware"][k] for k in ("device", "dtype", "linalg_dtype",
                                                                          "batch_size")}
    # what named a directory is computed without counting as the stage's reads
    before = set(log)
    assert stage_hash(view, "cases") == stage_hash(BASE, "cases") and log == before


def test_a_view_hashes_its_inputs_as_the_full_config_does():
    for stage in STAGES:
        view = stage_view(BASE, stage)
        for dep in stage_closure(stage):
            assert stage_config(view, dep) == stage_config(BASE, dep), (stage, dep)


# ------------------------------------------------------------------------------------------ the stages run

# few cases, items, steps and generations: the stages' code paths, not their results
TINY = ["data.splits=[valid]", "data.max_cases=2", "data.filter.enabled=false", "data.rephrase.n=2", "data.shuffle.n=2",
        "data.long_context.n_words=40", "data.long_context.n_held=2", "stats.n_samples=16", "rome.v_num_grad_steps=3",
        "rome.templates.length_params=[[5,5]]", "rome.batch_cases=2", "rep.train.steps=3", "analysis.n_cases=2",
        "analysis.n_random_pairs=3", "analysis.scan.tokens=300", "analysis.scan.window_words=30", "eren.n_records=1",
        "eren.methods=[unedited]", "eren.scaling.sizes=[20,50]", "eren.scaling.max_queries=5",
        "eren.scaling.n_latency=2", "eren.scaling.reader_queries=1", "eren.suite.n_cases=1",
        "eren.suite.groups=[success,locality]", "eval.sequential.n_edits=[1,2]", "eval.sequential.memit.layers=[4]",
        "job.split=valid"]  # per-split directories: the valid split's
# (stage, script, job overrides) in dependency order: every stage with a directory
# Every stage with a directory, run by its script (scripts/<stage>.py: one name for rule, script and stage)
# with the job's own value
JOBS = [(stage, stage, args) for stage, args in [
    ("cases", ["job.split=valid"]), ("stats", []), ("templates", []), ("rome", ["job.split=valid"]),
    ("eval_rome", ["job.split=valid"]), ("rep", ["job.split=valid"]), ("eval_rep", ["job.split=valid"]),
    ("rep_diagnostics", ["job.split=valid"]), ("fig_keys", ["job.split=valid"]), ("fig_unrelated", ["job.split=valid"]),
    ("fig_values", ["job.split=valid"]), ("eren_index", []), ("eren_eval", ["job.dataset=cfh"]), ("eren_scaling", []),
    ("eren_suite", ["job.split=valid"]), ("sequential_eval", ["job.split=valid"])]]


def tiny_model(folder: Path) -> None:
    """A random 30-layer SmolLM2 shape (hidden 64) with the real tokenizer: conf/model/smollm2-135m.yaml
    describes it, as edit model and as EREN reader."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    real = model_dir("smollm2-135m")
    tok = AutoTokenizer.from_pretrained(real)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=30,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    for f in real.iterdir():
        if f.name.startswith(("tokenizer", "chat_template", "special_tokens")):
            shutil.copy(f, folder / f.name)


def small_data(folder: Path) -> None:
    """resources/data linked file by file, the EREN data sets cut to 8 records (re-hashed)."""
    src = REPO / "resources" / "data"
    manifest = json.loads((src / "MANIFEST.json").read_text())
    for rel in manifest:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).symlink_to(src / rel)
    cuts = {"eren/cfh_filtered.json": lambda r: r[:8],
            "eren/fever_filtered.json": lambda r: r[:4] + r[len(r) // 2:][:4]}
    for rel, cut in cuts.items():
        records = cut(json.loads((src / rel).read_text()))
        (folder / rel).unlink()
        (folder / rel).write_text(json.dumps(records))
        manifest[rel] = {"sha256": sha256_file(folder / rel), "bytes": (folder / rel).stat().st_size}
    (folder / "MANIFEST.json").write_text(json.dumps(manifest))


def run_script(script: str, overrides: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, f"scripts/{script}.py", *overrides], cwd=REPO, capture_output=True,
                          text=True)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_run")
    tiny_model(root / "models" / "smollm2-135m")
    small_data(root / "data")
    overrides = [f"paths.results={root / 'results'}", f"paths.models={root / 'models'}",
                 f"paths.data={root / 'data'}", *TINY]
    cfg = compose(overrides)
    for stage, script, job in JOBS:
        res = run_script(script, overrides + job)
        assert res.returncode == 0, f"{stage}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return overrides, cfg


def saved_config(cfg: dict, stage: str) -> dict:
    return json.loads((stage_dir(cfg, stage) / "stage_config.json").read_text())


@pytest.mark.integration
@pytest.mark.slow
def test_stage_config_json_records_what_named_the_directory(tiny_run):
    _, cfg = tiny_run
    for stage, _, _ in JOBS:
        saved = saved_config(cfg, stage)
        assert saved["hash"] == stage_hash(cfg, stage) and saved["stage"] == stage
        assert {"keys": saved["keys"], "data": saved["data"]} == json.loads(json.dumps(stage_config(cfg, stage)))
        visible = [*stage_reads(stage), *ALWAYS_READABLE]
        assert all(under(k.split("[")[0], visible) for k in saved["read"]), stage


@pytest.mark.integration
@pytest.mark.slow
def test_every_declared_read_that_adds_to_the_hash_is_read_by_the_stage(tiny_run):
    """No dead declarations: each of a stage's own reads that hashes keys its inputs do not is used by its
    code (on this config, where every optional branch that such a read serves is taken)."""
    _, cfg = tiny_run
    for stage, _, _ in JOBS:
        upstream = set().union(*(hashed_keys(cfg, d) for d in STAGES[stage].inputs))
        read = saved_config(cfg, stage)["read"]
        for prefix in STAGES[stage].reads:
            adds = [k for k in hashed_keys(cfg, stage) if under(k, [prefix]) and k not in upstream]
            if adds:
                assert any(under(r, [prefix]) for r in read), (stage, prefix)


@pytest.mark.integration
@pytest.mark.slow
def test_rep_outputs_do_not_depend_on_the_gate_threshold(tiny_run):
    overrides, cfg = tiny_run
    out = stage_dir(cfg, "rep")
    first = {name: (out / name).read_bytes() for name in ("valid.adaptors.pt", "valid.rep.jsonl")}
    for name in first:
        (out / name).unlink()
    res = run_script("rep", overrides + ["job.split=valid", "rep.gate_threshold=0.7"])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert stage_dir(compose(overrides + ["rep.gate_threshold=0.7"]), "rep") == out  # the same directory ...
    assert {name: (out / name).read_bytes() for name in first} == first  # ... and the same bytes
    assert stage_dir(compose(overrides + ["rep.gate_threshold=0.7"]), "eval_rep") != stage_dir(cfg, "eval_rep")


@pytest.mark.integration
@pytest.mark.slow
def test_the_sequential_table_and_figure_carry_the_perplexity_probe(tiny_run, tmp_path):
    _, cfg = tiny_run
    summary_path = stage_dir(cfg, "sequential_eval") / "valid.sequential.summary.json"
    summary = json.loads(summary_path.read_text())
    probe = summary["perplexity"]
    assert len(probe["lines"]) == cfg["eval"]["sequential"]["perplexity"]["n_lines"] == len(probe["unedited"])
    # every weight-editing method has the probe; EREN edits no weight
    assert set(probe) == {"lines", "unedited", "rome", "rep", "memit", "alphaedit"} and set(probe["rep"]) == {"1", "2"}
    csv_path, md_path, png = tmp_path / "sequential.csv", tmp_path / "sequential.md", tmp_path / "sequential.png"
    res = subprocess.run([sys.executable, "scripts/sequential_table.py", "--out-csv", str(csv_path), "--out-md",
                          str(md_path), str(summary_path)], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = list(csv.DictReader(csv_path.open()))
    assert {(r["method"], r["n_edits"]) for r in rows} >= {
        ("Unedited", "1"), ("ROME", "2"), ("ROME+REP", "2"), ("AlphaEdit − ROME", "2"), ("EREN", "2"),
        ("EREN − ROME", "2"), ("ROME+REP − ROME", "2")}
    assert [r["method"] for r in rows].count("Unedited") == 2  # once per N, from ROME's pre phase
    eren = [r for r in rows if r["method"].startswith("EREN")]
    assert all(r["perplexity"] == "" for r in eren)  # no weight edited
    assert {(r["method"], r["protocol"]) for r in eren} == {
        ("EREN", "teacher_forced"), ("EREN − ROME", "teacher_forced"), ("EREN (generation)", "generation")}
    for r in rows:
        if r in eren:
            continue
        value, lo, hi = (float(r[k]) for k in ("perplexity", "perplexity_lo", "perplexity_hi"))
        assert lo <= value <= hi, r
        if "−" not in r["method"]:
            assert value > 1
    unedited = [float(r["perplexity"]) for r in rows if r["method"] == "Unedited"]
    nll = sum(x for x, _ in probe["unedited"]) / sum(n for _, n in probe["unedited"])
    assert unedited == pytest.approx([math.exp(nll)] * 2)
    res = subprocess.run([sys.executable, "scripts/plot_sequential.py", "--out-png", str(png), str(csv_path)],
                         cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0 and png.stat().st_size > 0, res.stderr[-3000:]


@pytest.mark.integration
@pytest.mark.slow
def test_sequential_eval_resumes_at_the_first_method_it_had_not_finished(tiny_run, tmp_path, monkeypatch):
    import robustedit.pipeline.sequential as sequential

    _, cfg = tiny_run
    calls, real = [], sequential.timed_sequence

    def killed_at_the_third(lm, editor, *args):
        calls.append(type(editor).__name__)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as a kill would, after ROME's and MEMIT's pieces
        return real(lm, editor, *args)

    monkeypatch.setattr(sequential, "timed_sequence", killed_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        sequential.sequential_split(cfg, tmp_path)
    partial = tmp_path / "valid.sequential.partial"
    pieces = sorted(p.name for p in partial.glob("*.pt"))
    assert pieces == ["000000.pt", "000001.pt", "000002.pt"]
    assert not (tmp_path / "valid.sequential.summary.json").exists()
    rome_piece = torch.load(partial / "000001.pt", weights_only=True)["records"][0]["methods"]
    calls.clear()
    sequential.sequential_split(cfg, tmp_path)
    assert calls == ["AlphaEditSequential"] and not partial.exists()  # then EREN, which edits no weight
    summary = json.loads((tmp_path / "valid.sequential.summary.json").read_text())
    for method in ("rome", "rep"):  # one ROME sequence scored both: reused, not recomputed
        assert summary["summaries"][method] == json.loads(json.dumps(rome_piece[method]["summary"]))
    assert list(summary["summaries"]) == ["rome", "rep", "memit", "alphaedit", "eren"]
    assert set(summary["seconds"]) == {"unedited", "rome", "memit", "alphaedit", "eren"}
    first_run = stage_dir(cfg, "sequential_eval") / "valid.sequential.summary.json"
    assert summary["perplexity"]["lines"] == json.loads(first_run.read_text())["perplexity"]["lines"]
