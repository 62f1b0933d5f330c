"""Vendored data files, checked against MANIFEST.json (sha256) before use."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .errors import DataIntegrityError


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
