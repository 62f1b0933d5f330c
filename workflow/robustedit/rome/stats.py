"""ROME's "covariance": the uncentred second moment C = E[k kᵀ] of the edit layer's down_proj input,
over the tokens of a deterministic document subsample (kmeng01/rome `layer_stats`, algorithms notes §1.7).

- Documents: `random.Random(seed)` shuffle of all indices, first `n_samples` (the reference's
  FixedRandomSubsetSampler(seed=1)); nothing else is dropped here. An empty line still yields a BOS
  key on tokenizers that prepend BOS, exactly as in the reference; filter texts before calling if
  you do not want that.
- Each document is tokenised alone (special tokens included, truncated at `max_length`); padding
  positions never enter the sum; `include_bos=False` drops the auto-prepended BOS at position 0.
- The forward stops right after the edit layer's down_proj. Sums are kept in float64 (float32 on
  request; never half: sums over millions of tokens overflow float16).
- Work proceeds in chunks of `checkpoint_every` documents (length-sorted, batched by a token budget
  inside a chunk); after a chunk (not the last) `on_checkpoint(state_dict)` is called if at least
  `checkpoint_seconds` have passed since the start or the previous checkpoint, and a run given that
  state resumes after that chunk. Each checkpoint holds the full D x D sum (8 D² bytes in float64:
  0.97 GB at D = 11,008), so the time rule bounds the writes: at most min(chunks - 1, run time /
  checkpoint_seconds) checkpoints. It never changes the result, which does not depend on batching,
  chunking or resumption beyond float64 rounding.
- A checkpoint records what it covers: `meta` (layer, sample, truncation, BOS policy) and `rows_sha256`,
  a digest of the texts of its first `n_docs_done` sampled documents in processing order. A state that
  does not match this call (other meta or shape, other rows: e.g. an edited data file) raises
  ResumeMismatch before any work, and the caller starts afresh.
"""
from __future__ import annotations

import contextlib
import hashlib
import random
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..batching import right_pad
from ..errors import ConfigError
from ..hooks import capture_input, run_until, stop_after

ACCUMULATE_DTYPES = (torch.float64, torch.float32)


class ResumeMismatch(ConfigError):
    """A second-moment state that cannot be resumed here (other meta, shape or rows); start afresh."""


def feed_rows(digest, texts: Sequence[str]) -> None:
    """Add documents to a rows digest (length-prefixed UTF-8, so the boundaries count)."""
    for text in texts:
        data = text.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)


