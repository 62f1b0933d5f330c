"""Which config keys each pipeline stage reads, and the short hash that names its output directory.

A stage's hash covers exactly its own keys and those of the stages it consumes, so an override
reruns only the stages that read it (a gate-threshold sweep creates new eval directories only)
and never overwrites another configuration's results. Keys are dotted paths into the composed
config; batch sizes and thread counts are deliberately absent (they do not change results).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import ConfigError

HASH_LEN = 10  # hex characters; collisions among a user's runs are negligible


@dataclass(frozen=True)
class Stage:
    keys: tuple[str, ...]
    inputs: tuple[str, ...] = ()


STAGES: dict[str, Stage] = {
    # the converted weights depend only on the source
    "model": Stage(("model.name", "model.source", "model.rope_theta")),
    # the data keys that shape a split's cases: not data.splits (which splits to build) and not where
    # the rephrase cache lives, so listing another split or moving results/ reruns nothing
    "cases": Stage(("seed", "data.split_files", "data.pool_file", "data.patil_file", "data.max_cases",
                    "data.filter", "data.rephrase.n", "data.rephrase.use_dataset", "data.rephrase.backend",
                    "data.rephrase.prompt", "data.rephrase.max_new_tokens", "data.rephrase.local",
                    "data.rephrase.api.base_url", "data.rephrase.api.model", "data.shuffle",
                    "data.long_context", "data.id_fraction", "model.add_bos", "model.rep_test_variant",
                    "hardware.dtype"), ("model",)),
    # ROME's second moment: layer, text sample, BOS policy and numerics (not the batch token budget)
    "stats": Stage(("model.layer", "model.modules", "stats.source", "stats.local_files", "stats.hub",
                    "stats.n_samples", "stats.drop_empty", "stats.include_bos", "stats.max_length",
                    "stats.sample_seed", "hardware.dtype", "hardware.linalg_dtype"), ("model",)),
    # context templates sampled from the model (seeded)
    "templates": Stage(("seed", "rome.templates", "hardware.dtype"), ("model",)),
    # one ROME edit per case (batch_cases is speed only and not hashed)
    "rome": Stage(("model.layer", "model.modules", "rome.v_num_grad_steps", "rome.v_lr", "rome.v_weight_decay",
                   "rome.clamp_norm_factor", "rome.kl_factor", "rome.early_stop_loss", "rome.mom2_adjustment",
                   "rome.target_mode"), ("cases", "stats", "templates")),
    # teacher-forced evaluation of the ROME edits (and of the unedited model)
    "eval_rome": Stage(("eval.max_length", "eval.long_id_passages"), ("rome",)),
    # one REP adaptor per case, trained on ROME's u (key_batch_rows is speed only and not hashed)
    "rep": Stage(("rep.adaptor",) + tuple(f"rep.train.{k}" for k in (
        "steps", "lr", "gate_lr", "batch_size", "agg_weight", "consistency_weight", "gate_loss_weight",
        "gate_max_negatives", "long_context_aug", "compat_long_noop", "compat_batch_restart")), ("rome",)),
    # ROME+REP evaluation; the gate threshold is read only here, so a threshold sweep reruns only this
    "eval_rep": Stage(("eval.max_length", "eval.long_id_passages", "rep.gate_threshold"), ("rep",)),
    # analysis figures (REP Figures 3-5); the analysed split is a job value, like every stage's split
    "fig_keys": Stage(("seed", "analysis.n_cases", "analysis.n_random_pairs", "analysis.pca_case"),
                      ("cases", "stats")),
    "fig_unrelated": Stage(("seed", "analysis.n_cases", "analysis.scan"), ("cases", "stats")),
    "fig_values": Stage((), ("rome",)),
    # EREN. The notebook artifact: encoder, index kind and the notebooks' statements (the data files)
    "eren_index": Stage(("eren.encoder", "eren.index", "eren.data")),
    # ES/BP/EQ per dataset and method: the reader, its dtype, k and the seeded subsample of evaluated records
    "eren_eval": Stage(("seed", "eren.reader", "eren.k", "eren.methods", "eren.n_records", "hardware.dtype"),
                       ("eren_index",)),
    # recall@k and latency against notebook size (own notebooks); the reader keys serve reader_queries > 0
    "eren_scaling": Stage(("seed", "eren.encoder", "eren.scaling", "eren.reader", "eren.k", "hardware.dtype")),
    # EREN on the run's robustness cases (Table 1's EREN row); notebook built from the cases' statements
    "eren_suite": Stage(("seed", "eren.encoder", "eren.index", "eren.reader", "eren.k", "eren.suite",
                         "eval.long_id_passages", "hardware.dtype"), ("cases",)),
}


def lookup(cfg: Mapping[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ConfigError(f"config key {dotted!r} is missing (at {part!r})")
        node = node[part]
    return node


def stage_keys(stage: str) -> list[str]:
    """Own keys plus, transitively, the keys of the inputs (sorted, unique)."""
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; known: {sorted(STAGES)}")
    keys = set(STAGES[stage].keys)
    for dep in STAGES[stage].inputs:
        keys |= set(stage_keys(dep))
    return sorted(keys)


def stage_config(cfg: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """The subset of a resolved config (plain dict) that a stage reads."""
    return {k: lookup(cfg, k) for k in stage_keys(stage)}


def stage_hash(cfg: Mapping[str, Any], stage: str) -> str:
    blob = json.dumps(stage_config(cfg, stage), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:HASH_LEN]
