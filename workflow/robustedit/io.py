"""Atomic file writing, strict JSON/JSONL reading, stamped resume checkpoints and per-case resume folders.

Every output is written to a hidden temporary file in the same directory (`.<name>.<8 random>.tmp`),
fsynced, renamed into place and the directory fsynced, so an interrupted run never leaves a partial
file under the final name and a finished one survives a power cut. A temporary file left by a killed
writer is removed by `remove_stray_temps` on the next run of its stage. Resume checkpoints carry a
stamp (stage, stage hash, code version) and are verified before use: a mismatch discards them.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import pickle
import re
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import RecordError

LIBRARY = Path(__file__).resolve().parent  # the robustedit package that is running
# tempfile's names: prefix + 8 characters of this alphabet + suffix (atomic_path, Notebook.save)
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")
# packages whose numerics decide a stage's outputs besides our code (part of the code version)
NUMERIC_PACKAGES = ("torch", "transformers")


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


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        module = sys.modules.get(name)
        return str(getattr(module, "__version__", "absent"))


def code_version(*files: str | os.PathLike) -> str:
    """sha256 (first 16 hex) of what decides a stage's numbers besides its config: every *.py source of
    the running robustedit package (its pipeline glue included), the given files (the stage script) and the
    versions of NUMERIC_PACKAGES. The whole package rather than the modules a stage imports: imports
    are transitive and partly lazy, and a superset only costs a needless restart after an unrelated
    edit, never a resume onto pieces computed by other code."""
    h = hashlib.sha256()
    sources = [(p.relative_to(LIBRARY.parent).as_posix(), p) for p in LIBRARY.rglob("*.py")]
    sources += [(f"scripts/{Path(f).name}", Path(f)) for f in files]
    for name, path in sorted(sources):
        data = path.read_bytes()
        h.update(f"{name}\0{len(data)}\0".encode())
        h.update(data)
    for pkg in NUMERIC_PACKAGES:
        h.update(f"{pkg}=={_package_version(pkg)}\0".encode())
    return h.hexdigest()[:16]


def checkpoint_stamp(stage: str, out_dir: str | os.PathLike, files: Iterable[str | os.PathLike]) -> dict:
    """What a resume checkpoint of `stage` in `out_dir` must have been written by: the stage, its hash
    (the output directory's name, robustedit.pipeline.stage stage_dir) and the code version."""
    return {"stage": stage, "stage_hash": Path(out_dir).name, "code_version": code_version(*files)}


def stamp_mismatch(found: Any, expected: dict) -> str | None:
    """None when `found` is the `expected` stamp, else what differs (for the discard message)."""
    if found == expected:
        return None
    if not isinstance(found, dict):
        return "it carries no checkpoint stamp (written by an older version)"
    diffs = [f"{k} {found.get(k)!r} (this run: {v!r})" for k, v in expected.items() if found.get(k) != v]
    return "written with " + (", ".join(diffs) or f"other stamp keys {sorted(found)}")


# What makes a checkpoint file unusable: unreadable, not a torch file, a pickle that the weights_only
# loader refuses (it never runs the pickle's code), or the wrong shape of contents.
UNUSABLE = (RecordError, OSError, RuntimeError, ValueError, KeyError, TypeError, AttributeError, EOFError,
            IndexError, pickle.UnpicklingError)


def unusable_reason(e: BaseException) -> str:
    """A short discard message. A pickle the weights_only loader refused is named by the global it wanted
    (torch's own text suggests retrying with weights_only=False, which is what must never happen)."""
    if isinstance(e, pickle.UnpicklingError):
        wanted = next((ln.strip() for ln in str(e).splitlines() if "GLOBAL" in ln), type(e).__name__)
        return f"refused by the weights_only loader, never unpickled in full ({wanted})"
    return str(e) if isinstance(e, RecordError) else f"unreadable ({type(e).__name__}: {e})"


def discard(path: Path, tag: str, reason: str) -> None:
    """Print why a resume checkpoint (file or folder) is not used, and delete it."""
    print(f"[{tag}] discarding {path}: {reason}", flush=True)
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def load_checkpoint(path: str | os.PathLike, stamp: dict, tag: str, fresh: bool = False) -> dict | None:
    """The dict saved at `path` (save_torch of {..., "stamp": stamp}) if it has this run's stamp, else
    None after discarding it with a message; fresh=True (a forced rerun) discards any checkpoint."""
    import torch

    path = Path(path)
    if not path.exists():
        return None
    if fresh:
        discard(path, tag, "forced rerun (job.fresh=true)")
        return None
    try:
        state = torch.load(path, weights_only=True)
        reason = stamp_mismatch(state.get("stamp"), stamp) if isinstance(state, dict) else "not a dict"
    except UNUSABLE as e:
        reason = unusable_reason(e)
    if reason:
        discard(path, tag, reason)
        return None
    return state


PIECE_DIGITS = 6  # zero-padded first-case index in a piece's name: names sort like indices up to 10⁶ cases


class CasePieces:
    """Resume folder of a loop over cases: one small torch file per finished piece of consecutive cases.

        <folder>/cases.json        {"case_ids": [...], "stamp": {...}}, written when the folder is created
        <folder>/000008.pt         {"first": 8, "case_ids": [...], "stamp": {...}, "records": [...]}, one per piece

    Each case is written once, so a run writes O(N) bytes in all (rewriting one growing file after
    every piece writes O(N²)). Pieces are loaded with weights_only=True (records may hold tensors,
    dicts, lists, str, int, float, bool, None; a pickle of anything else is refused, never run) and
    verified against the current case_ids and `stamp` (stage, stage hash, code version: checkpoint_stamp):
    a folder whose cases.json or any piece disagrees (other cases or stamp, a gap, an unreadable file)
    is discarded with a printed message, never resumed onto.
    """

    def __init__(self, folder: str | os.PathLike, case_ids: Iterable, tag: str, *, stamp: dict):
        self.folder, self.case_ids, self.tag, self.stamp = Path(folder), list(case_ids), tag, dict(stamp)

    def piece_path(self, first: int) -> Path:
        return self.folder / f"{first:0{PIECE_DIGITS}d}.pt"

    def piece_files(self) -> list[Path]:
        """Finished pieces in case order (temporary files of an interrupted write are ignored)."""
        named = [p for p in self.folder.glob("*.pt") if p.stem.isdigit() and len(p.stem) == PIECE_DIGITS]
        return sorted(named)

    def resume(self, fresh: bool = False, mmap: bool = True) -> list:
        """Records to resume after, as load(); fresh=True (a forced rerun) discards the folder first."""
        if fresh and self.folder.exists():
            discard(self.folder, self.tag, "forced rerun (job.fresh=true)")
        remove_stray_temps(self.folder)  # the folder is this job's alone
        return self.load(mmap)

    def load(self, mmap: bool = True) -> list:
        """Records of the finished cases 0..k-1, verified; [] when there is nothing (valid) to resume.
        mmap=True maps the tensors from the files instead of reading them into memory."""
        if not self.folder.exists():
            return []
        try:
            return self._verified_records(mmap)
        except UNUSABLE as e:  # whatever makes the folder unusable: start afresh
            discard(self.folder, self.tag, unusable_reason(e))
            return []

    def _verified_records(self, mmap: bool) -> list:
        import torch

        manifest = read_json(self.folder / "cases.json")
        self._check_stamp(manifest.get("stamp"), "cases.json")
        if manifest.get("case_ids") != self.case_ids:
            raise RecordError("its case_ids do not match the current cases")
        records: list = []
        for path in self.piece_files():
            piece = torch.load(path, mmap=mmap, weights_only=True)
            self._check_stamp(piece.get("stamp"), path.name)
            n = len(piece["records"])
            expected = self.case_ids[len(records): len(records) + n]
            if piece["first"] != len(records) or int(path.stem) != len(records) or n < 1:
                raise RecordError(f"{path.name} starts at case {piece['first']}, expected case {len(records)}")
            if piece["case_ids"] != expected or len(expected) != n:
                raise RecordError(f"{path.name} holds case_ids {piece['case_ids']}, expected {expected}")
            records += piece["records"]
        return records

    def _check_stamp(self, found: Any, where: str) -> None:
        reason = stamp_mismatch(found, self.stamp)
        if reason:
            raise RecordError(f"{where} {reason}")

    def write(self, first: int, case_ids: list, records: list) -> None:
        """Add the piece of cases first..first+len(records)-1 (each case is written once)."""
        if list(case_ids) != self.case_ids[first: first + len(records)] or len(case_ids) != len(records):
            raise ValueError(f"{self.folder}: piece at case {first} has case_ids {list(case_ids)}, "
                             f"expected {self.case_ids[first: first + len(records)]}")
        if not (self.folder / "cases.json").exists():
            write_json(self.folder / "cases.json", {"case_ids": self.case_ids, "stamp": self.stamp})
        save_torch({"first": first, "case_ids": list(case_ids), "stamp": self.stamp, "records": list(records)},
                   self.piece_path(first))

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
