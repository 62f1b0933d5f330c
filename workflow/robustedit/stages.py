"""Which parts of the config each pipeline stage reads, the short hash that names its output directory,
and the view of the config its code is given.

A stage declares the config subtrees its code reads (`Stage.reads`: a group such as "rome", a subtree
such as "rep.train" or a single key such as "model.layer"). Its hash covers every leaf under them, minus
the NOT_HASHED keys (robustedit.unhashed), plus the sha256 (from paths.data/MANIFEST.json) of each data file its config
names, plus the same of every stage it consumes. A new key in a group a stage reads is hashed without
anyone listing it, and the stage's code sees nothing else: `stage_view` hands it a copy of the config
pruned to those subtrees (and job.*, paths.*), where reading any other key raises StageReadError naming
the key and the stage. So a key the code reads but the hash misses fails when the stage runs instead of
serving another configuration's results, and an override reruns only the stages that read it (a
gate-threshold sweep creates new eval_rep directories only).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import ConfigError
from .unhashed import ALWAYS_READABLE, NOT_HASHED, READ_BY_NO_STAGE  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class Stage:
    reads: tuple[str, ...]  # config subtrees its code reads; every leaf below them is hashed (but NOT_HASHED)
    inputs: tuple[str, ...] = ()  # stages whose outputs it reads; their reads and data files are part of its hash
    data_files: tuple[str, ...] = ()  # subtrees of `reads` naming files under paths.data: their sha256s are hashed
    # key -> file name in the stage directory, the one place a stage's files are named; {split} and
    # {eren_dataset} are the job's values (and the rules' wildcards). The rules declare these files as their
    # outputs (a "partial" is a resume checkpoint, not an output), the scripts write them (file_name) and the
    # stages downstream read them (robustedit.pipeline.stage.stage_file).
    files: Mapping[str, str] = field(default_factory=dict)


# What robustedit.models.load.load_model reads of the model description, and where and in what dtype it loads
LOADS_MODEL = ("model.name", "model.family", "model.n_layers", "model.modules", "model.add_bos", "model.hf_class",
               "model.model_types", "model.pad", "hardware.device", "hardware.dtype")
# Reads a config may lack (a model description may leave them out): nothing to hash or see then
OPTIONAL = ("model.hf_class", "model.model_types", "model.pad")
BATCHES = ("hardware.batch_size",)  # prompts per forward pass (read, but speed only: NOT_HASHED)
# EREN's notebook encoder (robustedit.pipeline.eren load_encoder_from) and reader (load_reader_from)
ENCODES = ("eren.encoder", "eren.encoder_batch_size", "hardware.device")
READS_NOTES = ("eren.reader", "eren.k", "hardware.device", "hardware.dtype", "hardware.batch_size")
# Stages that encode queries (the side an over-long one is cut on); eren_index encodes notes only
ENCODES_QUERIES = ("eren.query_truncation",)

# The files of an evaluation: per case its items' metrics, and their summary (what the tables gather)
EVALUATED = {"results": "{split}.results.jsonl", "summary": "{split}.summary.json"}
# One notebook per EREN data set (robustedit.eren.notebook): the FAISS index, the notes and their metadata
NOTEBOOK = {"index": "{eren_dataset}/index.faiss", "notes": "{eren_dataset}/notes.json",
            "meta": "{eren_dataset}/meta.json"}

STAGES: dict[str, Stage] = {
    # the converted weights (scripts/prepare_model.py; resources/models/<name>, not a hashed directory)
    "model": Stage(("model.name", "model.source", "model.rope_theta")),
    # the robustness cases: the data group (data.splits selects jobs: NOT_HASHED), of data.split_files one split
    "cases": Stage(("seed", "data", *LOADS_MODEL, *BATCHES), ("model",),
                   ("data.split_files", "data.pool_file", "data.patil_file", "data.long_context.local_files"),
                   files={"cases": "{split}.jsonl", "stats": "{split}.stats.json"}),
    # ROME's second moment at the edit layer, accumulated in hardware.linalg_dtype
    "stats": Stage(("stats", "model.layer", *LOADS_MODEL, "hardware.linalg_dtype"), ("model",),
                   ("stats.local_files",),
                   files={"moment": "mom2.pt", "stats": "stats.json", "partial": "mom2.partial.pt"}),
    # context templates sampled from the model (seeded)
    "templates": Stage(("seed", "rome.templates", *LOADS_MODEL), ("model",),
                       files={"templates": "templates.json"}),
    # one ROME edit per case: every ROME hyperparameter (rome.batch_cases is speed only)
    "rome": Stage(("rome", "model.layer", *LOADS_MODEL), ("cases", "stats", "templates"),
                  files={"edits": "{split}.edits.pt", "diagnostics": "{split}.rome.jsonl",
                         "partial": "{split}.edits.partial"}),
    # teacher-forced (and, with eval.generation.enabled, generation) evaluation of the ROME edits and of the
    # unedited model
    "eval_rome": Stage(("eval.max_length", "eval.long_id_passages", "eval.generation", *LOADS_MODEL, *BATCHES),
                       ("rome",),
                       files=EVALUATED),
    # one REP adaptor per case, trained on ROME's u; not rep.gate_threshold, which only evaluation applies
    # (the gate's negative snippets are drawn from data.long_context's corpus; whitened objectives read stats)
    "rep": Stage(("seed", "rep.adaptor", "rep.train", "data.long_context", *LOADS_MODEL), ("rome", "stats"),
                 ("data.long_context.local_files",),
                 files={"adaptors": "{split}.adaptors.pt", "logs": "{split}.rep.jsonl",
                        "partial": "{split}.adaptors.partial"}),
    # ROME+REP evaluation: the gate threshold, the test-time dropout (seeded) and the method's label
    "eval_rep": Stage(("seed", "rep.name", "rep.adaptor.eval_dropout", "rep.gate_threshold", "eval.max_length",
                       "eval.long_id_passages", "eval.generation", *LOADS_MODEL, *BATCHES), ("rep", "eval_rome"),
                      files=EVALUATED),
    # REP key diagnostics: each evaluated key's transfer ratio uᵀa / uᵀk* before and after its case's adaptor,
    # joined with eval_rome's and eval_rep's per-item exact match (the gate threshold is eval_rep's), and the
    # oracle ceilings of a key-side fix (robustedit.analysis.oracle)
    "rep_diagnostics": Stage(("rep.gate_threshold", "eval.long_id_passages", *LOADS_MODEL, *BATCHES),
                             ("rep", "eval_rome", "eval_rep"),
                             files={"transfer": "{split}.transfer.csv", "summary": "{split}.transfer_summary.csv",
                                    "figure": "{split}.transfer.png", "oracle": "{split}.oracle.csv",
                                    "oracle_summary": "{split}.oracle_summary.csv"}),
    # analysis figures (REP Figures 3-5); the analysed split is a job value, like every stage's split
    "fig_keys": Stage(("seed", "analysis.n_cases", "analysis.n_random_pairs", "analysis.pca_case", "model.layer",
                       *LOADS_MODEL, *BATCHES), ("cases", "stats"),
                      files={"similarity": "{split}.similarity.csv", "pca": "{split}.pca.csv"}),
    "fig_unrelated": Stage(("seed", "analysis.n_cases", "analysis.scan", "model.layer", *LOADS_MODEL, *BATCHES),
                           ("cases", "stats"), ("analysis.scan.local_files",),
                           files={"top": "{split}.top_prefixes.csv", "hist": "{split}.scan_hist.csv",
                                  "scan": "{split}.scan.json"}),
    "fig_values": Stage((*LOADS_MODEL, *BATCHES), ("rome",),
                        files={"values": "{split}.values.csv"}),
    # the sequential protocol (robustedit.sequential): each eval.sequential method's edits accumulated over the
    # split's cases, the suite after every checkpoint N; MEMIT's layers' moments are stats at model.layer=<l>
    # "stats": the perplexity probe leaves out the rows the statistics sampled (already hashed as an input)
    # rep: ROME+REP reads the rep stage's adaptors at rep.gate_threshold; eren: the notebook and reader as eren_suite
    "sequential_eval": Stage(("seed", "rome", "model.layer", "eval.sequential", "eval.max_length",
                              "eval.long_id_passages", "stats", "rep.gate_threshold", "eren.index", "eren.faiss_device",
                              "eren.suite.groups", *LOADS_MODEL, *BATCHES, *ENCODES, *ENCODES_QUERIES, *READS_NOTES),
                             ("cases", "stats", "templates", "rep"), ("stats.local_files",),
                             files={"results": "{split}.sequential.results.jsonl",
                                    "summary": "{split}.sequential.summary.json",
                                    "partial": "{split}.sequential.partial"}),
    # EREN. The notebooks: encoder, index kind and the data sets' statements
    "eren_index": Stage(("eren.index", "eren.data", *ENCODES), (), ("eren.data",),
                        files={"report": "index.json", **NOTEBOOK}),
    # ES/BP/EQ per data set and method: the reader and the seeded subsample of evaluated records
    "eren_eval": Stage(("seed", "eren.methods", "eren.n_records", "eren.data", "eren.faiss_device", "eren.score_gate",
                        *ENCODES, *ENCODES_QUERIES, *READS_NOTES), ("eren_index",),
                       files={"items": "{eren_dataset}.items.jsonl", "summary": "{eren_dataset}.summary.json"}),
    # recall@k and latency against notebook size (own notebooks); the reader serves reader_queries > 0
    "eren_scaling": Stage(("seed", "eren.scaling", *ENCODES, *ENCODES_QUERIES, *READS_NOTES), (),
                          ("eren.scaling.files",),
                          files={"scaling": "scaling.json", "items": "scaling.items.jsonl"}),
    # EREN on the run's robustness cases (Table 1's EREN row); notebook built from the cases' statements
    "eren_suite": Stage(("seed", "eren.index", "eren.faiss_device", "eren.suite", "eren.score_gate",
                         "eval.long_id_passages", *ENCODES, *ENCODES_QUERIES, *READS_NOTES), ("cases",),
                        files={**EVALUATED, "score_results": "{split}.eren_score.results.jsonl",
                               "score_summary": "{split}.eren_score.summary.json"}),
}


# Splits. A stage that consumes the cases (or builds them) writes one set of <split>.* files per split, and
# each split has its own directory: of data.split_files its hash covers only the job's split, by the name and
# the sha256 of its file (not its path: a moved identical file keeps its directories), so adding a split or
# editing another split's file never moves a split's directories. For the same reason a key listing splits
# (SPLIT_LISTS) is hashed, in a split's directory, as whether it lists that split.
SPLIT_FILES, SPLIT_LISTS = "data.split_files", ("eval.generation.skip_splits",)
# Config subtrees whose files may be the user's own, named by path outside paths.data (manifest.user_path):
# hashed by the sha256 of their content, computed instead of looked up in MANIFEST.json
USER_FILE_KEYS = (SPLIT_FILES, "eren.data")


def names_file(key: str) -> bool:
    """Whether a leaf under USER_FILE_KEYS names a file: a bare entry (`data.split_files.test`) or an entry's
    `file` (`eren.data.cfh.file`); an entry's other fields (kind, filter) are settings."""
    root = next((r for r in USER_FILE_KEYS if is_under(key, [r])), None)
    return root is not None and (key.count(".") == root.count(".") + 1 or key.endswith(".file"))


