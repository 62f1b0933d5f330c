"""EREN's notebook: edit statements ("notes") and a faiss inner-product index over their embeddings.

- Notes are stored as EREN stores them: one trailing "." removed (after trailing whitespace).
- index="flat" (default) is exact maximum inner product search (faiss.IndexFlatIP), EREN's MIPS.
  index="hnsw" is approximate (faiss.IndexHNSWFlat, inner-product metric) for large notebooks.
- faiss_device="gpu" moves a flat index to GPU 0 when faiss has GPU support; otherwise ConfigError.
  There is no silent CPU fallback.
- `search(queries, k)` returns min(k, len(notebook)) hits per query, best first; an empty notebook
  returns no hits.
- `save(folder)` writes index.faiss, notes.json and meta.json to a temporary folder next to the
  target and renames it into place, so a reader never sees a half-written notebook.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError, DataIntegrityError, RecordError
from .encoder import Encoder, encode_queries

INDEX_KINDS = ("flat", "hnsw")
FAISS_DEVICES = ("cpu", "gpu")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Hit:
    note_id: int  # position of the note in the notebook (insertion order)
    score: float  # inner product between query and note embeddings
    note: str


def clean_statement(statement: str, where: str = "statement") -> str:
    """EREN's preprocessing: drop one trailing '.' (trailing whitespace removed first)."""
    if not isinstance(statement, str) or not statement.strip():
        raise RecordError(f"{where}: an edit statement must be a non-empty string, got {statement!r}")
    statement = statement.rstrip()
    return statement[:-1] if statement.endswith(".") else statement


def build_index(kind: str, dim: int, hnsw_m: int = 32, ef_construction: int = 200, ef_search: int = 128):
    """A fresh, empty faiss index of the given kind using the inner-product metric."""
    import faiss

    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        # M=32 links per node and efConstruction=200 are common recall-oriented HNSW settings;
        # efSearch=128 trades a little latency for recall@5 close to exact search.
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = ef_search
        return index
    raise ConfigError(f"eren.index={kind!r} is unknown; use one of {INDEX_KINDS}")


def _to_device(index, faiss_device: str, kind: str):
    import faiss

    if faiss_device == "cpu":
        return index
    if faiss_device != "gpu":
        raise ConfigError(f"eren.faiss_device={faiss_device!r} is unknown; use one of {FAISS_DEVICES}")
    n_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if n_gpus <= 0 or not hasattr(faiss, "StandardGpuResources"):
        raise ConfigError("eren.faiss_device='gpu' but this faiss build has no GPU support or sees no GPU "
                          "(install faiss-gpu on a CUDA machine, or use faiss_device='cpu')")
    if kind != "flat":
        raise ConfigError(f"eren.faiss_device='gpu' supports index='flat' only, not {kind!r}")
    return faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)


class Notebook:
    """Notes plus their embedding index; the encoder turns statements and queries into vectors."""

    def __init__(self, encoder: Encoder, index: str = "flat", faiss_device: str = "cpu", **index_args):
        self.encoder = encoder
        self.kind = index
        self.faiss_device = faiss_device
        self.index_args = dict(index_args)
        self.index = _to_device(build_index(index, encoder.dim, **index_args), faiss_device, index)
        self.notes: list[str] = []

    def __len__(self) -> int:
        return len(self.notes)

    def add(self, statements: Sequence[str], embeddings: np.ndarray | None = None) -> None:
        """Add edit statements; `embeddings` [n, dim] may be given to skip encoding (e.g. cached)."""
        notes = [clean_statement(s, f"statement[{i}]") for i, s in enumerate(statements)]
        if not notes:
            return
        emb = self.encoder.encode(notes) if embeddings is None else np.asarray(embeddings, dtype=np.float32)
        if emb.shape != (len(notes), self.encoder.dim):
            raise ValueError(f"embeddings have shape {emb.shape}, expected {(len(notes), self.encoder.dim)}")
        if not np.isfinite(emb).all():
            raise ValueError("embeddings contain NaN or inf")
        self.index.add(np.ascontiguousarray(emb))
        self.notes.extend(notes)

    def search_embeddings(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw faiss search: (scores [n, k'], ids [n, k']) with k' = min(k, len(self)); -1 ids are padding."""
        if k < 1:
            raise ConfigError(f"top-k must be >= 1, got {k}")
        q = np.ascontiguousarray(np.asarray(queries, dtype=np.float32))
        k = min(k, len(self))
        if k == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        return self.index.search(q, k)

    def search(self, queries: Sequence[str], k: int = 5) -> list[list[Hit]]:
        """Top-k notes per query (k=5 as EREN's num_context_examples), best first."""
        queries = list(queries)
        if not queries:
            return []
        if len(self) == 0:
            if k < 1:
                raise ConfigError(f"top-k must be >= 1, got {k}")
            return [[] for _ in queries]
        scores, ids = self.search_embeddings(encode_queries(self.encoder, queries), k)
        return [[Hit(int(i), float(s), self.notes[i]) for s, i in zip(srow, irow) if i >= 0]
                for srow, irow in zip(scores, ids)]

    # ---- persistence -------------------------------------------------------------------------
    def save(self, folder: str | os.PathLike) -> Path:
        """Write the notebook to `folder` atomically (temporary sibling folder, then rename)."""
        import faiss

        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
        try:
            cpu_index = self.index if self.faiss_device == "cpu" else faiss.index_gpu_to_cpu(self.index)
            faiss.write_index(cpu_index, str(tmp / "index.faiss"))
            (tmp / "notes.json").write_text(json.dumps(self.notes, ensure_ascii=False) + "\n")
            meta = {"format": FORMAT_VERSION, "encoder": self.encoder.name, "dim": self.encoder.dim,
                    "index": self.kind, "index_args": self.index_args, "n_notes": len(self)}
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
            old = None
            if folder.exists():
                old = folder.with_name(f".{folder.name}.old.{os.getpid()}")
                os.replace(folder, old)
            os.replace(tmp, folder)
            if old is not None:
                shutil.rmtree(old)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, encoder: Encoder, faiss_device: str = "cpu") -> "Notebook":
        """Read a saved notebook; the encoder must be the one it was built with (name and dim)."""
        import faiss

        folder = Path(folder)
        for name in ("index.faiss", "notes.json", "meta.json"):
            if not (folder / name).is_file():
                raise DataIntegrityError(f"{folder}: saved notebook lacks {name}")
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise DataIntegrityError(f"{folder}/meta.json: format {meta.get('format')!r}, expected {FORMAT_VERSION}")
        if meta["encoder"] != encoder.name or meta["dim"] != encoder.dim:
            raise ConfigError(f"{folder}: notebook was built with encoder {meta['encoder']!r} (dim {meta['dim']}), "
                              f"not {encoder.name!r} (dim {encoder.dim})")
        notes = json.loads((folder / "notes.json").read_text())
        index = faiss.read_index(str(folder / "index.faiss"))
        if index.ntotal != len(notes) or len(notes) != meta["n_notes"]:
            raise DataIntegrityError(f"{folder}: index holds {index.ntotal} vectors but there are {len(notes)} notes "
                                     f"(meta says {meta['n_notes']})")
        nb = cls.__new__(cls)
        nb.encoder, nb.kind, nb.faiss_device = encoder, meta["index"], faiss_device
        nb.index_args = dict(meta.get("index_args", {}))
        nb.index = _to_device(index, faiss_device, nb.kind)
        nb.notes = list(notes)
        return nb
