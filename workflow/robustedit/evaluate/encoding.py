"""An evaluation item as token ids, and its score.

The scored sequence of an item is `tok(prompt).input_ids + target_ids` where target_ids come from
`robustedit.tokens.target_token_ids(tok, prompt, target, mode="clean")` (the suffix of
`tok(prompt + " " + target)`), so BOS is included exactly when the tokenizer adds it. Target token j
is predicted at position n_prompt - 1 + j.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import RecordError
from ..tokens import target_token_ids


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
    continuation: list[int] | None = None  # greedy new tokens after the prompt, when asked for (scoring.Greedy)


def encode_item(tok, prompt: str, target: str, where: str = "", max_length: int | None = None) -> EncodedItem:
    prompt_ids = list(tok(prompt)["input_ids"])
    target_ids = target_token_ids(tok, prompt, target, mode="clean", where=where)
    if not prompt_ids:
        raise RecordError(f"{where}prompt {prompt!r} has no tokens, so nothing predicts the target")
    ids = tuple(prompt_ids + list(target_ids))
    if max_length is not None and len(ids) > max_length:
        raise RecordError(f"{where}prompt + target is {len(ids)} tokens, more than max_length={max_length}")
    return EncodedItem(ids, len(prompt_ids), tuple(target_ids))


def scores_from_logits(logits: torch.Tensor, targets: torch.Tensor, lengths: Sequence[int]) -> list[ItemScore]:
    """ItemScores from the logits [M, V] at the read positions of consecutive items (lengths[i] target
    tokens each) and the target ids [M] there."""
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets[:, None]).squeeze(-1).cpu().tolist()
    argmax = logits.argmax(-1).cpu().tolist()
    out, start = [], 0
    for n in lengths:
        out.append(ItemScore(argmax[start:start + n], logp[start:start + n]))
        start += n
    return out
