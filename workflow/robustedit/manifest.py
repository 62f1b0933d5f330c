"""Vendored data files, checked against MANIFEST.json (sha256) before use."""
from __future__ import annotations

import functools
import hashlib
import json
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from .errors import ConfigError, DataIntegrityError

# (stage, the files it may open, the user files among them -> their hashed sha256) while a stage runs
# (see `only_files`); None outside stages
_ONLY_FILES: ContextVar[tuple[str, frozenset[str], dict[str, str]] | None] = ContextVar("robustedit_only_files",
                                                                                       default=None)


@contextmanager
def only_files(stage: str, rels: Iterable[str], user: Mapping[str, str] | None = None) -> Iterator[None]:
    """Within the block DataStore.path opens only `rels`: the data files whose sha256 the stage's
    directory hash covers (robustedit.pipeline.stage run_stage), so no stage reads a file its hash misses.
    `user`: the user files among them (outside paths.data, named by path) -> the sha256 their directory
    hash was computed from; opening one checks that its content is still that."""
    token = _ONLY_FILES.set((stage, frozenset(rels), dict(user or {})))
    try:
        yield
    finally:
        _ONLY_FILES.reset(token)


def user_path(root: str | Path, name: str) -> Path | None:
    """The user data file a config value names, if it is one: a path (absolute, or relative to the working
    directory, which is the repository root for Snakemake and the stage scripts) to an existing file outside
    the data folder `root`. None when `name` does not name such a file. A file inside `root` must be listed in
    its MANIFEST.json instead (the caller says so)."""
    path = Path(name).expanduser()
    path = path if path.is_absolute() else Path.cwd() / path
    if not path.is_file():
        return None
    path = path.resolve()
    inside = Path(root).resolve()
    return None if path == inside or inside in path.parents else path


@functools.lru_cache(maxsize=256)
def _sha256_cached(path: str, mtime_ns: int, size: int) -> str:
    return sha256_file(path)


def sha256_user_file(path: Path) -> str:
    """sha256 of a user data file, computed once per content version (path, mtime, size) per process."""
    st = path.stat()
    return _sha256_cached(str(path), st.st_mtime_ns, st.st_size)


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
        """Return the absolute path of `rel` after checking its sha256 (once per process). `rel` may also name
        a user file outside the folder (see `user_path`; stages.USER_FILE_KEYS says which config keys may):
        inside a stage its content must still be the one its directory hash covers."""
        only = _ONLY_FILES.get()
        if rel not in self.manifest:
            user = user_path(self.root, rel)
            if user is None:
                raise DataIntegrityError(f"{rel!r} is not listed in {self.root / 'MANIFEST.json'} (nor a file "
                                         f"outside {self.root})")
            if only is not None:
                if rel not in only[2]:
                    raise ConfigError(f"stage {only[0]!r} opened data file {rel!r}, which its directory hash does "
                                      f"not cover")
                got = sha256_user_file(user)
                if got != only[2][rel]:
                    raise DataIntegrityError(f"{user}: changed while the stage ran (sha256 {got[:16]}…, its "
                                             f"directory was named for {only[2][rel][:16]}…); rerun the stage")
            return user
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
