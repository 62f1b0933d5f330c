# Shared setup: compose each run's Hydra config and map stage directories back to overrides.
import shlex
import sys
from pathlib import Path

from snakemake.utils import validate as validate_snakemake_config
from snakemake_interface_executor_plugins.settings import DeploymentMethod

from robustedit.errors import ConfigError
from robustedit.pipeline.config import GATHERED_SPLIT_KEYS, compose, search_points, split_names
from robustedit.pipeline.stage import model_dir, stage_dir, stage_file, with_split
from robustedit.pipeline.sequential_config import NO_WEIGHTS, ON_ROME, at_layer, moment_layers
from robustedit.pipeline.tables import table1_stem
from robustedit.stages import STAGES, file_pattern, per_split
from robustedit.hashing import stage_hash


configfile: "conf/pipeline.yaml"


validate_snakemake_config(config, "../conf/pipeline.schema.yaml")

# A model-loading job takes every core it is given (torch threads = Snakemake threads), so on a
# small machine such jobs run one after another instead of oversubscribing the CPU.
try:
    MODEL_THREADS = workflow.cores
except Exception:  # commands without --cores (e.g. --cleanup-metadata) plan no jobs
    MODEL_THREADS = 1
# The interpreter of every rule, passed as params.py: with `--sdm conda` the `python` of the rule's conda
# env (env.yaml, built by Snakemake), else the interpreter running Snakemake (the project's venv).
PY = "python" if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method else sys.executable
COMMON_OVERRIDES = shlex.split(config.get("overrides") or "")
RUNS = [shlex.split(r) + COMMON_OVERRIDES for r in config["runs"]]
RUN_ARGS = " ".join(f"--run {shlex.quote(shlex.join(r))}" for r in RUNS)  # as scripts/wandb_log.py reads them
CFGS = [compose(r) for r in RUNS]

# Rule patterns below are rooted at these folders, which all runs must share.
RESULTS, MODELS, DATA = (CFGS[0]["paths"][k] for k in ("results", "models", "data"))
if any((c["paths"]["results"], c["paths"]["models"], c["paths"]["data"]) != (RESULTS, MODELS, DATA) for c in CFGS):
    raise ValueError("all runs must share paths.results, paths.models and paths.data")
# A prepared model's marker (written last by prepare_model) and the data manifest (every data file's sha256)
MODEL_SOURCE = f"{MODELS}/{{model}}/SOURCE.json"
DATA_MANIFEST = f"{DATA}/MANIFEST.json"


def _splits_of(cfg, stage):
    """The splits with their own `stage` directory (every key of data.split_files), or [None]."""
    return list(cfg["data"]["split_files"]) if per_split(stage) else [None]


# (stage, model, hash) -> the override list / composed config behind that stage directory. A per-split stage
# has one directory per split (its hash covers that split's file only): its RUN_OF config has job.split set,
# so stage_dir(RUN_OF[...], input_stage) names the input's directory of the same split.
OVERRIDES, RUN_OF = {}, {}
for _ovr, _cfg in zip(RUNS, CFGS):
    for _stage in STAGES:
        for _split in _splits_of(_cfg, _stage):
            _key = (_stage, _cfg["model"]["name"], stage_hash(_cfg, _stage, _split))
            OVERRIDES[_key], RUN_OF[_key] = _ovr, with_split(_cfg, _split)
MODEL_CFGS = {c["model"]["name"]: (r, c) for r, c in zip(RUNS, CFGS)}

# Evaluation stages whose <report_split>.summary.json become rows of Table 1 (EREN: the reader on the same cases).
TABLE1_STAGES = ["eval_rome", "eval_rep", "eren_suite"]
# Table 1's summaries, in row order: (stage, summary file, its per-case results file)
TABLE1_FILES = [
    ("eval_rome", "summary", "results"),
    ("eval_rep", "summary", "results"),
    ("eren_suite", "summary", "results"),
    ("eren_suite", "score_summary", "score_results"),
]
# Table 1's path without suffix: tables/table1 for the default splits, tables/table1.<split> for another (zsre, yours)
TABLE1 = f"{RESULTS}/tables/{table1_stem([c['eval']['report_split'] for c in CFGS])}"

