"""Which parts of the config each pipeline stage reads, the short hash that names its output directory,
and the view of the config its code is given.

A stage declares the config subtrees its code reads (`Stage.reads`: a group such as "rome", a subtree
such as "rep.train" or a single key such as "model.layer"). Its hash covers every leaf under them, minus
the NOT_HASHED keys below, plus the sha256 (from paths.data/MANIFEST.json) of each data file its config
names, plus the same of every stage it consumes. A new key in a group a stage reads is hashed without
anyone listing it, and the stage's code sees nothing else: `stage_view` hands it a copy of the config
pruned to those subtrees (and job.*, paths.*), where reading any other key raises StageReadError naming
the key and the stage. So a key the code reads but the hash misses fails when the stage runs instead of
serving another configuration's results, and an override reruns only the stages that read it (a
gate-threshold sweep creates new eval_rep directories only).
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError
from .manifest import sha256_user_file, user_path

HASH_LEN = 10  # hex characters; collisions among a user's runs are negligible


@dataclass(frozen=True)
class Stage:
    reads: tuple[str, ...]  # config subtrees its code reads; every leaf below them is hashed (but NOT_HASHED)
    inputs: tuple[str, ...] = ()  # stages whose outputs it reads; their reads and data files are part of its hash
    data_files: tuple[str, ...] = ()  # subtrees of `reads` naming files under paths.data: their sha256s are hashed


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

STAGES: dict[str, Stage] = {
    # the converted weights (scripts/prepare_model.py; resources/models/<name>, not a hashed directory)
    "model": Stage(("model.name", "model.source", "model.rope_theta")),
    # the robustness cases: the whole data group (data.splits only selects jobs: NOT_HASHED), of data.split_files
    # only the job's own split (per_split below)
    "cases": Stage(("seed", "data", *LOADS_MODEL, *BATCHES), ("model",),
                   ("data.split_files", "data.pool_file", "data.patil_file", "data.long_context.local_files")),
    # ROME's second moment at the edit layer, accumulated in hardware.linalg_dtype
    "stats": Stage(("stats", "model.layer", *LOADS_MODEL, "hardware.linalg_dtype"), ("model",),
                   ("stats.local_files",)),
    # context templates sampled from the model (seeded)
    "templates": Stage(("seed", "rome.templates", *LOADS_MODEL), ("model",)),
    # one ROME edit per case: every ROME hyperparameter (rome.batch_cases is speed only)
    "rome": Stage(("rome", "model.layer", *LOADS_MODEL), ("cases", "stats", "templates")),
    # teacher-forced evaluation of the ROME edits (and of the unedited model)
    "eval_rome": Stage(("eval.max_length", "eval.long_id_passages", *LOADS_MODEL, *BATCHES), ("rome",)),
    # one REP adaptor per case, trained on ROME's u; not rep.gate_threshold, which only evaluation applies
    # (the gate's negative snippets are drawn from data.long_context's corpus; whitened objectives read stats)
    "rep": Stage(("seed", "rep.adaptor", "rep.train", "data.long_context", *LOADS_MODEL), ("rome", "stats"),
                 ("data.long_context.local_files",)),
    # ROME+REP evaluation: the gate threshold, the test-time dropout (seeded) and the method's label
    "eval_rep": Stage(("seed", "rep.name", "rep.adaptor.eval_dropout", "rep.gate_threshold", "eval.max_length",
                       "eval.long_id_passages", *LOADS_MODEL, *BATCHES), ("rep", "eval_rome")),
    # REP key diagnostics: each evaluated key's transfer ratio uᵀa / uᵀk* before and after its case's adaptor,
    # joined with eval_rome's and eval_rep's per-item exact match (the gate threshold is eval_rep's)
    "rep_diagnostics": Stage(("rep.gate_threshold", "eval.long_id_passages", *LOADS_MODEL, *BATCHES),
                             ("rep", "eval_rome", "eval_rep")),
    # analysis figures (REP Figures 3-5); the analysed split is a job value, like every stage's split
    "fig_keys": Stage(("seed", "analysis.n_cases", "analysis.n_random_pairs", "analysis.pca_case", "model.layer",
                       *LOADS_MODEL, *BATCHES), ("cases", "stats")),
    "fig_unrelated": Stage(("seed", "analysis.n_cases", "analysis.scan", "model.layer", *LOADS_MODEL, *BATCHES),
                           ("cases", "stats"), ("analysis.scan.local_files",)),
    "fig_values": Stage((*LOADS_MODEL, *BATCHES), ("rome",)),
    # EREN. The notebooks: encoder, index kind and the data sets' statements
    "eren_index": Stage(("eren.index", "eren.data", *ENCODES), (), ("eren.data",)),
    # ES/BP/EQ per data set and method: the reader and the seeded subsample of evaluated records
    "eren_eval": Stage(("seed", "eren.methods", "eren.n_records", "eren.data", "eren.faiss_device", "eren.score_gate",
                        *ENCODES, *ENCODES_QUERIES, *READS_NOTES), ("eren_index",)),
    # recall@k and latency against notebook size (own notebooks); the reader serves reader_queries > 0
    "eren_scaling": Stage(("seed", "eren.scaling", *ENCODES, *ENCODES_QUERIES, *READS_NOTES), (),
                          ("eren.scaling.files",)),
    # EREN on the run's robustness cases (Table 1's EREN row); notebook built from the cases' statements
    "eren_suite": Stage(("seed", "eren.index", "eren.faiss_device", "eren.suite", "eren.score_gate",
                         "eval.long_id_passages", *ENCODES, *ENCODES_QUERIES, *READS_NOTES), ("cases",)),
}

# Keys a stage may read that no hash covers, each with the reason its value cannot change a result.
# "Speed only" means the same computation in other batches or with other bookkeeping: results agree to
# floating-point rounding (batched kernels and summation order; e.g. mom2.pt moves by ~1e-9 relative
# between stats.checkpoint_every=2 and 500, as between two stats.batch_tokens), never a different method.
# Byte-identical reruns need the same values of these, as of the thread count and the machine.
NOT_HASHED: dict[str, str] = {
    "hardware.threads": "speed only: torch threads",
    "hardware.batch_size": "speed only: prompts per forward pass (padded rows are masked)",
    "stats.batch_tokens": "speed only: token budget of a forward pass while summing E[kk^T]",
    "stats.checkpoint_every": "speed only: rows per chunk of the same sum (a chunk is length-sorted into "
                              "batches, so like batch_tokens it moves only the rounding)",
    "stats.checkpoint_minutes": "bookkeeping: whether a partial sum is also saved after a chunk; the sum "
                                "itself is bit-identical (tests/test_stats_checkpoints.py)",
    "rome.batch_cases": "speed only: cases optimised together (tests/test_rome_core.py: equal one at a time)",
    "rep.train.key_batch_rows": "speed only: prompts per forward while reading REP's training keys",
    "eren.encoder_batch_size": "speed only: sentences per encoder forward pass",
    "eren.faiss_device": "speed only: exact (flat) search returns the same notes on the CPU or a GPU",
    "data.splits": "job selection: which splits get a cases job, not what a split's cases are",
    "data.rephrase.cache_dir": "location of the rephrase cache (keyed by backend, model and prompt)",
    "data.rephrase.allow_generate": "a cache miss becomes an error instead of a generation: same cases or none",
    "data.rephrase.api.api_key_env": "the name of the environment variable that holds the API key",
    "data.rephrase.api.timeout_s": "how long a request may take, not what it returns",
}

# Readable by every stage, hashed by none for that: the job's own values (which split or data set;
# Snakemake sets them per job), the folders (where things are; the data files' content is hashed
# instead) and model.name, which places every stage directory under results/<model.name>/ (EREN's
# stages do not read the model; those that do hash model.name with the rest of LOADS_MODEL).
ALWAYS_READABLE = ("job", "paths", "model.name")

# Leaves no stage reads (the rules, the table scripts or wandb do), so no hash covers them. Every leaf of
# the composed config is hashed by some stage, NOT_HASHED or here (tests/test_stage_hashes.py checks it).
READ_BY_NO_STAGE: dict[str, str] = {
    "model.max_length": "read through its interpolations stats.max_length and eval.max_length",
    "model.rep_test_variant": "read through its interpolation in data.split_files.test",
    "model.chat_template": "checked by validate (readers are described by their own conf/model file)",
    "hardware.name": "the hardware preset's label",
    "hardware.gpus": "a Snakemake resource (GPUs a model-loading job requests)",
    "eval.report_split": "which split's summaries the tables gather",
    "eval.splits": "which splits are evaluated (jobs)",
    "analysis.split": "which split the analysis figures analyse (jobs)",
    "rep.sweep_thresholds": "which eval_rep jobs the gate-threshold ablation adds",
    "rep.sweep_splits": "which splits the ablation covers (jobs)",
    "rep.search": "which rep and eval_rep jobs the setting search adds (each setting is hashed as a run)",
    "tracking": "wandb logging of finished results",
}


# Splits. A stage that consumes the cases (or builds them) writes one set of <split>.* files per split, and
# each split has its own directory: of data.split_files its hash covers only the job's split, by the name and
# the sha256 of its file (not its path: a moved identical file keeps its directories), so adding a split or
# editing another split's file never moves a split's directories. Every other data key is hashed as before.
SPLIT_FILES = "data.split_files"
# Config subtrees whose files may be the user's own, named by path outside paths.data (manifest.user_path):
# hashed by the sha256 of their content, computed instead of looked up in MANIFEST.json
USER_FILE_KEYS = (SPLIT_FILES, "eren.data")


def per_split(stage: str) -> bool:
    """Whether the stage has one directory per split: it (or a stage it consumes) reads data.split_files."""
    return any(_under(SPLIT_FILES, STAGES[s].reads) for s in _closure(stage))


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


def _other_split(key: str, split: str | None) -> bool:
    """Whether `key` is another split's entry of data.split_files (hashed by that split's directories only)."""
    return _under(key, [SPLIT_FILES]) and split is not None and not _under(key, [f"{SPLIT_FILES}.{split}"])


class StageReadError(ConfigError):
    """A stage's code read a config key that its directory hash does not cover."""