def per_split(stage: str) -> bool:
    """Whether the stage has one directory per split: it (or a stage it consumes) reads data.split_files."""
    return any(is_under(SPLIT_FILES, STAGES[s].reads) for s in stage_closure(stage))


def split_of(cfg: Mapping[str, Any], stage: str, split: str | None = None) -> str | None:
    """The split whose directory of `stage` is meant: `split`, else the config's job.split; None for a stage
    that is not per split. An unset split or one data.split_files lacks is a ConfigError naming it."""
    if not per_split(stage):
        return None
    if split is None:
        split = lookup(cfg, "job.split") if _has(cfg, "job.split") else None
    if split is None:
        raise ConfigError(f"stage {stage!r} has one directory per split: name the split (job.split)")
    known = dict(_raw_items(lookup(cfg, SPLIT_FILES)))
    if split not in known:
        raise ConfigError(f"split {split!r} is not in data.split_files (has: {', '.join(sorted(known))})")
    return split


def other_split(key: str, split: str | None) -> bool:
    """Whether `key` is another split's entry of data.split_files (hashed by that split's directories only)."""
    return is_under(key, [SPLIT_FILES]) and split is not None and not is_under(key, [f"{SPLIT_FILES}.{split}"])


def is_under(key: str, prefixes) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def stage_closure(stage: str) -> list[str]:
    """The stage and, transitively, the stages it consumes."""
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; known: {sorted(STAGES)}")
    out = [stage]
    for dep in STAGES[stage].inputs:
        out += [s for s in stage_closure(dep) if s not in out]
    return out


