"""Greedy generation with per-row edits: the generation protocol beside teacher forcing.

    spec = GenerationSpec()                                   # target tokens + 4 new tokens, stop at "\\n" / ". "
    per_case = generate_cases(model, tok, arch, cases, edits, batch_size=32, device="cpu", spec=spec)
    table = summarise(per_case, metric="generation_match", locality_metric="generation_unchanged")

Each batch is left-padded (position ids skip the pads) and decoded with a KV cache, one new token per
forward. With `row_context` (an EditBatch's `for_rows`), every forward, the prompt's and each new
token's, runs with row r edited by its own case, so a rank-one delta or a REP adaptor acts at every
generated position exactly as it would with the edit written into the weights (tests prove the two
generate the same tokens). Rows leave the batch as they finish: their cache rows are dropped.

The stop rule and the records are continuations.py's (shared with the teacher-forced pass's decoding,
decoding.py, which the pipeline uses). The unedited continuation of every item is generated once: it is
the "pre" phase and the reference of `generation_unchanged@1`.
"""
from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Sequence

import torch

from ..batching import eos_ids_of, left_pad, pad_id_of
from ..errors import ConfigError, RecordError
from ..tokens import target_token_ids
from .continuations import GenerationSpec, continues, phase_fields, pre_continuations, stop_rule
from .items import build_items
from .scoring import length_batches
from .suite import as_edit_batch

__all__ = ["GenerationSpec", "eos_ids_of", "generate_cases", "generate_rows", "generation_rows",
           "merge_protocols", "stop_rule"]  # the spec and stop rule live in continuations.py, eos_ids_of in batching.py


