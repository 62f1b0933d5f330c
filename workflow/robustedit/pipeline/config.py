"""Compose + validate the Hydra config (conf/ of the repository this package lives in).

Used by the Snakefile (to plan outputs) and by every stage script (a Hydra app), so both agree on
the configuration a run has.
"""
from __future__ import annotations

import itertools
import json

from robustedit.errors import ConfigError
from robustedit.pipeline.paths import CONF, REPO, conf_dir  # noqa: F401  (re-exported)

# Keys naming the splits that gathering targets read (Table 1 and EREN's suite row, the gate-threshold
# ablation, REP's setting search, the analysis figures): each must also be built (in data.splits) by its run
GATHERED_SPLIT_KEYS = ("eval.report_split", "rep.sweep_splits", "rep.search.split", "analysis.split",
                       "eval.sequential.split")
# Keys naming splits: each must be a key of data.split_files
SPLIT_NAME_KEYS = ("data.splits", "eval.splits", "eval.generation.skip_splits", *GATHERED_SPLIT_KEYS)


def validate(cfg: dict, edit_model: bool = True) -> dict:
    """Check the composed config against conf/schema.json; errors name the offending key.

    `model` is the edit model, so a reader-only (seq2seq) model there is an error, unless
    edit_model=False (scripts/prepare_model.py, which also prepares the eren.reader models)."""
    import jsonschema

    schema = json.loads((conf_dir() / "schema.json").read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(cfg), key=lambda e: list(e.path))
    if errors:
        lines = [line for e in errors[:10] for line in schema_error_lines(e)]
        raise ConfigError("invalid configuration:\n" + "\n".join(lines))
    from robustedit.eren.reader import SEQ2SEQ_FAMILIES
    from robustedit.models.arch import Architecture
    from robustedit.pipeline.eren import reader_model_cfg

    model = cfg["model"]
    if model["family"] not in SEQ2SEQ_FAMILIES:
        Architecture.from_config(model).check_layer(model["layer"])  # unknown layer -> named error
    elif edit_model:
        raise ConfigError(f"model={model['name']}: model.family={model['family']!r} is a seq2seq reader, not an "
                          f"edit model (use it as eren.reader={model['name']})")
    reader_model_cfg(cfg)  # eren.reader names a usable reader config
    check_split_names(cfg)
    return cfg


def split_names(cfg: dict, key: str) -> list[str]:
    """The split(s) a SPLIT_NAME_KEYS key names, as a list (e.g. "rep.search.split" -> ["valid"])."""
    value = cfg
    for part in key.split("."):
        value = value[part]
    return list(value) if isinstance(value, list) else [value]


def check_split_names(cfg: dict) -> None:
    """Every split a key names (data.splits, eval.report_split, ...) is a key of data.split_files: a split is
    any name given a file there (`+data.split_files.mine=path`). Errors name the key."""
    known = sorted(cfg["data"]["split_files"])
    bad, named = [], set()
    for key in SPLIT_NAME_KEYS:
        for split in split_names(cfg, key):
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
        with initialize_config_dir(config_dir=str(conf_dir()), version_base=None):
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as e:
        raise ConfigError(f"cannot compose config with overrides {list(overrides)}: {e}") from e
    return validate(to_plain(cfg))


def search_points(grid: dict) -> list[list[str]]:
    """Hydra overrides of every setting of REP's search grid (rep.search.grid: {"train": {"lr": [5e-4, 5e-3]},
    ...}), one list per combination, keys ("train.lr") in sorted order, the last key varying fastest."""
    axes = {f"{group}.{key}": values for group, sub in grid.items() for key, values in (sub or {}).items()}
    keys = sorted(axes)
    for key in keys:
        if not isinstance(axes[key], list) or not axes[key]:
            raise ConfigError(f"rep.search.grid.{key} must be a non-empty list of values")
    return [[f"rep.{k}={_literal(v)}" for k, v in zip(keys, values)]
            for values in itertools.product(*(axes[k] for k in keys))]


def _literal(value) -> str:
    """A grid value as a Hydra override literal."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)
