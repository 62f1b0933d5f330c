"""The rows of several cases' v* optimisations as one batch (layout only; v_forward.py runs it).

Each case contributes its prompts.case_rows: one rewriting row per context template, then its KL row.
B cases share one forward (B×(n_templates+1) rows, each row carrying its case's δ); labels, KL rows
and bare-template rows are indexed so the loss can be gathered per case.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..batching import right_pad
from .prompts import CaseRows


@dataclass
class RowBatch:
    """Rows of several cases. Full layout: whole right-padded prompts. Prefix layout: only each row's
    δ-dependent suffix (from min(δ position, first label) on), right-padded, after cached prefix K/V
    right-aligned to `prefix_len` (so the index distance between any two tokens equals their
    position distance, as sliding-window masks require)."""
    ids: torch.Tensor  # [R, W] tokens fed to the model
    mask: torch.Tensor  # [R, prefix_len + W] attention mask (cached prefix first)
    case: torch.Tensor  # [R] case of each row (0..B-1)
    index: torch.Tensor  # [R] where δ is added (subject-last token), in ids coordinates
    lab_row: torch.Tensor  # [N] label rows / positions / ids / cases / weights 1/(|y|·n_templates)
    lab_pos: torch.Tensor
    lab_id: torch.Tensor
    lab_case: torch.Tensor
    lab_weight: torch.Tensor
    kl_row: torch.Tensor  # row of the KL prompt of case kl_case[i]
    kl_case: torch.Tensor
    init_row: torch.Tensor  # row of the bare-template prompt of case init_case[i] (v_init is read there)
    init_case: torch.Tensor
    pos: torch.Tensor | None = None  # [R, W] position ids (None: 0..W-1)
    lower: torch.Tensor | None = None  # [R, W, H] input of the edit layer (δ-independent)
    prefix_kv: list | None = None  # per layer (K, V) [R, kv_heads, prefix_len, head_dim]
    prefix_len: int = 0


def build_batch(cases: Sequence[CaseRows], pad_id: int, device, dtype: torch.dtype) -> RowBatch:
    """The full layout of all rows of `cases` (case b's rows are consecutive, its KL row last)."""
    rows, case, lab = [], [], []
    kl_row, init_row = [], []
    for b, c in enumerate(cases):
        init_row.append(len(rows))
        n_rewrite = len(c.labels)
        for r, row in enumerate(c.rows):
            for pos, tid in (c.labels[r] if r < n_rewrite else []):
                lab.append((len(rows), pos, tid, b, 1.0 / (c.n_target * n_rewrite)))
            rows.append(row)
            case.append(b)
        kl_row.append(len(rows) - 1)
    ids, mask = right_pad([r.ids for r in rows], pad_id, device)
    t = lambda xs, dt=torch.long: torch.tensor(xs, dtype=dt, device=device)  # noqa: E731
    lr, lp, li, lc, lw = zip(*lab)
    every = t(list(range(len(cases))))
    return RowBatch(ids=ids, mask=mask, case=t(case), index=t([r.index for r in rows]),
                    lab_row=t(lr), lab_pos=t(lp), lab_id=t(li), lab_case=t(lc), lab_weight=t(lw, dtype),
                    kl_row=t(kl_row), kl_case=every, init_row=t(init_row), init_case=every)


def select_rows(batch: RowBatch, rows: torch.Tensor, local: torch.Tensor) -> RowBatch:
    """Rows `rows` only, cases renumbered by `local` (case -> new index), padding trimmed."""
    row_map = torch.full((batch.ids.shape[0],), -1, dtype=torch.long, device=rows.device)
    row_map[rows] = torch.arange(rows.shape[0], device=rows.device)
    p = batch.prefix_len
    p_sel = int(batch.mask[rows, :p].sum(1).max()) if p else 0
    w = int(batch.mask[rows, p:].sum(1).max())
    labs = torch.nonzero(row_map[batch.lab_row] >= 0)[:, 0]
    kls = torch.nonzero(row_map[batch.kl_row] >= 0)[:, 0]
    inits = torch.nonzero(row_map[batch.init_row] >= 0)[:, 0]
    cut = lambda x: None if x is None else x[rows, :w]  # noqa: E731
    kv = None if not p_sel else [(k[rows, :, p - p_sel:], v[rows, :, p - p_sel:]) for k, v in batch.prefix_kv]
    return RowBatch(
        ids=batch.ids[rows, :w], mask=torch.cat([batch.mask[rows, p - p_sel:p], batch.mask[rows, p:p + w]], 1),
        case=local[batch.case[rows]], index=batch.index[rows],
        lab_row=row_map[batch.lab_row[labs]], lab_pos=batch.lab_pos[labs], lab_id=batch.lab_id[labs],
        lab_case=local[batch.lab_case[labs]], lab_weight=batch.lab_weight[labs],
        kl_row=row_map[batch.kl_row[kls]], kl_case=local[batch.kl_case[kls]],
        init_row=row_map[batch.init_row[inits]], init_case=local[batch.init_case[inits]],
        pos=cut(batch.pos), lower=cut(batch.lower), prefix_kv=kv, prefix_len=p_sel)


def case_map(n_cases: int, active: Sequence[int], device) -> torch.Tensor:
    """case -> index among `active` (-1 for the others)."""
    local = torch.full((n_cases,), -1, dtype=torch.long, device=device)
    local[torch.tensor(list(active), dtype=torch.long, device=device)] = torch.arange(len(active), device=device)
    return local


def select_cases(batch: RowBatch, active: Sequence[int]) -> RowBatch:
    """The rows of `active` cases only (renumbered 0..len(active)-1)."""
    local = case_map(batch.kl_row.shape[0], active, batch.ids.device)
    return select_rows(batch, torch.nonzero(local[batch.case] >= 0)[:, 0], local)
