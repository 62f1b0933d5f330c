"""CSV rows in and out: the tables behind the figures (written atomically)."""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Iterable, Sequence

from ..io import atomic_path


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"  # six significant digits: more than any figure shows
    return str(v)


def write_csv(path: str | os.PathLike, rows: Iterable[dict], columns: Sequence[str]) -> int:
    """Write `rows` (only `columns`, in that order) atomically; return the row count."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    n = 0
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
        n += 1
    with atomic_path(path) as tmp:
        Path(tmp).write_text(buf.getvalue())
    return n


def read_csv(path: str | os.PathLike) -> list[dict]:
    """Rows as dicts of strings (see `floats` for numeric columns)."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def floats(rows: Sequence[dict], column: str) -> list[float]:
    return [float(r[column]) for r in rows if r.get(column) not in (None, "")]


def concat(paths: Sequence[str | os.PathLike], extra: Sequence[dict] | None = None) -> list[dict]:
    """Rows of several CSVs; `extra[i]` (e.g. {"run": ...}) is added to every row of paths[i]."""
    out = []
    for i, p in enumerate(paths):
        add = extra[i] if extra else {}
        out += [{**add, **r} for r in read_csv(p)]
    return out
