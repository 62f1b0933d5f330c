"""Atomic file writing, strict JSON/JSONL reading, and per-case resume folders (CasePieces).

Every output is written to a temporary file in the same directory and renamed into place,
so an interrupted run never leaves a partial file under the final name.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import shutil
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


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """torch.save atomically (temporary file, then rename). Saved through a file handle, so the archive's
    inner folder is torch's fixed "archive" rather than the random temporary name: equal objects give
    byte-identical files."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)


PIECE_DIGITS = 6  # zero-padded first-case index in a piece's name: names sort like indices up to 10⁶ cases


class CasePieces:
    """Resume folder of a loop over cases: one small torch file per finished piece of consecutive cases.

        <folder>/cases.json        {"case_ids": [...]} of the whole run, written when the folder is created
        <folder>/000008.pt         {"first": 8, "case_ids": [...], "records": [...]}, one per piece

    Each case is written once, so a run writes O(N) bytes in all (rewriting one growing file after
    every piece writes O(N²)). Pieces are loaded with weights_only=True (records may hold tensors,
    dicts, lists, str, int, float, bool, None) and verified against the current case_ids: a folder
    whose cases.json or any piece disagrees (other cases, a gap, an unreadable file) is discarded
    with a printed message, never resumed onto.
    """

    def __init__(self, folder: str | os.PathLike, case_ids: Iterable, tag: str):
        self.folder, self.case_ids, self.tag = Path(folder), list(case_ids), tag

    def piece_path(self, first: int) -> Path:
        return self.folder / f"{first:0{PIECE_DIGITS}d}.pt"

    def piece_files(self) -> list[Path]:
        """Finished pieces in case order (temporary files of an interrupted write are ignored)."""
        named = [p for p in self.folder.glob("*.pt") if p.stem.isdigit() and len(p.stem) == PIECE_DIGITS]
        return sorted(named)

    def load(self, mmap: bool = True) -> list:
        """Records of the finished cases 0..k-1, verified; [] when there is nothing (valid) to resume.
        mmap=True maps the tensors from the files instead of reading them into memory."""
        if not self.folder.exists():
            return []
        try:
            records = self._verified_records(mmap)
        except (RecordError, OSError, RuntimeError, ValueError, KeyError, TypeError, AttributeError, EOFError,
                pickle.UnpicklingError) as e:  # whatever makes the folder unusable: start afresh
            print(f"[{self.tag}] discarding {self.folder}: {e}", flush=True)
            self.remove()
            return []
        return records

    def _verified_records(self, mmap: bool) -> list:
        import torch

        manifest = read_json(self.folder / "cases.json")
        if manifest.get("case_ids") != self.case_ids:
            raise RecordError("its case_ids do not match the current cases")
        records: list = []
        for path in self.piece_files():
            piece = torch.load(path, mmap=mmap, weights_only=True)
            n = len(piece["records"])
            expected = self.case_ids[len(records): len(records) + n]
            if piece["first"] != len(records) or int(path.stem) != len(records) or n < 1:
                raise RecordError(f"{path.name} starts at case {piece['first']}, expected case {len(records)}")
            if piece["case_ids"] != expected or len(expected) != n:
                raise RecordError(f"{path.name} holds case_ids {piece['case_ids']}, expected {expected}")
            records += piece["records"]
        return records

    def write(self, first: int, case_ids: list, records: list) -> None:
        """Add the piece of cases first..first+len(records)-1 (each case is written once)."""
        if list(case_ids) != self.case_ids[first: first + len(records)] or len(case_ids) != len(records):
            raise ValueError(f"{self.folder}: piece at case {first} has case_ids {list(case_ids)}, "
                             f"expected {self.case_ids[first: first + len(records)]}")
        if not (self.folder / "cases.json").exists():
            write_json(self.folder / "cases.json", {"case_ids": self.case_ids})
        save_torch({"first": first, "case_ids": list(case_ids), "records": list(records)}, self.piece_path(first))

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
