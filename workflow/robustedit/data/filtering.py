"""Known-fact filtering: keep the cases whose true object the model already predicts."""
from __future__ import annotations

import torch

from ..evaluate.scoring import encode_item, score_items


@torch.no_grad()
def teacher_forced_exact_match(model, arch, tok, prompts: list[str], targets: list[str], batch_size: int,
                               device: torch.device, where: list[str] | None = None) -> list[bool]:
    """For each (prompt, target): do all target tokens equal the teacher-forced argmax after
    `prompt + " " + target`? The evaluation's scorer (right padding built from token ids, logits only
    at the target positions), so the filter and the Success metric agree by construction."""
    items = [encode_item(tok, p, t, where[i] if where else "") for i, (p, t) in enumerate(zip(prompts, targets))]
    scores = score_items(model, arch, items, batch_size, device)
    return [s.argmax_ids == list(it.target_ids) for s, it in zip(scores, items)]
