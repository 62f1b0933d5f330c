"""Stage directories and the stage runner: name a configuration's results, run a stage function on the
view of the config its hash covers, and turn it into a Hydra app (every scripts/<stage>.py)."""
from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Callable

from robustedit.pipeline.config import to_plain, validate
from robustedit.pipeline.paths import conf_dir
from robustedit.hashing import data_files, stage_config, stage_hash, user_files
from robustedit.stages import file_name, split_of
from robustedit.stage_view import stage_view


def stage_dir(cfg: dict, stage: str, split: str | None = None) -> Path:
    """results/<model>/<stage>/<hash>/; a per-split stage (robustedit.stages.per_split) needs `split`, or
    takes the config's job.split."""
    return Path(cfg["paths"]["results"]) / cfg["model"]["name"] / stage / stage_hash(cfg, stage, split)


def stage_file(cfg: dict, stage: str, key: str, split: str | None = None, **values: str) -> Path:
    """The `key` file (robustedit.stages.Stage.files) of `stage`'s directory for this config: of `split`, or the
    config's job.split, for a per-split stage; other placeholders from `values` (e.g. eren_dataset=...)."""
    split = split_of(cfg, stage, split)
    return stage_dir(cfg, stage, split) / file_name(stage, key, **({"split": split} if split else {}), **values)


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
    """Run a stage function on a validated config: `fn` gets the stage's view (robustedit.stage_view.stage_view:
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

        @hydra.main(config_path=str(conf_dir()), config_name="config", version_base=None)
        @functools.wraps(fn)
        def main(raw_cfg) -> None:
            run_stage(stage, fn, validate(to_plain(raw_cfg)))

        main.stage, main.stage_fn = stage, fn  # for callers that run the function on a composed config
        return main

    return wrap
