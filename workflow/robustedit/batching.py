"""Right padding built by the library, whatever the tokenizer's padding_side.

ROME-family code reads positions counted from the left (subject-last index, target span), so every
batch is right-padded here rather than by the tokenizer. The pad id never changes a number that is
read: pads come after every real token, are masked, and nothing reads their outputs.
"""
from __future__ import annotations

from typing import Sequence

import torch

PAD_ID = 0  # the pad id where no tokenizer is at hand: any valid id will do


def pad_id_of(tok) -> int:
    """The tokenizer's pad id, or PAD_ID when it has none (Llama-2 and Mistral have none)."""
    return tok.pad_token_id if tok.pad_token_id is not None else PAD_ID


def eos_ids_of(model) -> set[int]:
    """The end-of-sequence ids that `generate` stops on: the model's generation config's (int, list or None)."""
    eos = model.generation_config.eos_token_id
    if eos is None:
        return set()
    return {int(eos)} if isinstance(eos, int) else {int(e) for e in eos}


def right_pad(sequences: Sequence[Sequence[int]], pad_id: int = PAD_ID,
              device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids [B, S] padded on the right with `pad_id` (any valid id: pads are masked) and the
    attention mask [B, S] (1 on real tokens)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for r, s in enumerate(sequences):
        ids[r, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
        mask[r, : len(s)] = 1
    return ids.to(device), mask.to(device)


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int = PAD_ID,
             device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids [B, S] padded on the LEFT (for generation: every row's next token is at the last position)
    and the attention mask; the caller passes position ids that skip the pads (mask.cumsum(-1) - 1)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for r, s in enumerate(sequences):
        if len(s):
            ids[r, width - len(s):] = torch.as_tensor(list(s), dtype=torch.long)
            mask[r, width - len(s):] = 1
    return ids.to(device), mask.to(device)
