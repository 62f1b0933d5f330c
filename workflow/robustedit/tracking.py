"""Weights & Biases logging behind one small interface, offline by default.

    tracker = start_run(cfg, name="smollm2-135m")         # cfg: a composed config (has a `tracking` group)
    tracker.log_metrics({"table1/ROME/success": 99.0})
    tracker.log_table("tables/table1", rows)              # rows: dicts, e.g. from csv.DictReader
    tracker.log_image("figures/key_similarity", "results/figures/key_similarity.png")
    tracker.finish()

tracking.mode: `offline` (default) writes the run under <tracking.dir>/wandb/offline-run-*/ with no
account and no network (`wandb sync <run dir>` uploads it later); `online` logs live (needs
`wandb login`); `disabled` logs nothing (every call is a no-op). wandb is imported only when a run
starts, and console capture and system sampling are off so a run records only what is logged.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from .errors import ConfigError

MODES = ("offline", "online", "disabled")


def run_config(cfg: Mapping[str, Any]) -> dict:
    """The composed config as logged: everything but the per-job values (`job`)."""
    return {k: v for k, v in cfg.items() if k != "job"}


class Tracker:
    """One wandb run (or nothing, when disabled)."""

    def __init__(self, run=None, mode: str = "disabled"):
        self._run = run
        self.mode = mode

    @property
    def enabled(self) -> bool:
        return self._run is not None

    @property
    def run_dir(self) -> Path | None:
        """The run's folder (holding files/, logs/ and run-<id>.wandb); None when disabled."""
        return Path(self._run.dir).parent if self._run is not None else None

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        if self._run is not None and metrics:
            self._run.log({k: float(v) for k, v in metrics.items()})

    def log_table(self, key: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> None:
        """A wandb.Table of `rows` (columns: the given ones, else the first row's keys)."""
        if self._run is None:
            return
        import wandb

        cols = list(columns) if columns is not None else (list(rows[0]) if rows else [])
        self._run.log({key: wandb.Table(columns=cols, data=[[r.get(c) for c in cols] for r in rows])})

    def log_image(self, key: str, path: str | os.PathLike, caption: str | None = None) -> None:
        if self._run is None:
            return
        import wandb

        self._run.log({key: wandb.Image(str(path), caption=caption)})

    def finish(self) -> None:
        if self._run is not None:
            self._run.finish()

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc) -> None:
        self.finish()


def start_run(cfg: Mapping[str, Any], *, name: str | None = None, group: str | None = None,
              job_type: str | None = None) -> Tracker:
    """Start a run configured by cfg["tracking"] with the composed config as its wandb config."""
    tr = cfg["tracking"]
    if tr["mode"] not in MODES:
        raise ConfigError(f"tracking.mode={tr['mode']!r}; use one of {MODES}")
    if tr["mode"] == "disabled":
        return Tracker(None)
    import wandb

    Path(tr["dir"]).mkdir(parents=True, exist_ok=True)
    settings = wandb.Settings(console="off", x_disable_stats=True, disable_git=True, save_code=False, silent=True)
    tags = [t for t in [cfg.get("model", {}).get("name"), *tr.get("tags", [])] if t]
    run = wandb.init(mode=tr["mode"], project=tr["project"], entity=tr.get("entity"), dir=str(tr["dir"]),
                     config=run_config(cfg), name=name, group=group, job_type=job_type, tags=tags, settings=settings)
    return Tracker(run, tr["mode"])
