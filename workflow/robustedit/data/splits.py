"""What a data.split_files entry names: a file of REP-CounterFact records joined to the pool, null (the pool
itself), or {file, kind} with kind `counterfact` (the same as a bare file) or `zsre` (standalone records,
robustedit.data.zsre)."""
from __future__ import annotations

from typing import Any

from ..errors import ConfigError, RecordError

SPLIT_KINDS = ("counterfact", "zsre")
DEFAULT_KIND = "counterfact"  # a bare file: REP's CounterFact split records, joined to the pool by case_id


def split_source(entry: Any, split: str) -> tuple[str | None, str]:
    """(file or None for the pool, kind) of data.split_files.<split>; a malformed entry is a ConfigError."""
    if entry is None or isinstance(entry, str):
        return entry, DEFAULT_KIND
    if isinstance(entry, dict) and isinstance(entry.get("file"), str) and set(entry) <= {"file", "kind"}:
        kind = entry.get("kind", DEFAULT_KIND)
        if kind not in SPLIT_KINDS:
            raise ConfigError(f"data.split_files.{split}.kind={kind!r} is not one of {list(SPLIT_KINDS)}")
        return entry["file"], kind
    raise ConfigError(f"data.split_files.{split} must be a file, null (the pool) or {{file, kind}}; got {entry!r}")


def check_unique_ids(cases: list[dict], source: str) -> None:
    """A case_id names one case (its edit, adaptor, seeds and per-case results): a repeat is a RecordError."""
    seen: set[int] = set()
    for i, case in enumerate(cases):
        if case["case_id"] in seen:
            raise RecordError(f"{source} record {i} (case_id {case['case_id']}): case_id repeats an earlier record's")
        seen.add(case["case_id"])