def file_pattern(stage: str, key: str) -> str:
    """The name of the stage's `key` file in its directory (Stage.files), placeholders ({split}, ...) unfilled."""
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; known: {sorted(STAGES)}")
    files = STAGES[stage].files
    if key not in files:
        raise ConfigError(f"stage {stage!r} has no file {key!r}; it writes: {', '.join(files) or 'none'}")
    return files[key]


def file_suffix(stage: str, key: str) -> str:
    """What follows the placeholders in the name of the stage's `key` file (".edits.pt" of "{split}.edits.pt")."""
    return file_pattern(stage, key).rsplit("}", 1)[-1]


def file_name(stage: str, key: str, **values: str | None) -> str:
    """The stage's `key` file name with its placeholders filled from `values` (split=..., eren_dataset=...)."""
    pattern = file_pattern(stage, key)
    try:
        return pattern.format(**values)
    except KeyError as e:
        raise ConfigError(f"file {key!r} of stage {stage!r} ({pattern}) needs {e.args[0]}=...") from None


def stage_reads(stage: str) -> list[str]:
    """The config subtrees the stage's hash covers: its own reads and its inputs', transitively."""
    return sorted({r for s in stage_closure(stage) for r in STAGES[s].reads})


def _raw_items(node: Mapping):
    """A mapping's items without a StageView's read log (hashing is not the stage's code reading)."""
    return dict.items(node) if isinstance(node, dict) else node.items()


