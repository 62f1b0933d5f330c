"""What a data.split_files entry names: a file of REP-CounterFact records joined to the pool, null (the pool
itself), or {file, kind, filter, max_cases}: kind `counterfact` (the same as a bare file) or `zsre` (standalone
records, robustedit.data.zsre); filter and max_cases, when given, replace data.filter.enabled and data.max_cases
for this split only (so setting them moves no other split's directories)."""
from __future__ import annotations

from typing import Any, NamedTuple

from ..errors import ConfigError, RecordError

SPLIT_KINDS = ("counterfact", "zsre")
DEFAULT_KIND = "counterfact"  # a bare file: REP's CounterFact split records, joined to the pool by case_id
ENTRY_FIELDS = {"file", "kind", "filter", "max_cases"}


class SplitSource(NamedTuple):
    file: str | None  # None: the CounterFact pool itself
    kind: str
    filter: bool | None  # None: data.filter.enabled decides
    max_cases: int | None  # None: data.max_cases decides


def split_source(entry: Any, split: str) -> SplitSource:
    """The source of data.split_files.<split>; a malformed entry is a ConfigError naming the key."""
    if entry is None or isinstance(entry, str):
        return SplitSource(entry, DEFAULT_KIND, None, None)
    if isinstance(entry, dict) and isinstance(entry.get("file"), str) and set(entry) <= ENTRY_FIELDS:
        kind, keep_known = entry.get("kind", DEFAULT_KIND), entry.get("filter")
        if kind not in SPLIT_KINDS:
            raise ConfigError(f"data.split_files.{split}.kind={kind!r} is not one of {list(SPLIT_KINDS)}")
        if keep_known is not None and not isinstance(keep_known, bool):
            raise ConfigError(f"data.split_files.{split}.filter={keep_known!r} must be true, false or null")
        limit = entry.get("max_cases")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ConfigError(f"data.split_files.{split}.max_cases={limit!r} must be a positive integer or null")
        return SplitSource(entry["file"], kind, keep_known, limit)
    raise ConfigError(f"data.split_files.{split} must be a file, null (the pool) or {{file, kind, filter, "
                      f"max_cases}}; got {entry!r}")


def check_unique_ids(cases: list[dict], source: str) -> None:
    """A case_id names one case (its edit, adaptor, seeds and per-case results): a repeat is a RecordError."""
    seen: set[int] = set()
    for i, case in enumerate(cases):
        if case["case_id"] in seen:
            raise RecordError(f"{source} record {i} (case_id {case['case_id']}): case_id repeats an earlier record's")
        seen.add(case["case_id"])
