"""ROME's right vector (notes §1.5), batched across cases.

Per case: rewriting prompts template.format(prompt) + target prefix (teacher forcing) for every
template, plus the KL prompt "{subject} is a"; δ is added to the edit layer's MLP output at each
prompt's subject-last token; the loss is

    mean_templates[ Σ_t −log p(y_t) / |y| ] + kl_factor·KL(p_cur ‖ p_init) + v_weight_decay·‖δ‖/‖v_init‖²

with logits of the full model; Adam on δ; a case stops once its loss < early_stop_loss; the last
iteration breaks before backward (at most steps−1 updates); after each update ‖δ‖ is clamped to
clamp_norm_factor·‖v_init‖. Then v* = v_init + δ and right = (v* − out*) / (k*·u), with k*, out*
the down_proj input/output at the bare prompt's subject-last token.

Batching: B cases share one forward (B×(n_templates+1) rows, each row carrying its case's δ); each
case has its own leaf δ and its own torch Adam, and a stopped case leaves the batch, so every case
follows exactly the path it would follow alone.

Speed, all exact (tests compare with the plain full forward):
- logits are computed only where a label or the KL distribution is read;
- reuse_lower_layers: the layers below the edit layer do not depend on δ; they run once and their
  output is fed back by temporarily swapping those blocks for a module returning it;
- cache_prefix: tokens before a row's δ position (and before its first label) do not depend on δ
  at any layer; their K/V come from one δ-free pass, and each step runs only the few tokens after
  them, through the model's own forward with past_key_values and explicit position ids.
Masks and position embeddings are always built by the model's own forward.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..batching import right_pad
from ..errors import RecordError
from ..hooks import capture_output, edit_output, run_until, stop_after
from ..tokens import encode_with_span, target_token_ids
from .compute_u import PromptRow, pad_id_of, read_down_proj, templated_prompt, templated_rows, where_of
from .hparams import ROMEHyperParams


@dataclass
class CaseRows:
    rows: list[PromptRow]  # one rewriting row per template, then the KL row
    labels: list[list[tuple[int, int]]]  # per rewriting row: (position whose logits predict, token id)
    n_target: int  # |y|: the NLL divisor


def case_rows(tok, request: dict, templates: Sequence[str], hp: ROMEHyperParams) -> CaseRows:
    where = where_of(request)
    prompt, subject = request["prompt"], request["subject"]
    y = target_token_ids(tok, prompt, request["target_new"], mode=hp.target_mode, where=where)
    rows, labels = [], []
    for t in templates:
        text, s, e = templated_prompt(t, prompt, subject, where)
        if hp.target_mode == "clean":  # token-level teacher forcing: labels sit exactly after the prompt
            prompt_ids, idx = encode_with_span(tok, text, s, e, where)
            ids = prompt_ids + y[:-1]
        else:  # the reference: re-tokenise prompt + decoded prefix, right-align the labels (§2.5 quirk)
            full = text + tok.decode(y[:-1])
            ids, idx = encode_with_span(tok, full, s, e, where)
        if len(ids) < len(y) or idx >= len(ids):
            raise RecordError(f"{where}prompt {text!r} is too short for target {request['target_new']!r}")
        labels.append([(len(ids) - len(y) + j, tid) for j, tid in enumerate(y)])
        rows.append(PromptRow(ids, idx))
    kl_text, s, e = templated_prompt(hp.kl_prompt, subject, subject, where)
    rows.append(PromptRow(*encode_with_span(tok, kl_text, s, e, where)))
    return CaseRows(rows, labels, len(y))


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
    return RowBatch(ids, mask, t(case), t([r.index for r in rows]), t(lr), t(lp), t(li), t(lc), t(lw, dtype),
                    t(kl_row), every, t(init_row), every)


@torch.no_grad()
def prepare_batch(model, arch, layer: int, batch: RowBatch, hp: ROMEHyperParams, pad_id: int) -> RowBatch:
    """One δ-free pass over the full rows: the edit layer's input (reuse_lower_layers) and, with
    cache_prefix, every layer's K/V, then switch to the prefix layout."""
    from transformers import DynamicCache  # a plain (non-sliding) cache keeps every position's K/V

    reuse = hp.reuse_lower_layers and layer > 0
    if not (reuse or hp.cache_prefix):
        return batch
    cache = DynamicCache() if hp.cache_prefix else None
    stop = arch.module(model, "final_norm") if hp.cache_prefix else arch.module(model, "layer", layer - 1)
    with contextlib.ExitStack() as st:
        low = st.enter_context(capture_output(arch.module(model, "layer", layer - 1))) if reuse else None
        st.enter_context(stop_after(stop))
        run_until(model, input_ids=batch.ids, attention_mask=batch.mask, past_key_values=cache,
                  use_cache=cache is not None)
    if not hp.cache_prefix:
        return dataclasses.replace(batch, lower=low.value)
    n_rows, width = batch.ids.shape
    first_label = torch.full((n_rows,), width, dtype=torch.long, device=batch.ids.device)
    first_label.scatter_reduce_(0, batch.lab_row, batch.lab_pos, reduce="amin")
    split = torch.minimum(batch.index, first_label)  # tokens before this never see δ
    length = batch.mask.sum(1)
    p, w = int(split.max()), int((length - split).max())
    src = split[:, None] + torch.arange(w, device=split.device)  # suffix token j of row r is token split_r + j
    real = src < length[:, None]
    src = src.clamp(max=width - 1)
    ids = torch.where(real, batch.ids.gather(1, src), pad_id)
    dst = torch.arange(p, device=split.device)[None, :] - (p - split[:, None])  # right-aligned prefix
    prefix_real = dst >= 0

    def align(x):  # [R, heads, S, d] -> [R, heads, p, d], zeros where a row has no prefix token
        g = x.gather(2, dst.clamp(min=0)[:, None, :, None].expand(-1, x.shape[1], -1, x.shape[3]))
        return g * prefix_real[:, None, :, None].to(g.dtype)

    kv = [(align(lay.keys), align(lay.values)) for lay in cache.layers] if p > 0 else None
    lower = None if low is None else low.value.gather(1, src[..., None].expand(-1, -1, low.value.shape[-1]))
    return dataclasses.replace(
        batch, ids=ids, mask=torch.cat([prefix_real.long(), real.long()], 1), index=batch.index - split,
        lab_pos=batch.lab_pos - split[batch.lab_row], pos=src, lower=lower, prefix_kv=kv, prefix_len=p)


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
        batch.ids[rows, :w], torch.cat([batch.mask[rows, p - p_sel:p], batch.mask[rows, p:p + w]], 1),
        local[batch.case[rows]], batch.index[rows],
        row_map[batch.lab_row[labs]], batch.lab_pos[labs], batch.lab_id[labs], local[batch.lab_case[labs]],
        batch.lab_weight[labs], row_map[batch.kl_row[kls]], local[batch.kl_case[kls]],
        row_map[batch.init_row[inits]], local[batch.init_case[inits]], cut(batch.pos), cut(batch.lower), kv, p_sel)