def _under(key: str, prefixes) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _closure(stage: str) -> list[str]:
    """The stage and, transitively, the stages it consumes."""
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; known: {sorted(STAGES)}")
    out = [stage]
    for dep in STAGES[stage].inputs:
        out += [s for s in _closure(dep) if s not in out]
    return out


def stage_reads(stage: str) -> list[str]:
    """The config subtrees the stage's hash covers: its own reads and its inputs', transitively."""
    return sorted({r for s in _closure(stage) for r in STAGES[s].reads})


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
    split's own entry, and that only when it names no file (the pool's null: a file is hashed by content in
    data_digests, under the same key)."""
    split = split_of(cfg, stage, split)
    found: dict[str, Any] = {}
    for prefix in stage_reads(stage):
        if prefix in OPTIONAL and not _has(cfg, prefix):
            continue
        found.update(leaves(lookup(cfg, prefix), prefix))
    return {k: v for k, v in sorted(found.items()) if not _under(k, NOT_HASHED) and not _other_split(k, split)
            and not (_under(k, [SPLIT_FILES]) and v is not None)}


@functools.lru_cache(maxsize=32)
def _manifest(path: str, mtime_ns: int) -> dict:
    return json.loads(Path(path).read_text())


def manifest_of(data_root: str) -> dict:
    path = Path(data_root) / "MANIFEST.json"
    if not path.is_file():
        raise ConfigError(f"paths.data={data_root!r}: {path} is missing, so the data files cannot be hashed")
    return _manifest(str(path.resolve()), path.stat().st_mtime_ns)


def data_files(cfg: Mapping[str, Any], stage: str, split: str | None = None) -> dict[str, str]:
    """Dotted key (list items get [i]) -> the file it names (under paths.data, or a user file: USER_FILE_KEYS),
    for the stage and its inputs; of data.split_files only the split's own."""
    split = split_of(cfg, stage, split)
    out: dict[str, str] = {}
    for prefix in sorted({d for s in _closure(stage) for d in STAGES[s].data_files}):
        for key, value in leaves(lookup(cfg, prefix), prefix).items():
            if _other_split(key, split):
                continue
            if key.endswith(".kind") and _under(key, ["eren.data"]):  # {file, kind}: the kind names no file
                continue
            names = value if isinstance(value, list) else [value]
            out.update({(f"{key}[{i}]" if isinstance(value, list) else key): n
                        for i, n in enumerate(names) if n is not None})
    return out