# The gate-threshold ablation: each run again with every rep.sweep_thresholds value. Only eval_rep
# reads the threshold, so these configs share every other stage directory with their run.
SWEEP_CFGS = []  # (run config, threshold, config with that threshold)
for _ovr, _cfg in zip(RUNS, CFGS):
    for _t in _cfg["rep"]["sweep_thresholds"]:
        _sovr = _ovr + [f"rep.gate_threshold={_t}"]
        _scfg = compose(_sovr)
        SWEEP_CFGS.append((_cfg, _t, _scfg))
        for _split in _splits_of(_scfg, "eval_rep"):
            _key = ("eval_rep", _scfg["model"]["name"], stage_hash(_scfg, "eval_rep", _split))
            OVERRIDES.setdefault(_key, _sovr)
            RUN_OF.setdefault(_key, with_split(_scfg, _split))


# REP's setting search (target rep_search): each run again with every combination of rep.search.grid. Only
# rep and eval_rep read rep.train / rep.adaptor, so the settings share every other stage directory with their run.
SEARCH_CFGS = []  # (run config, the setting's overrides, config with them); [] = the run's own setting
for _ovr, _cfg in zip(RUNS, CFGS):
    for _point in [[]] + search_points(_cfg["rep"]["search"]["grid"]):
        _sovr = _ovr + _point
        _scfg = compose(_sovr)
        SEARCH_CFGS.append((_cfg, _point, _scfg))
        _split = _scfg["rep"]["search"]["split"]
        for _stage in ("rep", "eval_rep"):
            _key = (_stage, _scfg["model"]["name"], stage_hash(_scfg, _stage, _split))
            OVERRIDES.setdefault(_key, _sovr)
            RUN_OF.setdefault(_key, with_split(_scfg, _split))


def check_splits(key):
    """Raise, naming `key` (one of GATHERED_SPLIT_KEYS), if a run's `key` reads a split its data.splits does
    not build (the cases stage would refuse it only when the job runs)."""
    if key not in GATHERED_SPLIT_KEYS:
        raise ConfigError(f"{key} is not among GATHERED_SPLIT_KEYS {GATHERED_SPLIT_KEYS}")
    for run, cfg in zip(RUNS, CFGS):
        built = cfg["data"]["splits"]
        missing = [s for s in split_names(cfg, key) if s not in built]
        if missing:
            raise ConfigError(
                f"run {shlex.join(run)!r}: {key} reads split(s) {missing}, which data.splits={built} "
                f"does not build; add them to data.splits or choose {key} among {built}"
            )


def needs_splits(key, paths):
    """Input function gathering `paths`, files of the splits named by `key`; it calls check_splits(key)
    when the DAG is built, so an impossible split fails at planning, and only when such a target is asked for
    (e.g. `figures` with data.splits=[valid] needs no test split)."""

    def get(wildcards):
        check_splits(key)
        return paths

    return get


# Paths. Every stage file is named once, in robustedit.stages (Stage.files); these helpers turn the names into
# the rules' output patterns, their input functions and the gathering rules' lists.
def out(stage, key, **fixed):
    """Output pattern of the stage's `key` file: results/{model}/<stage>/{hash}/<name>, the name's placeholders
    ({split}, {eren_dataset}) left as wildcards unless given in `fixed`."""
    name = file_pattern(stage, key)
    for k, v in fixed.items():
        name = name.replace(f"{{{k}}}", v)
    return f"{RESULTS}/{{model}}/{stage}/{{hash}}/{name}"


def upstream(stage, source, *keys, per_dataset=False):
    """Input function of a `stage` job: the `keys` files of `source` that the run behind the job's directory
    consumes (the job's split for a per-split source; per_dataset: the job's EREN data set). One key gives
    one path, several a list."""

    def get(w):
        values = {"eren_dataset": w.eren_dataset} if per_dataset else {}
        paths = [stage_file(RUN_OF[(stage, w.model, w.hash)], source, key, **values) for key in keys]
        return paths[0] if len(keys) == 1 else paths

    return get


def split_file(cfg, stage, split, key):
    """The `key` file of `stage` for `split` under a run config (a per-split stage has one directory per split)."""
    return stage_file(cfg, stage, key, split)  # stage_file ignores the split of a stage that has none


# A stage job's own value, which names its log and benchmark files and is passed to its script
JOB_VALUE = {"eren_eval": ("eren_dataset", "job.dataset")}  # wildcard, config key; per-split stages: split


def _job_value(stage):
    return ("split", "job.split") if per_split(stage) else JOB_VALUE.get(stage)


def job_file(stage, kind):
    """The log (kind "logs", .log) or benchmark (kind "benchmarks", .tsv) of a stage job, in its directory."""
    value = _job_value(stage)
    name = f"{{{value[0]}}}" if value else stage
    ext = "log" if kind == "logs" else "tsv"
    return f"{RESULTS}/{{model}}/{stage}/{{hash}}/{kind}/{name}.{ext}"


