"""ROME's right vector v* (Meng et al. 2022, `rome/compute_v.py`, as EasyEdit and the REP release run
it), batched across cases.

Per case, δ is added to the edit layer's MLP output at the subject's last token of every prompt of
prompts.case_rows (one rewriting prompt per context template, teacher-forced with the target prefix,
and the KL prompt "{subject} is a"), and `v_objective` is minimised:

    L(δ) = mean_templates[ Σ_t −log p(y_t) / |y| ] + kl_factor·KL(p_δ ‖ p_0) + v_weight_decay·‖δ‖/‖v_init‖²

with p_δ, p_0 the next-token distributions at the KL prompt's subject-last token with and without δ,
and v_init the MLP output at the bare template's subject-last token. Adam on δ; a case stops once its
loss < early_stop_loss; the last iteration breaks before backward (at most steps−1 updates); after each
update ‖δ‖ is clamped to clamp_norm_factor·‖v_init‖ (`clamp_`). Then v* = v_init + δ and
right = (v* − out*) / (k*·u), with k*, out* the down_proj input/output at the bare prompt's
subject-last token, so that W + right uᵀ maps k* to v*.

Batching: B cases share each forward (layout: v_batch.py; the exact speed-ups: v_forward.py); each case
has its own leaf δ and its own torch Adam, and a stopped case leaves the batch, so every case follows
exactly the path it would follow alone.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

from ..batching import pad_id_of
from ..readout import logits_from_hidden
from .hparams import ROMEHyperParams
from .prompts import bare_rows, case_rows, read_rows
from .v_batch import RowBatch, build_batch, case_map
from .v_forward import grouped_forward, prepare_batch


def v_objective(nll: torch.Tensor, kl_logp: torch.Tensor, kl_init: torch.Tensor, delta: torch.Tensor,
                v_init_norm: torch.Tensor, hp: ROMEHyperParams) -> torch.Tensor:
    """ROME's loss per case [B]: the target NLL [B] (mean over templates of Σ_t −log p(y_t) / |y|),
    + kl_factor·KL(p_δ ‖ p_0) from next-token log-probs [B, V], + v_weight_decay·‖δ‖/‖v_init‖²."""
    # F.kl_div(init, cur, log_target=True) = Σ p_cur (log p_cur − log p_init): "batchmean" over 1 row
    kl = hp.kl_factor * F.kl_div(kl_init, kl_logp, log_target=True, reduction="none").sum(-1)
    wd = hp.v_weight_decay * delta.norm(dim=-1) / v_init_norm ** 2
    return nll + kl + wd


@torch.no_grad()
def clamp_(delta: torch.Tensor, v_init: torch.Tensor, factor: float) -> None:
    """Project δ back onto the ball ‖δ‖ <= factor·‖v_init‖ (in place)."""
    max_norm = factor * v_init.norm()
    if delta.norm() > max_norm:
        delta.mul_(max_norm / delta.norm())


def loss_terms(model, arch, layer: int, batch: RowBatch, local: torch.Tensor, deltas: torch.Tensor,
               hp: ROMEHyperParams) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Per active case (deltas [A, H]): the target NLL [A] and the KL prompt's next-token log-probs
    [A, V]; also the MLP outputs before δ at the bare-template rows, {active index: [H]}."""
    nll = deltas.new_zeros(deltas.shape[0])
    kl_parts: list = [None] * deltas.shape[0]
    pre_init = {}
    for sub, h, pre in grouped_forward(model, arch, layer, batch, local, deltas, hp.row_groups):
        pre_init.update({c: pre[r] for c, r in zip(sub.init_case.tolist(), sub.init_row.tolist())})
        lab_logp = torch.log_softmax(logits_from_hidden(model, arch, h[sub.lab_row, sub.lab_pos]), -1)
        tok_nll = -lab_logp.gather(1, sub.lab_id[:, None])[:, 0]
        nll = nll.index_add(0, sub.lab_case, (tok_nll * sub.lab_weight).to(nll.dtype))
        kl_h = h[sub.kl_row, sub.index[sub.kl_row]]
        for c, logp in zip(sub.kl_case.tolist(), torch.log_softmax(logits_from_hidden(model, arch, kl_h), -1)):
            kl_parts[c] = logp
    return nll, torch.stack(kl_parts), pre_init


@dataclass
class VResult:
    v_init: torch.Tensor  # MLP output at the bare template's subject-last token
    delta: torch.Tensor
    v_star: torch.Tensor  # v_init + delta
    k_star: torch.Tensor  # down_proj input at the bare prompt's subject-last token
    out_star: torch.Tensor  # down_proj output there
    right_vector: torch.Tensor  # (v* − out*) / (k*·u)
    losses: list[float]  # loss at every forward (the last one is never back-propagated)
    n_updates: int
    stopped_early: bool


