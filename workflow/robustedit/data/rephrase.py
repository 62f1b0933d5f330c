"""Subject rephrases written by a chat model, parsed from its reply and cached on disk.

The REP paper asked GPT-4o-mini "Give 10 rephrases representing the same entity: {ENTITY}" for each
CounterFact subject. Replies are cached per (backend, model, decoding settings, prompt template, n),
one JSON file per key, with the raw reply kept next to the parsed list so parsing can be audited.
An entry, once written, is only replaced on an explicit regenerate=True. Writers (e.g. the cases jobs
of two splits at once) merge under an exclusive lock (fcntl.flock on `<file>.lock`): each re-reads the
file, adds its entries and rewrites it atomically, so no writer's entries are lost; readers need no lock.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ..errors import ConfigError, DataIntegrityError, RecordError, RobustEditError
from ..io import read_json, write_json
from .rephrase_backends import RephraseBackend, RephraseBackendError

PAPER_PROMPT = "Give 10 rephrases representing the same entity: {entity}"
MAX_CHARS = 100  # a rephrase longer than this is commentary, not a name (longest CounterFact subject: 57)
CACHE_FORMAT = 1  # version of the cache file layout

_NUMBERED = re.compile(r"^\s*(?:\(\d{1,2}\)|\d{1,2}[.)\]](?!\d)|\d{1,2}:(?=\s))\s*")  # not "1.5 GHz"
_BULLET = re.compile(r"^\s*[-*•+–—]\s+")
_BOLD_LEAD = re.compile(r"^(\*\*|__)(.+?)\1(.*)$")
_PREAMBLE = re.compile(r"^(here are|here is|here's|sure|certainly|of course|below are|the following|"
                       r"these (are|rephrases|variations|alternatives)|note|i hope|let me know)\b", re.I)
_QUOTES = [('"', '"'), ("'", "'"), ("\u201c", "\u201d"), ("\u2018", "\u2019"), ("`", "`"), ("*", "*"), ("_", "_")]
_ABBREV_END = re.compile(r"(?:^|\s)(?:(?:[A-Za-z]\.)+|Inc\.|Jr\.|Sr\.|Co\.|Ltd\.|Corp\.|St\.|Bros\.|Dr\.|Mr\.|Mrs\.)$")


class MissingRephrasesError(RobustEditError):
    """Rephrases are needed for entities that the cache does not hold and generation is not allowed."""


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def _strip_wrapping(item: str) -> str:
    """Remove surrounding quotes/markdown emphasis and trailing separators, repeatedly."""
    while True:
        before = item
        item = item.strip().rstrip(",;:").strip()
        if item.endswith(".") and not _ABBREV_END.search(item):
            item = item[:-1].rstrip()
        for left, right in _QUOTES:
            if len(item) >= 2 and item.startswith(left) and item.endswith(right):
                item = item[len(left):-len(right)]
        if item.startswith("**") and item.endswith("**") and len(item) > 4:
            item = item[2:-2]
        if item == before:
            return item


def _clean_item(line: str, entity: str) -> str:
    item = _BULLET.sub("", _NUMBERED.sub("", line, count=1), count=1).strip()
    bold = _BOLD_LEAD.match(item)
    if bold and bold.group(3).strip()[:1] in ("-", "\u2013", "\u2014", ":", "(", ""):
        item = bold.group(2)  # "**Name** - why" / "**Name**: why" -> Name
    item = _strip_wrapping(item)
    # "Entity: rephrase" (the model restating the entity as a label) -> rephrase
    if ":" not in entity and ": " in item:
        label, value = item.split(": ", 1)
        if _norm(_strip_wrapping(label)) == _norm(entity):
            item = _strip_wrapping(value)
    return " ".join(item.split())


def parse_rephrases(text: str, entity: str, n: int = 10, max_chars: int = MAX_CHARS,
                    truncated: bool | None = False) -> list[str]:
    """Rephrases in a chat reply: its numbered items if any, else its bullet items, else its non-preamble lines,
    cleaned of markers, emphasis, quotes and trailing punctuation; without the entity itself,
    empty or over-long items; de-duplicated case-insensitively; at most n, in reply order.
    A reply cut by the token limit (truncated=True) loses its last line, which may be half a name."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if truncated:
        lines = lines[:-1]
    numbered = [ln for ln in lines if _NUMBERED.match(ln)]
    bulleted = [ln for ln in lines if _BULLET.match(ln)]
    if numbered:  # a numbered list wins: its "   - note" sub-bullets are commentary, not items
        lines = numbered
    elif bulleted:
        lines = bulleted
    else:
        lines = [ln for ln in lines if not _PREAMBLE.match(ln.strip()) and not ln.rstrip().endswith(":")]
    seen, out = {_norm(entity)}, []
    for line in lines:
        item = _clean_item(line, entity)
        key = _norm(item)
        if not item or len(item) > max_chars or key in seen:
            continue
        seen.add(key)
        out.append(item)
        if len(out) == n:
            break
    return out


def fill_prompt(template: str, entity: str, n: int) -> str:
    """Replace {entity} (required) and {n} (optional); other braces stay as written."""
    if "{entity}" not in template:
        raise ConfigError(f"rephrase prompt template {template!r} has no {{entity}} placeholder")
    return template.replace("{entity}", entity).replace("{n}", str(n))


