"""Teacher-forced scoring of (prompt, target) items, batched, with logits only where they are read.

The scored sequence of an item is `tok(prompt).input_ids + target_ids` where target_ids come from
`robustedit.tokens.target_token_ids(tok, prompt, target, mode="clean")` (the suffix of
`tok(prompt + " " + target)`), so BOS is included exactly when the tokenizer adds it. Target token j
is predicted at position n_prompt - 1 + j.

Batches are RIGHT-padded here, from token id lists; the tokenizer's padding_side and pad token are
never used. With right padding, positions keep their unpadded position ids and causal attention never
sees a pad before a real token, so each row equals its unpadded forward.

The vocabulary projection is the costly part of a small model's forward (V = 49k-262k), so the model
is stopped just before `lm_head` (a pre-hook captures its input, which transformers' decoders give
already passed through the final norm) and `lm_head` is applied only to the gathered positions.
Gemma-style `config.final_logit_softcapping` is then applied as transformers does.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterator, Sequence

import torch

from ..batching import right_pad
from ..errors import ConfigError, RecordError
from ..hooks import Captured, StopForward, run_until
from ..tokens import target_token_ids

PAD_ID = 0  # any valid id: right-padded positions are masked and come after every read position


@dataclass(frozen=True)
class EncodedItem:
    input_ids: tuple[int, ...]  # prompt ids (special tokens included) + target ids
    n_prompt: int
    target_ids: tuple[int, ...]

    def read_positions(self) -> range:
        """Positions whose next-token predictions are the target tokens."""
        return range(self.n_prompt - 1, self.n_prompt - 1 + len(self.target_ids))


@dataclass(frozen=True)
class ItemScore:
    argmax_ids: list[int]  # teacher-forced argmax at each target position
    logprobs: list[float]  # log p(target token) at each target position


def encode_item(tok, prompt: str, target: str, where: str = "", max_length: int | None = None) -> EncodedItem:
    prompt_ids = list(tok(prompt)["input_ids"])
    target_ids = target_token_ids(tok, prompt, target, mode="clean", where=where)
    if not prompt_ids:
        raise RecordError(f"{where}prompt {prompt!r} has no tokens, so nothing predicts the target")
    ids = tuple(prompt_ids + list(target_ids))
    if max_length is not None and len(ids) > max_length:
        raise RecordError(f"{where}prompt + target is {len(ids)} tokens, more than max_length={max_length}")
    return EncodedItem(ids, len(prompt_ids), tuple(target_ids))


@contextlib.contextmanager
def _stop_before(module: torch.nn.Module) -> Iterator[Captured]:
    cap = Captured()

    def hook(_mod, args):
        cap.value = args[0]
        raise StopForward

    handle = module.register_forward_pre_hook(hook)
    try:
        yield cap
    finally:
        handle.remove()


def final_hidden(model, arch, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The input of lm_head [B, S, H] (final norm applied), without computing any logits."""
    with _stop_before(arch.module(model, "lm_head")) as cap:
        run_until(model, input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    if cap.value is None:
        raise ConfigError(f"{type(model).__name__}: lm_head was never called; check model.modules.lm_head")
    return cap.value


def logits_from_hidden(model, arch, hidden: torch.Tensor) -> torch.Tensor:
    logits = arch.module(model, "lm_head")(hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap is not None:  # Gemma-2/3: logits = cap * tanh(logits / cap), in transformers' order of ops
        logits = torch.tanh(logits / cap) * cap
    return logits


def gathered_logits(model, arch, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Logits [M, V] at (rows[m], positions[m]); equal to model(...).logits[rows, positions]."""
    hidden = final_hidden(model, arch, input_ids, attention_mask)
    return logits_from_hidden(model, arch, hidden[rows, positions])


def score_batch(model, arch, items: Sequence[EncodedItem], device) -> list[ItemScore]:
    input_ids, attention_mask = right_pad([it.input_ids for it in items], PAD_ID, device)
    rows = torch.cat([torch.full((len(it.target_ids),), i, dtype=torch.long) for i, it in enumerate(items)])
    positions = torch.cat([torch.as_tensor(list(it.read_positions()), dtype=torch.long) for it in items])
    targets = torch.cat([torch.as_tensor(it.target_ids, dtype=torch.long) for it in items]).to(device)
    logits = gathered_logits(model, arch, input_ids, attention_mask, rows.to(device), positions.to(device))
    logp = torch.log_softmax(logits.float(), dim=-1)
    token_logp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1).cpu().tolist()
    argmax = logits.argmax(-1).cpu().tolist()
    out, start = [], 0
    for it in items:
        end = start + len(it.target_ids)
        out.append(ItemScore(argmax[start:end], token_logp[start:end]))
        start = end
    return out


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Row indices in batches of at most batch_size, longest first; a row less than half as long as its
    batch's first row starts a new batch, so padding never exceeds half a batch (one long-context row
    would otherwise make 15 short rows cost its length each)."""
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if not batches or len(batches[-1]) == batch_size or 2 * lengths[i] < lengths[batches[-1][0]]:
            batches.append([])
        batches[-1].append(i)
    return batches


RowContext = Callable[[torch.Tensor], ContextManager[None]]


def score_items(model, arch, items: Sequence[EncodedItem], batch_size: int, device,
                row_context: RowContext | None = None, row_case: Sequence[int] | None = None,
                pack: bool = True) -> list[ItemScore]:
    """Scores in the order of `items`. Rows are batched longest first (length_batches: less padding).

    With `row_context`, each batch runs inside `row_context(case index of each row)`, which is how
    per-row edits (EditBatch.for_rows) are applied; `row_case[i]` is item i's case index.
    With `pack` (default), items of one case that share a prompt (an item and its alternative) are
    scored in one row (see packing.py); `pack=False` gives each item its own row.
    """
    from .packing import pack_items, score_packed_batch

    if model.training:
        raise ConfigError("evaluation needs model.eval(): dropout would make teacher-forced scores random")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if row_context is not None and (row_case is None or len(row_case) != len(items)):
        raise ValueError("row_context needs one case index per item (row_case)")
    if pack:
        rows = pack_items(items, row_case)
    else:
        rows = [None] * len(items)
    lengths = [len(r) if pack else len(items[i].input_ids) for i, r in enumerate(rows)]
    scores: list[ItemScore | None] = [None] * len(items)
    with torch.no_grad():
        for chunk in length_batches(lengths, batch_size):
            first_item = [rows[i].items[0] if pack else i for i in chunk]
            ctx = (row_context(torch.as_tensor([row_case[i] for i in first_item], dtype=torch.long, device=device))
                   if row_context is not None else contextlib.nullcontext())
            with ctx:
                if pack:
                    per_row = score_packed_batch(model, arch, [rows[i] for i in chunk], device)
                    done = [(k, sc) for i, row_scores in zip(chunk, per_row) for k, sc in zip(rows[i].items, row_scores)]
                else:
                    done = list(zip(chunk, score_batch(model, arch, [items[i] for i in chunk], device)))
            for k, sc in done:
                scores[k] = sc
    return scores  # type: ignore[return-value]