def user_files(cfg: Mapping[str, Any], stage: str, split: str | None = None) -> dict[str, Path]:
    """Dotted key -> resolved path of each user data file (named by path outside paths.data) the stage reads."""
    root = lookup(cfg, "paths.data")
    manifest = manifest_of(root)
    out = {}
    for key, rel in data_files(cfg, stage, split).items():
        if rel in manifest:
            continue
        path = user_path(root, rel) if _under(key, USER_FILE_KEYS) else None
        if path is None:
            own = _under(key, USER_FILE_KEYS)
            inside = (Path(root) / rel).is_file() or (Path(rel).expanduser().is_file() and own)
            hint = ("" if not (inside or own) else
                    ": a file inside paths.data must be listed there with its sha256 and size" +
                    (f" (or keep your own file outside {root} and name it by path)" if own else "") if inside else
                    ", nor an existing file outside paths.data (a path, absolute or relative to the working "
                    "directory)")
            raise ConfigError(f"{key}={rel!r} is not listed in {Path(root) / 'MANIFEST.json'}{hint}")
        out[key] = path
    return out


def data_digests(cfg: Mapping[str, Any], stage: str, split: str | None = None) -> dict[str, str]:
    """Dotted key -> sha256 of the data file it names (content, not path): from paths.data's MANIFEST.json,
    or computed for a user file."""
    manifest = manifest_of(lookup(cfg, "paths.data"))
    users = user_files(cfg, stage, split)
    return {key: sha256_user_file(users[key]) if key in users else manifest[rel]["sha256"]
            for key, rel in data_files(cfg, stage, split).items()}