def case_map(n_cases: int, active: Sequence[int], device) -> torch.Tensor:
    local = torch.full((n_cases,), -1, dtype=torch.long, device=device)
    local[torch.tensor(list(active), dtype=torch.long, device=device)] = torch.arange(len(active), device=device)
    return local


def select_cases(batch: RowBatch, active: Sequence[int]) -> RowBatch:
    """The rows of `active` cases only (renumbered 0..len(active)-1)."""
    local = case_map(batch.kl_row.shape[0], active, batch.ids.device)
    return select_rows(batch, torch.nonzero(local[batch.case] >= 0)[:, 0], local)


def plan_row_groups(lengths: Sequence[int], max_groups: int, overhead: int = 32) -> list[list[int]]:
    """Split rows into <= max_groups forwards of similar length, minimising Σ (rows·longest + overhead)
    token slots (`overhead` prices one extra forward); only cuts where the sorted length changes."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    cuts = [0] + [k for k in range(1, len(order)) if lengths[order[k]] != lengths[order[k - 1]]] + [len(order)]
    cost = lambda a, b: (cuts[b] - cuts[a]) * lengths[order[cuts[b] - 1]] + overhead  # noqa: E731
    best = {(0, 0): (0, None)}  # (groups used, cut index) -> (cost, previous cut index)
    for g in range(1, max_groups + 1):
        for j in range(1, len(cuts)):
            options = [(best[(g - 1, i)][0] + cost(i, j), i) for i in range(j) if (g - 1, i) in best]
            if options:
                best[(g, j)] = min(options)
    g = min((g for g in range(1, max_groups + 1) if (g, len(cuts) - 1) in best),
            key=lambda g: best[(g, len(cuts) - 1)][0])
    groups, j = [], len(cuts) - 1
    while g > 0:
        i = best[(g, j)][1]
        groups.append(sorted(order[cuts[i]: cuts[j]]))
        g, j = g - 1, i
    return groups[::-1]


class _Fixed(nn.Module):
    """Stands in for a decoder block: returns a precomputed hidden state."""

    def __init__(self, hidden: torch.Tensor):
        super().__init__()
        self.hidden = hidden

    def forward(self, *args, **kwargs):
        return self.hidden


@contextlib.contextmanager
def lower_layers_replaced(model, arch, layer: int, hidden: torch.Tensor | None):
    """While active, blocks 0..layer-1 are skipped and block `layer` receives `hidden`."""
    if hidden is None or layer == 0:
        yield
        return
    layers = arch.module(model, "layers")
    saved = [layers[i] for i in range(layer)]
    try:
        for i in range(layer):
            layers[i] = _Fixed(hidden)
        yield
    finally:
        for i, m in enumerate(saved):
            layers[i] = m


def final_hidden(model, arch, layer: int, batch: RowBatch, delta_rows: torch.Tensor):
    """Final-norm output [R, W, H] with delta_rows[r] added to the MLP output at (r, index[r]);
    also the MLP output at those positions before the addition."""
    from transformers import DynamicCache

    ar = torch.arange(batch.ids.shape[0], device=batch.ids.device)
    seen = {}

    def add_delta(out):
        seen["pre"] = out[ar, batch.index].detach()
        return out.index_put((ar, batch.index), delta_rows.to(out.dtype), accumulate=True)

    cache = None
    if batch.prefix_kv is not None:  # a fresh cache each step: the forward appends to it
        cache = DynamicCache()
        for i, (k, v) in enumerate(batch.prefix_kv):
            cache.update(k, v, i)
    norm = arch.module(model, "final_norm")
    with lower_layers_replaced(model, arch, layer, batch.lower), \
            edit_output(arch.module(model, "mlp", layer), add_delta), \
            capture_output(norm, detach=False) as fin, stop_after(norm):
        run_until(model, input_ids=batch.ids, attention_mask=batch.mask, position_ids=batch.pos,
                  past_key_values=cache, use_cache=cache is not None)
    return fin.value, seen["pre"]


def logits_from_hidden(model, arch, h: torch.Tensor) -> torch.Tensor:
    """What the causal-LM head computes from final-norm states (incl. Gemma's optional softcap)."""
    logits = arch.module(model, "lm_head")(h)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def work_dtype(model) -> torch.dtype:
    dt = next(model.parameters()).dtype
    return torch.float32 if dt in (torch.float16, torch.bfloat16) else dt  # δ as the reference: never half


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
    dtype = work_dtype(model)
    batch = build_batch([case_rows(tok, r, templates, hp) for r in requests], pad_id_of(tok), device, dtype)
    batch = prepare_batch(model, arch, layer, batch, hp, pad_id_of(tok))
    n, hidden = len(requests), arch.module(model, "down_proj", layer).out_features
    deltas = [torch.zeros(hidden, dtype=dtype, device=device, requires_grad=True) for _ in range(n)]
    opts = [torch.optim.Adam([d], lr=hp.v_lr) for d in deltas]
    v_init: list = [None] * n
    kl_init: list = [None] * n
    losses: list[list[float]] = [[] for _ in range(n)]
    n_updates, stopped, done = [0] * n, [False] * n, [False] * n
    for it in range(hp.v_num_grad_steps):
        active = [b for b in range(n) if not done[b]]
        if not active:
            break
        last = it == hp.v_num_grad_steps - 1
        local = case_map(n, active, batch.ids.device)
        rows = torch.nonzero(local[batch.case] >= 0)[:, 0]
        lengths = batch.mask[rows, batch.prefix_len:].sum(1).tolist()
        groups = [rows[g] for g in plan_row_groups(lengths, hp.row_groups)]
        with torch.set_grad_enabled(not last):
            d = torch.stack([deltas[b] for b in active])
            nll = d.new_zeros(len(active))
            kl_parts: list = [None] * len(active)
            for group in groups:  # rows of similar length share a forward; cases may span groups
                sub = select_rows(batch, group, local)
                h, pre = final_hidden(model, arch, layer, sub, d[sub.case])
                if it == 0:  # all cases are active at the first forward, where δ = 0
                    for c, r in zip(sub.init_case.tolist(), sub.init_row.tolist()):
                        v_init[active[c]] = pre[r].to(dtype).clone()
                lab_logp = torch.log_softmax(logits_from_hidden(model, arch, h[sub.lab_row, sub.lab_pos]), -1)
                tok_nll = -lab_logp.gather(1, sub.lab_id[:, None])[:, 0]
                nll = nll.index_add(0, sub.lab_case, (tok_nll * sub.lab_weight).to(nll.dtype))
                kl_h = h[sub.kl_row, sub.index[sub.kl_row]]
                for c, logp in zip(sub.kl_case.tolist(), torch.log_softmax(logits_from_hidden(model, arch, kl_h), -1)):
                    kl_parts[c] = logp
            kl_logp = torch.stack(kl_parts)
            if it == 0:
                for j, b in enumerate(active):
                    kl_init[b] = kl_logp[j].detach().clone()
            init = torch.stack([kl_init[b] for b in active])
            # F.kl_div(init, cur, log_target=True) = Σ p_cur (log p_cur − log p_init): "batchmean" over 1 row
            kl = hp.kl_factor * F.kl_div(init, kl_logp, log_target=True, reduction="none").sum(-1)
            v_norm = torch.stack([v_init[b].norm() for b in active])
            wd = hp.v_weight_decay * d.norm(dim=-1) / v_norm ** 2
            loss = nll + kl + wd
        values = loss.detach().tolist()
        update = []
        for j, b in enumerate(active):
            losses[b].append(values[j])
            if hp.early_stop_loss is not None and values[j] < hp.early_stop_loss:
                done[b] = stopped[b] = True
            elif last:
                done[b] = True
            else:
                update.append(j)
        if not update:
            continue
        for j in update:
            opts[active[j]].zero_grad(set_to_none=True)
        loss[update].sum().backward()  # δ_b only reaches case b's rows: each gets its own loss's gradient
        for j in update:
            b = active[j]
            opts[b].step()
            n_updates[b] += 1
            with torch.no_grad():
                max_norm = hp.clamp_norm_factor * v_init[b].norm()
                if deltas[b].norm() > max_norm:
                    deltas[b].mul_(max_norm / deltas[b].norm())
    return _right_vectors(model, tok, arch, layer, requests, u, deltas, v_init, losses, n_updates, stopped,
                          device, dtype, hp.key_batch_rows)


def _right_vectors(model, tok, arch, layer, requests, u, deltas, v_init, losses, n_updates, stopped,
                   device, dtype, batch_rows) -> list[VResult]:
    bare = [templated_rows(tok, r["prompt"], r["subject"], ["{}"], where_of(r))[0] for r in requests]
    k_star, out_star = read_down_proj(model, tok, arch, layer, bare, device, batch_rows, outputs=True)
    results = []
    for b in range(len(requests)):
        delta = deltas[b].detach().clone()
        v_star = v_init[b] + delta
        ks, os_ = k_star[b].to(dtype), out_star[b].to(dtype)
        denom = torch.dot(ks.double(), u[b].to(dtype).double())
        right = ((v_star - os_).double() / denom).to(dtype)
        results.append(VResult(v_init[b], delta, v_star, ks, os_, right, losses[b], n_updates[b], stopped[b]))
    return results
