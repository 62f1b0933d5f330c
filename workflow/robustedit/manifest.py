"""Vendored data files, checked against MANIFEST.json (sha256) before use."""
from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Iterable, Iterator

from .errors import ConfigError, DataIntegrityError

# (stage, the files it may open) while a stage runs (see `only_files`); None outside stages
_ONLY_FILES: ContextVar[tuple[str, frozenset[str]] | None] = ContextVar("robustedit_only_files", default=None)


@contextmanager
def only_files(stage: str, rels: Iterable[str]) -> Iterator[None]:
    """Within the block DataStore.path opens only `rels`: the data files whose sha256 the stage's
    directory hash covers (scripts/common.py run_stage), so no stage reads a file its hash misses."""
    token = _ONLY_FILES.set((stage, frozenset(rels)))
    try:
        yield
    finally:
        _ONLY_FILES.reset(token)


def sha256_file(path: str | Path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


class DataStore:
    """A folder of vendored files plus its MANIFEST.json: `store.path("rep/valid...json")`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        manifest = self.root / "MANIFEST.json"
        if not manifest.is_file():
            raise DataIntegrityError(f"{manifest} is missing; the data folder is incomplete")
        self.manifest: dict[str, dict] = json.loads(manifest.read_text())
        self._verified: set[str] = set()

    def path(self, rel: str) -> Path:
        """Return the absolute path of `rel` after checking its sha256 (once per process)."""
        if rel not in self.manifest:
            raise DataIntegrityError(f"{rel!r} is not listed in {self.root / 'MANIFEST.json'}")
        only = _ONLY_FILES.get()
        if only is not None and rel not in only[1]:
            raise ConfigError(f"stage {only[0]!r} opened data file {rel!r}, which its directory hash does not "
                              f"cover: name it under the stage's data_files in workflow/robustedit/stages.py")
        full = self.root / rel
        if rel not in self._verified:
            if not full.is_file():
                raise DataIntegrityError(f"{full} is missing (listed in the manifest)")
            got = sha256_file(full)
            want = self.manifest[rel]["sha256"]
            if got != want:
                raise DataIntegrityError(
                    f"{full}: sha256 {got[:16]}… does not match the manifest's {want[:16]}…; "
                    "the file is corrupted or was edited: restore it with `git checkout -- resources/data`"
                )
            self._verified.add(rel)
        return full