def stage_config(cfg: Mapping[str, Any], stage: str, split: str | None = None) -> dict[str, Any]:
    """What names a stage's directory: its hashed config leaves and the sha256 of its data files (for a
    per-split stage, of `split` or job.split: see per_split)."""
    return {"keys": hashed_keys(cfg, stage, split), "data": data_digests(cfg, stage, split)}


def stage_hash(cfg: Mapping[str, Any], stage: str, split: str | None = None) -> str:
    blob = json.dumps(stage_config(cfg, stage, split), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:HASH_LEN]


class StageView(dict):
    """A config (sub)tree pruned to what a stage may read. Reading a pruned key, by `[]`, `get` or `in`,
    raises StageReadError naming the key and the stage; every leaf read is added to `log`. A dict, so
    library code can copy it, `**`-expand it and write it as JSON."""

    def __init__(self, items: dict, path: str, stage: str, hidden: set[str], log: set[str]):
        super().__init__(items)
        self.path, self.stage, self.hidden, self.log = path, stage, hidden, log

    def _refuse(self, key) -> None:
        full = f"{self.path}.{key}" if self.path else str(key)
        raise StageReadError(
            f"stage {self.stage!r} read config key {full!r}, which its directory hash does not cover: add it to "
            f"the stage's reads in workflow/robustedit/stages.py (or to NOT_HASHED, saying why it cannot "
            f"change a result)")

    def __missing__(self, key):
        if key in self.hidden:
            self._refuse(key)
        raise KeyError(f"{self.path}.{key}" if self.path else key)

    def __getitem__(self, key):
        value = super().__getitem__(key)
        if not (isinstance(value, dict) and value):
            self.log.add(f"{self.path}.{key}" if self.path else key)
        return value

    def get(self, key, default=None):
        return self[key] if self.__contains__(key) else default

    def __contains__(self, key) -> bool:
        if key in self.hidden:
            self._refuse(key)
        return super().__contains__(key)

    def __iter__(self):  # defined so that dict(view) and **view go through __getitem__ (and the log)
        return super().__iter__()

    def items(self):
        return [(k, self[k]) for k in self]

    def values(self):
        return [self[k] for k in self]


def _prune(node: Mapping, path: str, visible: list[str], stage: str, log: set[str]) -> StageView:
    items, hidden = {}, set()
    for key, value in node.items():
        full = f"{path}.{key}" if path else key
        inside = _under(full, visible)
        if inside or any(v.startswith(full + ".") for v in visible):
            items[key] = _prune(value, full, visible if not inside else [full], stage, log) \
                if isinstance(value, Mapping) else value
        else:
            hidden.add(key)
    return StageView(items, path, stage, hidden, log)


def stage_view(cfg: Mapping[str, Any], stage: str, log: set[str] | None = None) -> StageView:
    """The config as the stage's code may see it: its (and its inputs') reads, job.* and paths.*.
    Leaf reads are recorded in `log` when given."""
    return _prune(cfg, "", [*stage_reads(stage), *ALWAYS_READABLE], stage, set() if log is None else log)
