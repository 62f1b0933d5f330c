"""Glue between Hydra, Snakemake and the library: compose + validate the config, name stage dirs.

Used by the Snakefile (to plan outputs) and by every stage script (a Hydra app), so both agree on
where a configuration's results live.
"""
from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
sys.path.insert(0, str(REPO / "workflow"))  # so a plain checkout works even before `pip install -e .`

from robustedit.errors import ConfigError  # noqa: E402
from robustedit.stages import data_files, stage_config, stage_hash, stage_view, user_files  # noqa: E402

# Keys naming splits (besides data.splits): each must be a key of data.split_files
SPLIT_NAME_KEYS = ("data.splits", "eval.report_split", "eval.splits", "rep.sweep_splits", "analysis.split")


def validate(cfg: dict, edit_model: bool = True) -> dict:
    """Check the composed config against conf/schema.json; errors name the offending key.

    `model` is the edit model, so a reader-only (seq2seq) model there is an error, unless
    edit_model=False (scripts/prepare_model.py, which also prepares the eren.reader models)."""
    import jsonschema

    schema = json.loads((CONF / "schema.json").read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(cfg), key=lambda e: list(e.path))
    if errors:
        lines = [line for e in errors[:10] for line in schema_error_lines(e)]
        raise ConfigError("invalid configuration:\n" + "\n".join(lines))
    from eren_common import reader_model_cfg
    from robustedit.eren.reader import SEQ2SEQ_FAMILIES
    from robustedit.models.arch import Architecture

    model = cfg["model"]
    if model["family"] not in SEQ2SEQ_FAMILIES:
        Architecture.from_config(model).check_layer(model["layer"])  # unknown layer -> named error
    elif edit_model:
        raise ConfigError(f"model={model['name']}: model.family={model['family']!r} is a seq2seq reader, not an "
                          f"edit model (use it as eren.reader={model['name']})")
    reader_model_cfg(cfg)  # eren.reader names a usable reader config
    check_split_names(cfg)
    return cfg


def check_split_names(cfg: dict) -> None:
    """Every split a key names (data.splits, eval.report_split, ...) is a key of data.split_files: a split is
    any name given a file there (`+data.split_files.mine=path`). Errors name the key."""
    known = sorted(cfg["data"]["split_files"])
    bad, named = [], set()
    for key in SPLIT_NAME_KEYS:
        group, name = key.split(".")
        value = cfg[group][name]
        for split in value if isinstance(value, list) else [value]:
            if split not in known and split not in named:  # once (eval.splits is ${data.splits})
                named.add(split)
                bad.append(f"  {key}: split {split!r} is not in data.split_files (has: {', '.join(known)}); give "
                           f"it a file with +data.split_files.{split}=<file>")
    if bad:
        raise ConfigError("invalid configuration:\n" + "\n".join(bad))


def schema_error_lines(error) -> list[str]:
    """One line per problem, naming the dotted key; an unknown key (a closed group's additionalProperties)
    is named in full with the keys its group has, e.g. `data.max_case: unknown key (data has: ...)`."""
    where = ".".join(map(str, error.path))
    known = error.schema.get("properties") if error.validator == "additionalProperties" else None
    if known is None or not isinstance(error.instance, dict):
        return [f"  {where or '<root>'}: {error.message}"]
    group = where or "the config root"
    return [f"  {where + '.' if where else ''}{key}: unknown key ({group} has: {', '.join(sorted(known))})"
            for key in sorted(set(error.instance) - set(known))]


def to_plain(cfg) -> dict:
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    return plain


def compose(overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Compose conf/config.yaml with Hydra overrides (e.g. ["model=gemma3-270m"]) into a plain dict."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=str(CONF), version_base=None):
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(f"cannot compose config with overrides {list(overrides)}: {e}") from e
    return validate(to_plain(cfg))


def stage_dir(cfg: dict, stage: str, split: str | None = None) -> Path:
    """results/<model>/<stage>/<hash>/; a per-split stage (robustedit.stages.per_split) needs `split`, or
    takes the config's job.split."""
    return Path(cfg["paths"]["results"]) / cfg["model"]["name"] / stage / stage_hash(cfg, stage, split)


def with_split(cfg: dict, split: str | None) -> dict:
    """The config as a job of `split` sees it (job.split set; a shallow copy), or cfg itself for None."""
    return cfg if split is None else {**cfg, "job": {**cfg["job"], "split": split}}


def model_dir(cfg: dict) -> Path:
    return Path(cfg["paths"]["models"]) / cfg["model"]["name"]


def write_stage_config(cfg: dict, stage: str, out_dir: Path, read: set[str]) -> None:
    """Save what named this directory beside the outputs: the hashed config keys, the sha256 of the data
    files, and which keys the stage's code read (`read`, from its StageView); plus, not hashed, where the
    user data files were read from (`user_files`: key -> absolute path)."""
    from robustedit.io import write_json

    named = stage_config(cfg, stage)
    users = {k: str(v) for k, v in user_files(cfg, stage).items()}
    write_json(out_dir / "stage_config.json", {"stage": stage, "hash": stage_hash(cfg, stage), **named,
                                               "read": sorted(read), **({"user_files": users} if users else {})})


def data_file_guard(cfg: dict, stage: str):
    """A context in which only the data files the stage's hash covers can be opened (a user file only with
    the content that was hashed)."""
    from robustedit.manifest import only_files

    named = stage_config(cfg, stage)["data"]  # a user file must still hold this content when opened
    users = {data_files(cfg, stage)[k]: named[k] for k in user_files(cfg, stage)}
    return only_files(stage, data_files(cfg, stage).values(), users)


def run_stage(stage: str, fn: Callable[[dict, Path], None], cfg: dict) -> Path:
    """Run a stage function on a validated config: `fn` gets the stage's view (robustedit.stages.stage_view:
    reading a key its hash does not cover raises) and may open only the data files its hash covers."""
    import torch

    threads = cfg["hardware"]["threads"]
    if threads:
        torch.set_num_threads(threads)
    out_dir = stage_dir(cfg, stage)
    out_dir.mkdir(parents=True, exist_ok=True)
    start, read = time.time(), set()
    with data_file_guard(cfg, stage):
        fn(stage_view(cfg, stage, read), out_dir)
    write_stage_config(cfg, stage, out_dir, read)
    print(f"[{stage}] done in {time.time() - start:.1f} s -> {out_dir}", flush=True)
    return out_dir


def stage_app(stage: str) -> Callable:
    """Decorator turning `fn(cfg: dict, out_dir: Path)` into a Hydra app for `stage` (see run_stage)."""

    def wrap(fn: Callable[[dict, Path], None]) -> Callable[[], None]:
        import hydra

        @hydra.main(config_path=str(CONF), config_name="config", version_base=None)
        @functools.wraps(fn)
        def main(raw_cfg) -> None:
            run_stage(stage, fn, validate(to_plain(raw_cfg)))

        main.stage, main.stage_fn = stage, fn  # for callers that run the function on a composed config
        return main

    return wrap