class RephraseCache:
    """One JSON file per key under `directory`: {"format", "key", "entries": {entity: {...}}}."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    @staticmethod
    def make_key(backend: RephraseBackend, prompt_template: str, n: int) -> dict:
        return {"backend": backend.name, "model": backend.model, "settings": backend.settings,
                "prompt_template": prompt_template, "n": n}

    def path(self, key: dict) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        return self.directory / f"{digest}.json"

    def load(self, key: dict) -> dict[str, dict]:
        """The entries stored under `key` ({} if none), checked for shape."""
        path = self.path(key)
        if not path.exists():
            return {}
        doc = read_json(path)
        if not isinstance(doc, dict) or doc.get("key") != json.loads(json.dumps(key)):
            raise DataIntegrityError(f"{path}: stored key does not match the requested key {key} "
                                     "(hash collision or edited file); move the file away")
        entries = doc.get("entries")
        if not isinstance(entries, dict):
            raise DataIntegrityError(f"{path}: 'entries' must be an object")
        for entity, entry in entries.items():
            ok = (isinstance(entry, dict) and isinstance(entry.get("raw"), str)
                  and isinstance(entry.get("rephrases"), list)
                  and all(isinstance(r, str) for r in entry["rephrases"]))
            if not ok:
                raise DataIntegrityError(f"{path}: entry for {entity!r} needs 'raw' text and a "
                                         "'rephrases' list of strings")
        return entries

    @contextlib.contextmanager
    def locked(self, key: dict) -> Iterator[Path]:
        """Hold the exclusive write lock of `key`'s file (a sidecar `<file>.lock`, never deleted: deleting it
        would let a writer lock a new file while another holds the old one); yield the file's path."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            yield path

    def merge(self, key: dict, entries: dict[str, dict], replace: bool = False) -> dict[str, dict]:
        """Add `entries` to the file of `key` and return all its entries: under the lock, re-read the file,
        merge, write atomically (a crash leaves the previous file intact). An entity already stored (by this
        or another writer) keeps its entry unless replace=True (regenerate)."""
        with self.locked(key) as path:
            merged = self.load(key)
            merged.update({e: v for e, v in entries.items() if replace or e not in merged})
            write_json(path, {"format": CACHE_FORMAT, "key": key, "entries": merged})
        return merged

    def store(self, key: dict, entries: dict[str, dict]) -> Path:
        """Write `entries` (replacing those entities) into the file of `key`, keeping the others; its path."""
        self.merge(key, entries, replace=True)
        return self.path(key)


@dataclass
class RephraseRun:
    rephrases: dict[str, list[str]]  # entity -> rephrases, in the order entities were given
    hits: int  # entities answered from the cache
    misses: int  # entities sent to the backend in this call (including regenerated ones)
    short: dict[str, int] = field(default_factory=dict)  # entity -> count, where fewer than n
    cache_file: Path | None = None


def _unique_entities(entities: Iterable[str]) -> list[str]:
    out = []
    for i, e in enumerate(entities):
        if not isinstance(e, str) or not e.strip():
            raise RecordError(f"entity #{i} is {e!r}: expected a non-empty string")
        out.append(e)
    return list(dict.fromkeys(out))


def generate_rephrases(entities: Iterable[str], backend: RephraseBackend, cache: RephraseCache,
                       prompt_template: str = PAPER_PROMPT, n: int = 10, *, regenerate: bool = False,
                       allow_generate: bool = True,
                       batch_size: int = 8,  # prompts per backend call; the cache is saved after each
                       progress: Callable[[int, int], None] | None = None) -> RephraseRun:
    """Rephrases for each entity: from the cache, or written by `backend` and added to the cache.

    An existing entry is replaced only with regenerate=True. With allow_generate=False a missing
    entry is an error naming the entities. Fewer than n usable rephrases are kept as they are.
    """
    if n < 1 or batch_size < 1:
        raise ConfigError(f"rephrase n={n} and batch_size={batch_size} must be >= 1")
    if regenerate and not allow_generate:
        raise ConfigError("regenerate=True contradicts allow_generate=False")
    fill_prompt(prompt_template, "x", n)  # validate the template before any work
    wanted = _unique_entities(entities)
    key = cache.make_key(backend, prompt_template, n)
    entries = cache.load(key)
    todo = list(wanted) if regenerate else [e for e in wanted if e not in entries]
    if todo and not allow_generate:
        shown = ", ".join(repr(e) for e in todo[:20]) + (" ..." if len(todo) > 20 else "")
        raise MissingRephrasesError(
            f"{len(todo)} of {len(wanted)} entities have no cached rephrases for {backend.name} in "
            f"{cache.path(key)} and generation is not allowed: {shown}")
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        replies = backend.replies([fill_prompt(prompt_template, e, n) for e in batch])
        if len(replies) != len(batch):
            raise RephraseBackendError(f"{backend.name} returned {len(replies)} replies for "
                                       f"{len(batch)} prompts")
        new = {}
        for entity, reply in zip(batch, replies):
            parsed = parse_rephrases(reply.text, entity, n, truncated=reply.truncated)
            new[entity] = {"raw": reply.text, "truncated": reply.truncated, "rephrases": parsed, "count": len(parsed)}
        entries = cache.merge(key, new, replace=regenerate)  # with what other writers stored meanwhile
        if progress is not None:
            progress(start + len(batch), len(todo))
    result = {e: list(entries[e]["rephrases"]) for e in wanted}
    short = {e: len(r) for e, r in result.items() if len(r) < n}
    return RephraseRun(result, hits=len(wanted) - len(todo), misses=len(todo), short=short,
                       cache_file=cache.path(key) if wanted else None)