# The start of every model-loading job's command: torch's and MKL's threads = the job's threads
MODEL_JOB = "OMP_NUM_THREADS={threads} MKL_NUM_THREADS={threads} {params.py:q}"


def stage_shell(stage, script=None):
    """Shell command of a model-loading stage job: scripts/<stage>.py (rule, script and stage share one name)
    with the run's overrides and the job's value."""
    value = _job_value(stage)
    arg = f" {value[1]}={{wildcards.{value[0]}:q}}" if value else ""
    return f"{MODEL_JOB} scripts/{script or stage}.py {{params.overrides}}{arg} > {{log:q}} 2>&1"


def search_file(stage, key, baseline=False):
    """One file per setting of REP's search (rep.search), on the search split: of the setting's `stage`, or
    (baseline=True) of its run's ROME evaluation, the paired differences' baseline."""
    return needs_splits(
        "rep.search.split",
        [split_file(c if baseline else s, stage, s["rep"]["search"]["split"], key) for c, _, s in SEARCH_CFGS],
    )


def gpu_count(wildcards):
    """GPU count for model-loading rules (hardware.gpus of the run that named this model). Locally,
    `--resources gpu=1` then runs one model job at a time on a one-GPU box."""
    return MODEL_CFGS[wildcards.model][1]["hardware"]["gpus"]


def forced(rule):
    """Whether this invocation forces `rule` by name (--forcerun/-R <rule>, --forceall/-F). Known only once
    the DAG is built (workflow.dag_settings is None while the Snakefile is parsed)."""
    ds = workflow.dag_settings
    return ds is not None and (ds.forceall or rule in ds.forcerun)


# Hydra override of a forced job: the stage deletes its resume checkpoint (<split>.*.partial, mom2.partial.pt)
# and starts afresh. Passed only by the Snakemake process that was given the flag: a job a remote executor
# (SLURM) re-plans does not see it and resumes a checkpoint that passes the stamp checks (same stage hash,
# code version and cases: the same computation).
FRESH_OVERRIDE = "++job.fresh=true"


def overrides_for(stage):
    """Snakemake params function: the quoted Hydra overrides behind a stage directory (rule name = stage),
    plus FRESH_OVERRIDE when the rule is forced."""

    def get(wildcards):
        key = (stage, wildcards.model, wildcards.hash)
        if key not in OVERRIDES:
            raise ValueError(f"no configured run produces {stage} outputs {key}; add it to `runs`")
        return " ".join(shlex.quote(o) for o in OVERRIDES[key] + ([FRESH_OVERRIDE] if forced(stage) else []))

    return get


# Helpers of rules/analysis.smk and rules/eren.smk (Snakemake's linter wants functions here).
def _run_labels():
    """Panel label per run: the model name, plus the run's overrides when two runs share a model."""
    names = [c["model"]["name"] for c in CFGS]
    return [n if names.count(n) == 1 else f"{n} [{' '.join(r)}]" for n, r in zip(names, RUNS)]


def fig_inputs(stage, key):
    """Input function: one per-run `key` file of `stage` for every run (its analysis.split, checked)."""
    return needs_splits("analysis.split", [split_file(c, stage, c["analysis"]["split"], key) for c in CFGS])


def _one_run_per_hash(stage):
    """The first run config of every distinct `stage` directory hash."""
    seen, out = set(), []
    for c in CFGS:
        h = stage_hash(c, stage)
        if h not in seen:
            seen.add(h)
            out.append(c)
    return out


def eren_reader(stage):
    """Input function: the prepared reader model (eren.reader) of the run behind a stage directory."""
    return lambda w: MODEL_SOURCE.format(model=RUN_OF[(stage, w.model, w.hash)]["eren"]["reader"])


def sequential_extra(w):
    """Input function of rules/sequential.smk: what its methods read beyond ROME's, the rep stage's adaptors
    (rep) and the prepared reader (eren)."""
    cfg = RUN_OF[("sequential_eval", w.model, w.hash)]
    methods = cfg["eval"]["sequential"]["methods"]
    return ([stage_file(cfg, "rep", "adaptors")] if ON_ROME in methods else []) + (
        [MODEL_SOURCE.format(model=cfg["eren"]["reader"])] if NO_WEIGHTS in methods else []
    )


def sequential_moments(w):
    """Input function of rules/sequential.smk: the second moment of every layer the job's methods edit (a stats
    directory each)."""
    cfg = RUN_OF[("sequential_eval", w.model, w.hash)]
    return [stage_file(at_layer(cfg, x), "stats", "moment") for x in moment_layers(cfg)]
