"""Atomic file writing and strict JSON/JSONL reading.

Every output is written to a temporary file in the same directory and renamed into place,
so an interrupted run never leaves a partial file under the final name.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import RecordError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path; on success rename it to `path`, on error delete it."""
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
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


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
