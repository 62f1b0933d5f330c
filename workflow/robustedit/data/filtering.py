"""Known-fact filtering: keep the cases whose true object the model already predicts."""
from __future__ import annotations

import torch

from ..batching import right_pad
from ..tokens import target_token_ids


@torch.no_grad()
def teacher_forced_exact_match(model, tok, prompts: list[str], targets: list[str], batch_size: int,
                               device: torch.device, where: list[str] | None = None) -> list[bool]:
    """For each (prompt, target): do all target tokens equal the teacher-forced argmax after
    `prompt + " " + target`? Right padding is built here, independent of the tokenizer's state."""
    out: list[bool] = []
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    for start in range(0, len(prompts), batch_size):
        rows, spans = [], []
        for j in range(start, min(start + batch_size, len(prompts))):
            label = where[j] if where else ""
            prompt_ids = tok(prompts[j])["input_ids"]
            tgt = target_token_ids(tok, prompts[j], targets[j], mode="clean", where=label)
            rows.append(prompt_ids + tgt)
            spans.append((len(prompt_ids), tgt))
        ids, mask = right_pad(rows, pad, device)
        logits = model(input_ids=ids, attention_mask=mask).logits
        for i, (p_len, tgt) in enumerate(spans):
            # position t predicts token t+1, so the target's tokens are read at p_len-1 ... p_len+len-2
            pred = logits[i, p_len - 1 : p_len - 1 + len(tgt)].argmax(-1).tolist()
            out.append(pred == tgt)
    return out
