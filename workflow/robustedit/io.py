"""Atomic file writing and strict JSON/JSONL reading (resume checkpoints: robustedit.checkpoints).

Every output is written to a hidden temporary file in the same directory (`.<name>.<8 random>.tmp`),
fsynced, renamed into place and the directory fsynced, so an interrupted run never leaves a partial
file under the final name and a finished one survives a power cut. A temporary file left by a killed
writer is removed by `remove_stray_temps` on the next run of its stage.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import RecordError

# tempfile's names: prefix + 8 characters of this alphabet + suffix (atomic_path, Notebook.save)
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's (or a directory's entries') data to disk. Directories on file systems that
    cannot fsync them (EINVAL, e.g. some network mounts) are skipped: the rename is all they offer."""
    is_dir = os.path.isdir(path)
    fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if is_dir else 0))
    try:
        os.fsync(fd)
    except OSError:
        if not is_dir:
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; on success fsync it, rename it to `path` and fsync the directory;
    on error delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; give the usual file mode
    try:
        yield tmp_path
        fsync_path(tmp_path)
        os.replace(tmp_path, path)
        fsync_path(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def remove_stray_temps(folder: str | os.PathLike, prefix: str = "") -> list[str]:
    """Delete the hidden temporary files (and Notebook.save's temporary folders) that killed writers left
    directly in `folder` for final names starting with `prefix`; return their names. Only call it on
    files no live process is writing: a stage job for the outputs it owns (its split's files)."""
    folder, removed = Path(folder), []
    if not folder.is_dir():
        return removed
    for entry in sorted(folder.iterdir()):
        m = _TEMP_NAME.match(entry.name)
        if not m or not m["name"].startswith(prefix):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry.name)
    return removed


def _check_finite(obj: Any, where: str) -> None:
    """Refuse NaN/inf anywhere in a JSON-bound object (they are not valid JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ValueError(f"non-finite number {obj!r} at {where}")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_finite(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_finite(v, f"{where}[{i}]")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    _check_finite(obj, str(path))
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False, allow_nan=False) + "\n")


def write_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> int:
    """Write records atomically, one JSON object per line; return the count."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        for rec in records:
            _check_finite(rec, f"{path}:record {n}")
            fh.write(json.dumps(rec, ensure_ascii=False, allow_nan=False) + "\n")
            n += 1
    return n


def read_json(path: str | os.PathLike) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise RecordError(f"{path}: not valid JSON ({e})") from e


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    out = []
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise RecordError(f"{path}:{lineno}: not valid JSON ({e})") from e
            if not isinstance(rec, dict):
                raise RecordError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
            out.append(rec)
    return out


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """torch.save atomically (temporary file, then rename). Saved through a file handle, so the archive's
    inner folder is torch's fixed "archive" rather than the random temporary name: equal objects give
    byte-identical files."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)