def lookup(cfg: Mapping[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        found = dict(_raw_items(node)) if isinstance(node, Mapping) else {}
        if part not in found:
            raise ConfigError(f"config key {dotted!r} is missing (at {part!r})")
        node = found[part]
    return node


def _has(cfg: Mapping[str, Any], dotted: str) -> bool:
    try:
        lookup(cfg, dotted)
    except ConfigError:
        return False
    return True


def leaves(node: Any, path: str) -> dict[str, Any]:
    """Dotted path -> value of every leaf at or below `node` (a leaf: not a mapping, or an empty one)."""
    if not isinstance(node, Mapping) or not node:
        return {path: node}
    out: dict[str, Any] = {}
    for key, value in _raw_items(node):
        out.update(leaves(value, f"{path}.{key}" if path else key))
    return out


def hashed_keys(cfg: Mapping[str, Any], stage: str, split: str | None = None) -> dict[str, Any]:
    """Every leaf under the stage's reads (and its inputs'), minus NOT_HASHED; of data.split_files only the
    split's own entry, and of that only what names no file (the pool's null, an entry's kind and filter: a file
    is hashed by content in data_digests, under the same key)."""
    split = split_of(cfg, stage, split)
    found: dict[str, Any] = {}
    for prefix in stage_reads(stage):
        if prefix in OPTIONAL and not _has(cfg, prefix):
            continue
        found.update(leaves(lookup(cfg, prefix), prefix))
    return {k: split in v if k in SPLIT_LISTS and split else v for k, v in sorted(found.items())
            if not is_under(k, NOT_HASHED) and not other_split(k, split)
            and not (is_under(k, [SPLIT_FILES]) and v is not None and names_file(k))}
