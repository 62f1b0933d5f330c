"""The view of the config a stage's code is given: the config pruned to the subtrees its directory hash covers
(robustedit.stages), where reading any other key raises StageReadError naming the key and the stage."""
from __future__ import annotations

from typing import Any, Mapping

from .errors import ConfigError
from .stages import ALWAYS_READABLE, is_under, stage_reads


class StageReadError(ConfigError):
    """A stage's code read a config key that its directory hash does not cover."""


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
            f"the stage's reads in workflow/robustedit/stages.py (or to NOT_HASHED in robustedit/unhashed.py, saying "
            f"why it cannot change a result)")

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
        inside = is_under(full, visible)
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
