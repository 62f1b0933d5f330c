"""Stamped resume checkpoints and per-case resume folders (built on robustedit.io's atomic writers).

A resume checkpoint carries a stamp (stage, stage hash, code version: checkpoint_stamp) and is verified
before use: a mismatch, or a file the weights_only loader refuses, discards it with a printed message.
CasePieces keeps a loop over cases resumable, one small torch file per finished piece of cases.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from .errors import RecordError
from .io import read_json, remove_stray_temps, save_torch, write_json

LIBRARY = Path(__file__).resolve().parent  # the robustedit package that is running
# packages whose numerics decide a stage's outputs besides our code (part of the code version)
NUMERIC_PACKAGES = ("torch", "transformers")


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