@dataclass
class _CaseRun:
    """One case's optimisation state."""
    delta: torch.Tensor  # leaf, requires grad
    opt: torch.optim.Optimizer
    v_init: torch.Tensor | None = None
    kl_init: torch.Tensor | None = None  # log p_0 on the KL prompt
    losses: list[float] = field(default_factory=list)
    n_updates: int = 0
    stopped: bool = False
    done: bool = False


def work_dtype(model) -> torch.dtype:
    dt = next(model.parameters()).dtype
    return torch.float32 if dt in (torch.float16, torch.bfloat16) else dt  # δ as the reference: never half


@contextlib.contextmanager
def frozen(model):
    """No parameter gradients (only δ is optimised); the caller's requires_grad flags are restored."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def compute_v(model, tok, arch, layer: int, requests: Sequence[dict], u: torch.Tensor,
              templates: Sequence[str], hp: ROMEHyperParams, device) -> list[VResult]:
    """Optimise v* for all `requests` together; u: [B, key_dim] left vectors."""
    with frozen(model):
        return _compute_v(model, tok, arch, layer, requests, u, templates, hp, device)


def _compute_v(model, tok, arch, layer, requests, u, templates, hp, device) -> list[VResult]:
    dtype, pad_id = work_dtype(model), pad_id_of(tok)
    batch = build_batch([case_rows(tok, r, templates, hp) for r in requests], pad_id, device, dtype)
    batch = prepare_batch(model, arch, layer, batch, hp, pad_id)
    hidden = arch.module(model, "down_proj", layer).out_features
    runs = []
    for _ in requests:
        delta = torch.zeros(hidden, dtype=dtype, device=device, requires_grad=True)
        runs.append(_CaseRun(delta=delta, opt=torch.optim.Adam([delta], lr=hp.v_lr)))
    for it in range(hp.v_num_grad_steps):
        active = [b for b, run in enumerate(runs) if not run.done]
        if not active:
            break
        last = it == hp.v_num_grad_steps - 1
        loss = _step_loss(model, arch, layer, batch, runs, active, hp, dtype, first=it == 0, grad=not last)
        update = _record(runs, active, loss.detach().tolist(), hp.early_stop_loss, last)
        if update:
            _update(runs, [active[j] for j in update], loss[update], hp.clamp_norm_factor)
    return _right_vectors(model, tok, arch, layer, requests, u, runs, device, dtype, hp.key_batch_rows)


def _step_loss(model, arch, layer, batch, runs, active, hp, dtype, first: bool, grad: bool) -> torch.Tensor:
    """v_objective of every active case at their current δ (the first call also records v_init, p_0)."""
    local = case_map(len(runs), active, batch.ids.device)
    with torch.set_grad_enabled(grad):
        d = torch.stack([runs[b].delta for b in active])
        nll, kl_logp, pre_init = loss_terms(model, arch, layer, batch, local, d, hp)
        if first:  # all cases are active at the first forward, where δ = 0
            for c, v in pre_init.items():
                runs[active[c]].v_init = v.to(dtype).clone()
            for j, b in enumerate(active):
                runs[b].kl_init = kl_logp[j].detach().clone()
        kl_init = torch.stack([runs[b].kl_init for b in active])
        v_norm = torch.stack([runs[b].v_init.norm() for b in active])
        return v_objective(nll, kl_logp, kl_init, d, v_norm, hp)


def _record(runs, active, values, early_stop_loss, last: bool) -> list[int]:
    """Log each active case's loss and mark the stopped and finished ones; return the (active-list)
    indices of the cases to update."""
    update = []
    for j, b in enumerate(active):
        run = runs[b]
        run.losses.append(values[j])
        if early_stop_loss is not None and values[j] < early_stop_loss:
            run.done = run.stopped = True
        elif last:
            run.done = True
        else:
            update.append(j)
    return update


def _update(runs, cases: list[int], loss: torch.Tensor, clamp_factor: float) -> None:
    """One Adam step and clamp for each of `cases` (loss: their losses, in that order)."""
    for b in cases:
        runs[b].opt.zero_grad(set_to_none=True)
    loss.sum().backward()  # δ_b only reaches case b's rows: each gets its own loss's gradient
    for b in cases:
        runs[b].opt.step()
        runs[b].n_updates += 1
        clamp_(runs[b].delta, runs[b].v_init, clamp_factor)


def _right_vectors(model, tok, arch, layer, requests, u, runs, device, dtype, batch_rows) -> list[VResult]:
    k_star, out_star = read_rows(model, tok, arch, layer, bare_rows(tok, requests), device, batch_rows,
                                 outputs=True)
    results = []
    for b, run in enumerate(runs):
        delta = run.delta.detach().clone()
        v_star = run.v_init + delta
        ks, os_ = k_star[b].to(dtype), out_star[b].to(dtype)
        denom = torch.dot(ks.double(), u[b].to(dtype).double())
        right = ((v_star - os_).double() / denom).to(dtype)
        results.append(VResult(v_init=run.v_init, delta=delta, v_star=v_star, k_star=ks, out_star=os_,
                               right_vector=right, losses=run.losses, n_updates=run.n_updates,
                               stopped_early=run.stopped))
    return results