class SecondMoment:
    """Running Σ k kᵀ and token count; `moment()` = sum / count."""

    def __init__(self, dim: int, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu",
                 meta: dict | None = None):
        if dtype not in ACCUMULATE_DTYPES:
            raise ConfigError(f"second-moment accumulation dtype {dtype} is not allowed; use float64 or float32")
        self.sum = torch.zeros(dim, dim, dtype=dtype, device=device)
        self.count = 0  # tokens
        self.n_docs_done = 0  # documents of the sampled list fully processed
        self.meta = dict(meta or {})  # what the sums were collected over; checked on resume

    @property
    def dim(self) -> int:
        return self.sum.shape[0]

    def add(self, x: torch.Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected keys of shape [N, {self.dim}], got {tuple(x.shape)}")
        x = x.to(self.sum.device, self.sum.dtype)  # cast before multiplying: the product is formed in float64
        self.sum.addmm_(x.T, x)
        self.count += x.shape[0]

    def merge(self, other: "SecondMoment") -> None:
        if other.dim != self.dim:
            raise ValueError(f"cannot merge second moments of dimension {other.dim} and {self.dim}")
        self.sum += other.sum.to(self.sum.device, self.sum.dtype)
        self.count += other.count
        self.n_docs_done += other.n_docs_done

    def moment(self) -> torch.Tensor:
        if self.count == 0:
            raise ValueError("second moment over zero tokens")
        return self.sum / self.count

    def state_dict(self) -> dict:
        return {"sum": self.sum.detach().cpu().clone(), "count": int(self.count),
                "n_docs_done": int(self.n_docs_done), "meta": dict(self.meta)}

    def load_state_dict(self, state: dict) -> None:
        s = state["sum"]
        if tuple(s.shape) != (self.dim, self.dim):
            raise ConfigError(f"second-moment state has shape {tuple(s.shape)}, expected {(self.dim, self.dim)}")
        self.sum.copy_(s.to(self.sum.dtype))
        self.count = int(state["count"])
        self.n_docs_done = int(state["n_docs_done"])
        self.meta = dict(state.get("meta") or {})


@dataclass
class MomentResult:
    moment: torch.Tensor  # [D, D] E[k kᵀ] in the accumulation dtype
    accumulator: SecondMoment
    stats: dict  # tokens, docs, seconds, tokens_per_s (this run) and totals


def select_documents(n_total: int, n_samples: int | None, seed: int) -> list[int]:
    """Indices of the documents used, in processing order: seeded shuffle, first n."""
    order = list(range(n_total))
    random.Random(seed).shuffle(order)
    if n_samples is None:
        return order
    if n_samples > n_total:
        raise ConfigError(f"stats.n_samples={n_samples} but only {n_total} documents are available")
    return order[:n_samples]


def token_budget_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Group item indices, longest first, so that rows x longest row <= batch_tokens (>= 1 row each)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if lengths[i] == 0:
            continue
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= batch_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def prepends_bos(tok) -> bool:
    """Whether tokenising a text puts an automatic BOS at position 0."""
    bos = tok.bos_token_id
    return (bos is not None and tok("x")["input_ids"][:1] == [bos]
            and tok("x", add_special_tokens=False)["input_ids"][:1] != [bos])


def _key_rows(model, down_proj, ids_list, include_bos, bos_id, pad_id, device) -> torch.Tensor:
    """Down_proj inputs of all real (non-pad, optionally non-BOS) tokens of a right-padded batch."""
    ids, attention = right_pad(ids_list, pad_id)
    keep = attention.bool()
    if not include_bos and bos_id is not None:
        keep[:, 0] &= ids[:, 0] != bos_id  # the auto-prepended BOS sits at position 0
    with capture_input(down_proj) as cap, stop_after(down_proj):
        run_until(model, input_ids=ids.to(device), attention_mask=attention.to(device))
    return cap.value[keep.to(cap.value.device)]


def compute_second_moment(
    model, tok, arch, layer: int, texts: Sequence[str], *,
    n_samples: int | None = None,  # documents after the seeded shuffle; None = all
    seed: int = 1,  # the reference's FixedRandomSubsetSampler seed
    max_length: int = 2048,  # tokens per document (truncation, special tokens included)
    batch_tokens: int = 4096,  # rows x longest row per forward; speed only
    include_bos: bool = True,  # the reference keeps BOS keys on Llama; no-op without BOS
    dtype: torch.dtype = torch.float64,  # accumulation dtype
    device: str | torch.device = "cpu",
    state: dict | None = None,  # a state_dict from on_checkpoint to resume from
    on_checkpoint: Callable[[dict], None] | None = None,
    checkpoint_every: int = 500,  # documents per chunk (a checkpoint may follow any chunk but the last)
    checkpoint_seconds: float = 0.0,  # least wall-clock time between checkpoints; 0 = after every chunk
    progress: bool = False,  # tqdm bar over documents
    clock: Callable[[], float] = time.monotonic,  # seconds, for checkpoint_seconds (tests inject one)
) -> MomentResult:
    if checkpoint_every < 1 or batch_tokens < 1 or max_length < 1:
        raise ConfigError("stats: checkpoint_every, batch_tokens and max_length must be >= 1")
    if checkpoint_seconds < 0:
        raise ConfigError(f"stats: checkpoint_seconds={checkpoint_seconds} must be >= 0")
    selected = select_documents(len(texts), n_samples, seed)
    down_proj = arch.module(model, "down_proj", layer)
    meta = {"layer": int(layer), "n_selected": len(selected), "n_texts": len(texts), "seed": int(seed),
            "max_length": int(max_length), "include_bos": bool(include_bos)}
    acc = SecondMoment(down_proj.in_features, dtype=dtype, device=device, meta=meta)
    done_rows = hashlib.sha256()  # digest of the documents summed so far, in order (saved with each checkpoint)
    if state is not None:
        resume_state(acc, state, meta, done_rows, texts, selected)
    start_docs, start_tokens = acc.n_docs_done, acc.count
    bos_id = tok.bos_token_id if prepends_bos(tok) else None  # None: nothing to drop (e.g. SmolLM2)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0  # value irrelevant: pads are masked
    bar = contextlib.nullcontext()
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(selected), initial=start_docs, unit="doc", desc=f"C layer {layer}")
    t0, last_checkpoint = time.perf_counter(), clock()
    with bar, torch.no_grad():
        for lo in range(start_docs, len(selected), checkpoint_every):
            chunk = [texts[i] for i in selected[lo: lo + checkpoint_every]]
            enc = tok(chunk, truncation=True, max_length=max_length, add_special_tokens=True)["input_ids"]
            for rows in token_budget_batches([len(x) for x in enc], batch_tokens):
                acc.add(_key_rows(model, down_proj, [enc[r] for r in rows], include_bos, bos_id, pad_id, device))
            acc.n_docs_done = lo + len(chunk)
            feed_rows(done_rows, chunk)
            if progress:
                bar.update(len(chunk))
            due = clock() - last_checkpoint >= checkpoint_seconds
            if on_checkpoint is not None and due and acc.n_docs_done < len(selected):
                on_checkpoint({**acc.state_dict(), "rows_sha256": done_rows.hexdigest()})
                last_checkpoint = clock()
    seconds = time.perf_counter() - t0
    tokens = acc.count - start_tokens
    stats = {"tokens": tokens, "docs": acc.n_docs_done - start_docs, "seconds": seconds,
             "tokens_per_s": tokens / seconds if seconds > 0 else float("nan"),
             "tokens_total": acc.count, "docs_total": acc.n_docs_done, "resumed_from_docs": start_docs}
    return MomentResult(acc.moment(), acc, stats)


def resume_state(acc: SecondMoment, state: dict, meta: dict, rows, texts: Sequence[str],
                 selected: Sequence[int]) -> None:
    """Load `state` into `acc` if it was collected with `meta` over exactly the first n_docs_done `selected`
    texts (fed into the rows digest); else raise ResumeMismatch naming what differs."""
    try:
        acc.load_state_dict(state)
    except (ConfigError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise ResumeMismatch(f"cannot resume second-moment state: {e}") from e
    if acc.meta != meta:
        raise ResumeMismatch(f"cannot resume second-moment statistics collected with {acc.meta} for {meta}")
    if not 0 <= acc.n_docs_done <= len(selected):
        raise ResumeMismatch(f"cannot resume after {acc.n_docs_done} rows of {len(selected)} sampled")
    feed_rows(rows, [texts[i] for i in selected[: acc.n_docs_done]])
    if state.get("rows_sha256") != rows.hexdigest():
        raise ResumeMismatch(f"cannot resume: the first {acc.n_docs_done} sampled rows are not the ones summed "
                             f"(rows_sha256 {state.get('rows_sha256')!r}, these rows {rows.hexdigest()!r})")