@torch.no_grad()
def _generate_batch(model, prompts: Sequence[Sequence[int]], budgets: Sequence[int], device, pad_id: int,
                    eos: set[int], stopped: Callable[[list[int]], bool],
                    row_context: Callable[[torch.Tensor], ContextManager] | None,
                    row_case: torch.Tensor) -> list[list[int]]:
    ids, mask = left_pad(prompts, pad_id, device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out: list[list[int]] = [[] for _ in prompts]
    active = torch.arange(len(prompts), device=device)  # batch rows still generating
    cache, step_ids, step_pos = None, ids, positions
    while len(active):
        with row_context(row_case[active]) if row_context is not None else contextlib.nullcontext():
            # logits_to_keep=1: only the last position's logits are read; the prompt's forward would otherwise
            # project every position onto the vocabulary (most of its cost for long prompts)
            res = model(input_ids=step_ids, attention_mask=mask, position_ids=step_pos,
                        past_key_values=cache, use_cache=True, logits_to_keep=1)
        cache, nxt = res.past_key_values, res.logits[:, -1].argmax(-1)
        keep = [k for k, (row, token) in enumerate(zip(active.tolist(), nxt.tolist()))
                if continues(out[row], token, budgets[row], eos, stopped)]
        if not keep:
            break
        sel = torch.as_tensor(keep, device=device)
        if len(keep) < len(active):
            cache.batch_select_indices(sel)
        active, step_pos = active[sel], step_pos[sel][:, -1:] + 1
        mask = torch.cat([mask[sel], torch.ones(len(keep), 1, dtype=mask.dtype, device=device)], dim=1)
        step_ids = nxt[sel][:, None]
    return out


def generate_rows(model, prompts: Sequence[Sequence[int]], budgets: Sequence[int], batch_size: int, device, *,
                  pad_id: int, eos: set[int], stopped: Callable[[list[int]], bool] = lambda ids: False,
                  row_context: Callable[[torch.Tensor], ContextManager] | None = None,
                  row_case: Sequence[int] | None = None) -> list[list[int]]:
    """Greedy new token ids per prompt (input order), at most budgets[i] each, cut before an eos.
    row_context(case_index_per_row) is entered around every forward (an EditBatch's `for_rows`)."""
    if batch_size < 1:
        raise ConfigError(f"generation batch_size must be >= 1, got {batch_size}")
    if any(b < 1 for b in budgets) or any(not p for p in prompts):
        raise ConfigError("every generated row needs a non-empty prompt and a budget >= 1")
    cases = torch.as_tensor(list(row_case) if row_case is not None else [0] * len(prompts), dtype=torch.long)
    out: list[list[int]] = [[] for _ in prompts]
    # similar lengths share a batch, as in teacher forcing: padding never exceeds half a batch's prompt tokens
    # (in rows of 128 sorted by length, the long contexts' batch padded every short prompt to ~400 tokens)
    for idx in length_batches([len(p) for p in prompts], batch_size):
        new = _generate_batch(model, [prompts[i] for i in idx], [budgets[i] for i in idx], device, pad_id, eos,
                              stopped, row_context, cases[idx].to(device))
        for i, row in zip(idx, new):
            out[i] = row
    return out


def generation_rows(tok, cases: Sequence[dict], spec: GenerationSpec, long_id_passages: int | None = None) -> list:
    """Per item of every case, in order: (case index, Item, prompt ids, new-token budget)."""
    rows = []
    for ci, case in enumerate(cases):
        for j, it in enumerate(build_items(case, long_id_passages)):
            where = f"case_id {case['case_id']} ({it.group} item {j}): "
            prompt_ids = list(tok(it.prompt)["input_ids"])
            if not prompt_ids:
                raise RecordError(f"{where}prompt {it.prompt!r} has no tokens")
            n_target = len(target_token_ids(tok, it.prompt, it.target, mode="clean", where=where))
            rows.append((ci, it, prompt_ids, n_target + spec.margin))
    return rows


def generate_cases(model, tok, arch, cases: Sequence[dict], edits, batch_size: int, device,
                   spec: GenerationSpec | None = None, *, long_id_passages: int | None = None,
                   pre_from: Sequence[dict] | None = None) -> list[dict]:
    """Per case {"case_id", "items"}; per item: group, prompt, target, the edited continuation
    (text, ids), one value per generation metric, and the same under "pre" for the unedited model.
    edits: as evaluate_cases (an EditBatch, one RankOneEdit/None per case, or None).
    pre_from: an earlier generate_cases result on the same cases, whose unedited continuations are reused."""
    spec = spec or GenerationSpec()  # target tokens + 4, stop at a line break or a sentence end
    edit_batch = as_edit_batch(model, arch, edits, len(cases), device)
    rows = generation_rows(tok, cases, spec, long_id_passages)
    prompts, budgets = [r[2] for r in rows], [r[3] for r in rows]
    recorded = spec.recorded()
    common = dict(pad_id=pad_id_of(tok), eos=eos_ids_of(model), stopped=stop_rule(tok, spec))
    if pre_from is not None:
        pre_ids = pre_continuations(pre_from, [c["case_id"] for c in cases], [(r[1].prompt, r[1].target) for r in rows],
                                    recorded)
    else:
        pre_ids = generate_rows(model, prompts, budgets, batch_size, device, **common)
    post_ids = generate_rows(model, prompts, budgets, batch_size, device, row_context=edit_batch.for_rows,
                             row_case=[r[0] for r in rows], **common)
    per_case = [{"case_id": c["case_id"], "generation": recorded, "items": []} for c in cases]
    for (ci, it, _, _), pre, post in zip(rows, pre_ids, post_ids):
        rec = {"group": it.group, "prompt": it.prompt, "target": it.target,
               **phase_fields(tok, post, it.target, pre), "pre": phase_fields(tok, pre, it.target, pre)}
        per_case[ci]["items"].append(rec)
    return per_case


def merge_protocols(scored: Sequence[dict], generated: Sequence[dict]) -> list[dict]:
    """evaluate_cases' records with generate_cases' fields added to each item (and its "pre"), so that one
    results file holds both protocols and `summarise` reads either by metric key."""
    out = []
    for tf, gen in zip(scored, generated, strict=True):
        if tf["case_id"] != gen["case_id"] or len(tf["items"]) != len(gen["items"]):
            raise ConfigError(f"case_id {tf['case_id']}: the two protocols scored different items")
        items = []
        for a, b in zip(tf["items"], gen["items"]):
            if (a["prompt"], a["target"]) != (b["prompt"], b["target"]):
                raise ConfigError(f"case_id {tf['case_id']}: item {a['prompt']!r} differs between the protocols")
            extra = {k: v for k, v in b.items() if k not in ("group", "prompt", "target", "pre")}
            items.append({**a, **extra, "pre": {**a["pre"], **b["pre"]}})
        out.append({**tf, "generation": gen["generation"], "items": items})
    return out
