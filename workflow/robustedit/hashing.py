"""What names a stage's directory: the stage's hashed config leaves (robustedit.stages.hashed_keys) and the
sha256 of every data file it reads (from paths.data/MANIFEST.json, or computed for a user's own file), hashed
into a short name."""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError
from .manifest import sha256_user_file, user_path
from .stages import (STAGES, USER_FILE_KEYS, hashed_keys, is_under, leaves, lookup, names_file, other_split,
                     split_of, stage_closure)

HASH_LEN = 10  # hex characters of a stage directory's name; collisions among a user's runs are negligible


@functools.lru_cache(maxsize=32)
def _manifest(path: str, mtime_ns: int) -> dict:
    return json.loads(Path(path).read_text())


def manifest_of(data_root: str) -> dict:
    path = Path(data_root) / "MANIFEST.json"
    if not path.is_file():
        raise ConfigError(f"paths.data={data_root!r}: {path} is missing, so the data files cannot be hashed")
    return _manifest(str(path.resolve()), path.stat().st_mtime_ns)


def data_files(cfg: Mapping[str, Any], stage: str, split: str | None = None) -> dict[str, str]:
    """Dotted key (list items get [i]) -> the file it names (under paths.data, or a user file: USER_FILE_KEYS),
    for the stage and its inputs; of data.split_files only the split's own."""
    split = split_of(cfg, stage, split)
    out: dict[str, str] = {}
    for prefix in sorted({d for s in stage_closure(stage) for d in STAGES[s].data_files}):
        for key, value in leaves(lookup(cfg, prefix), prefix).items():
            if other_split(key, split):
                continue
            if is_under(key, USER_FILE_KEYS) and not names_file(key):  # {file, kind, ...}: settings, not files
                continue
            names = value if isinstance(value, list) else [value]
            out.update({(f"{key}[{i}]" if isinstance(value, list) else key): n
                        for i, n in enumerate(names) if n is not None})
    return out


def user_files(cfg: Mapping[str, Any], stage: str, split: str | None = None) -> dict[str, Path]:
    """Dotted key -> resolved path of each user data file (named by path outside paths.data) the stage reads."""
    root = lookup(cfg, "paths.data")
    manifest = manifest_of(root)
    out = {}
    for key, rel in data_files(cfg, stage, split).items():
        if rel in manifest:
            continue
        path = user_path(root, rel) if is_under(key, USER_FILE_KEYS) else None
        if path is None:
            own = is_under(key, USER_FILE_KEYS)
            inside = (Path(root) / rel).is_file() or (Path(rel).expanduser().is_file() and own)
            hint = ("" if not (inside or own) else
                    ": a file inside paths.data must be listed there with its sha256 and size" +
                    (f" (or keep your own file outside {root} and name it by path)" if own else "") if inside else
                    ", nor an existing file outside paths.data (a path, absolute or relative to the working "
                    "directory)")
            raise ConfigError(f"{key}={rel!r} is not listed in {Path(root) / 'MANIFEST.json'}{hint}")
        out[key] = path
    return out


def data_digests(cfg: Mapping[str, Any], stage: str, split: str | None = None,
                 users: dict[str, Path] | None = None) -> dict[str, str]:
    """Dotted key -> sha256 of the data file it names (content, not path): from paths.data's MANIFEST.json,
    or computed for a user file (`users`: the stage's user_files, when the caller has them)."""
    manifest = manifest_of(lookup(cfg, "paths.data"))
    users = user_files(cfg, stage, split) if users is None else users
    return {key: sha256_user_file(users[key]) if key in users else manifest[rel]["sha256"]
            for key, rel in data_files(cfg, stage, split).items()}


def stage_config(cfg: Mapping[str, Any], stage: str, split: str | None = None) -> dict[str, Any]:
    """What names a stage's directory: its hashed config leaves and the sha256 of its data files (for a
    per-split stage, of `split` or job.split: see per_split). A user's own file (eren.data's too) is named by
    its content only, not by its path, so the same file moved reuses the directories."""
    users = user_files(cfg, stage, split)
    keys = {k: v for k, v in hashed_keys(cfg, stage, split).items() if k not in users}
    return {"keys": keys, "data": data_digests(cfg, stage, split, users)}


def stage_hash(cfg: Mapping[str, Any], stage: str, split: str | None = None) -> str:
    blob = json.dumps(stage_config(cfg, stage, split), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:HASH_LEN]
