"""Train one REP adaptor per edit on cached keys (the REP release's `Aggregator.edit` loss and optimiser,
ElliottYan/RobustKeyEdit, with its release-script weights, plus named variants).

Each step takes `batch_size` pool keys (sequentially over a seeded shuffle, reshuffled when the pool
runs out; batch_size=None: every pool key, every step) plus the original prompt's key k*, and minimises

    L = agg_weight * L_agg(a_i)                                 a_i = adaptor_train(k_i)
      + consistency_weight * MSE(adaptor_train(k*), k*)         (mean over D)
      + gate_loss_weight * BCE(gate)                           (optional; 0 in the release)

with Adam (no weight decay); the soft gate and dropout are active. L_agg is `objective` (OBJECTIVES):

    cosine_u           - mean_i a_i/||a_i|| . u        the release: u = ROME's unit left vector C^-1 k* / ||C^-1 k*||
    distance_raw       mean_i ||a_i - k*||^2 / ||k*||^2                 pull the variant keys onto k* itself
    distance_whitened  mean_i ||L^-1 (a_i - k*)||^2 / ||L^-1 k*||^2     the same in ROME's metric, C = L L^T
    edit_share         mean_i relu(1 - r_i)^2,  r_i = u.a_i / u.k*      only the edit's share (ROME's update
                       adds (v* - W k*) r_i to the layer's output); not in the paper, a named variant

The gate BCE is class-balanced: 0.5 * (mean BCE over positives with label 1 + mean BCE over negatives
with label 0), on gate logits; positives are the pool's subject-last keys (and k* itself only with
gate_original_positive, which forces the projection to cancel on k*); negatives are every other position.
Without it, L_tc can be met by shutting the gate on k*, and so on the variant keys near it: gate_detached
lets only the BCE train the gate, and L_agg and L_tc the projection.

`key_dim_reference` (e.g. 11008, LLaMA-2-7B's down_proj input, where the release's values were tuned)
rescales the step size and the consistency weight to the key dimension D (README "REP stages"):
lr * sqrt(ref / D) and consistency_weight * D / ref. None = the values as given.

The reference runs the whole model each step and reads the (detached) keys from a hook; the keys do not
depend on the adaptor, so training on cached keys gives the same parameters (tested), except that its
dropout draws a mask for every position of every prompt and ours only for the rows used.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .adaptor import GATE_KEYS, PROJ_KEYS, AdaptorConfig, adaptor_forward, gate_logits, gate_values
from .keys import TrainingKeys


@dataclass(frozen=True)
class RepTrainConfig:
    steps: int = 10  # num_train_agg_steps (release script)
    lr: float = 5e-4  # agg_lr: Adam learning rate of the projection (A, B)
    gate_lr: float | None = None  # Adam learning rate of the gate parameters; None = lr (reference: one group)
    batch_size: int | None = 15  # agg_batch_size pool items per step (+ the original); None = the whole pool
    agg_weight: float = 1.0  # agg_loss_weight (release script)
    consistency_weight: float = 50000.0  # target_consistency_weight (release script)
    gate_loss_weight: float = 0.0  # explicit gate objective; the release trains the gate only through L_agg
    gate_max_negatives: int | None = None  # subsample gate negatives once (seeded); None = all
    gate_original_positive: bool = True  # k* among the gate positives (only read with gate_loss_weight > 0)
    gate_negative_snippets: int = 0  # WikiText snippets whose every position is a gate negative
    gate_negative_words: int = 24  # words per snippet (about a CounterFact prompt's length, a few times over)
    objective: str = "cosine_u"  # L_agg, one of OBJECTIVES (the release's is cosine_u)
    gate_detached: bool = False  # True: only the gate BCE trains the gate (L_agg and L_tc see it as a constant)
    key_dim_reference: int | None = None  # rescale lr and consistency_weight from this key dim to D; None = as given
    long_context_aug: bool = True  # release: agg_add_long_context=True (with held passages)
    compat_long_noop: bool = False  # True = reference bug: the long-context items are silently dropped
    compat_batch_restart: bool = False  # True = reference: after a reshuffle the next batch restarts at 0
    key_batch_rows: int = 32  # prompts per forward when reading keys (speed only)

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"rep.train.objective={self.objective!r}; use one of {OBJECTIVES}")
        if self.key_dim_reference is not None and self.key_dim_reference < 1:
            raise ConfigError(f"rep.train.key_dim_reference={self.key_dim_reference} must be >= 1 or null")
        if self.steps < 0 or (self.batch_size is not None and self.batch_size < 1):
            raise ConfigError(f"rep.train steps={self.steps} must be >= 0 and batch_size={self.batch_size} >= 1")
        if self.lr <= 0 or (self.gate_lr is not None and self.gate_lr <= 0):
            raise ConfigError(f"rep.train lr={self.lr} and gate_lr={self.gate_lr} must be > 0")
        if self.gate_detached and self.gate_loss_weight <= 0:
            raise ConfigError("rep.train.gate_detached needs gate_loss_weight > 0 (nothing else would train the gate)")
        if self.gate_loss_weight < 0:
            raise ConfigError(f"rep.train gate_loss_weight={self.gate_loss_weight} must be >= 0")

    def to_dict(self) -> dict:
        return asdict(self)


def batch_schedule(n_items: int, batch_size: int | None, steps: int, rng: random.Random,
                   compat_restart: bool = False) -> list[list[int]]:
    """Pool indices per step: consecutive slices of a shuffled order; when the next slice would run past
    the end the order is reshuffled and the slice taken from its start. The reference then resets its
    cursor to 0, repeating that slice on the following step (`compat_restart=True`). batch_size=None:
    every item every step (full batch; `rng` is not used)."""
    if batch_size is None:
        return [list(range(n_items)) for _ in range(steps)]
    order = list(range(n_items))
    rng.shuffle(order)
    index, out = 0, []
    for _ in range(steps):
        if index + batch_size > n_items:
            rng.shuffle(order)
            out.append(order[:batch_size])
            index = 0 if compat_restart else min(batch_size, n_items)
        else:
            out.append(order[index:index + batch_size])
            index += batch_size
    return out


OBJECTIVES = ("cosine_u", "distance_raw", "distance_whitened", "edit_share")


def agg_loss(objective: str, a: torch.Tensor, original: torch.Tensor, u: torch.Tensor,
             whiten: torch.Tensor | None = None) -> torch.Tensor:
    """L_agg of adapted keys a [N, D] (module docstring). `whiten`: lower-triangular L with C = L L^T."""
    if objective == "cosine_u":
        return -((a / a.norm(dim=-1, keepdim=True)) @ u).mean()
    if objective == "distance_raw":
        return ((a - original) ** 2).sum(-1).mean() / (original ** 2).sum()
    if objective == "distance_whitened":
        if whiten is None:
            raise ConfigError("rep.train.objective=distance_whitened needs the whitening factor of ROME's C")
        w = torch.linalg.solve_triangular(whiten, torch.cat([a - original, original[None]]).T, upper=False).T
        return (w[:-1] ** 2).sum(-1).mean() / (w[-1] ** 2).sum()
    if objective == "edit_share":
        return (F.relu(1 - (a @ u) / (original @ u)) ** 2).mean()
    raise ConfigError(f"unknown REP objective {objective!r}; use one of {OBJECTIVES}")


def scaled_rates(tcfg: RepTrainConfig, key_dim: int) -> tuple[float, float | None, float]:
    """(lr, gate_lr, consistency_weight) for keys of dimension key_dim (see key_dim_reference)."""
    if tcfg.key_dim_reference is None:
        return tcfg.lr, tcfg.gate_lr, tcfg.consistency_weight
    step = (tcfg.key_dim_reference / key_dim) ** 0.5
    return (tcfg.lr * step, None if tcfg.gate_lr is None else tcfg.gate_lr * step,
            tcfg.consistency_weight * key_dim / tcfg.key_dim_reference)


def rep_loss(params: dict, cfg: AdaptorConfig, keys: torch.Tensor, original: torch.Tensor, u: torch.Tensor,
             tcfg: RepTrainConfig, generator: torch.Generator | None, consistency_weight: float | None = None,
             whiten: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """L_agg and L_tc on one batch (dropout draws: the pool rows first, then the original). With
    tcfg.gate_detached they train the projection only (the soft gate enters as a constant)."""
    if tcfg.gate_detached:
        params = {k: (v.detach() if k in GATE_KEYS else v) for k, v in params.items()}
    a = adaptor_forward(params, cfg, keys, "train", generator)
    agg = agg_loss(tcfg.objective, a, original, u, whiten)
    a0 = adaptor_forward(params, cfg, original.unsqueeze(0), "train", generator)
    tc = F.mse_loss(a0, original.unsqueeze(0))
    cw = tcfg.consistency_weight if consistency_weight is None else consistency_weight
    return tcfg.agg_weight * agg + cw * tc, {"agg": agg.item(), "consistency": tc.item()}


def gate_bce(params: dict, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    lp, ln = gate_logits(params, pos).squeeze(-1), gate_logits(params, neg).squeeze(-1)
    return 0.5 * (F.binary_cross_entropy_with_logits(lp, torch.ones_like(lp))
                  + F.binary_cross_entropy_with_logits(ln, torch.zeros_like(ln)))


def gate_summary(params: dict, cfg: AdaptorConfig, x: torch.Tensor | None, threshold: float) -> dict | None:
    if x is None or x.shape[0] == 0:
        return None
    with torch.no_grad():
        g = gate_values(params, cfg, x)
    return {"n": int(g.numel()), "mean": g.mean().item(), "min": g.min().item(), "max": g.max().item(),
            "frac_open": (g > threshold).float().mean().item()}


@dataclass
class TrainLog:
    steps: list[dict] = field(default_factory=list)  # per step: loss, agg, consistency, gate, batch size
    gate: dict = field(default_factory=dict)  # final soft-gate values on subject-last keys / gate data
    rates: dict = field(default_factory=dict)  # the lr, gate_lr and consistency weight used (after scaling)

    def to_dict(self) -> dict:
        return {"steps": self.steps, "gate": self.gate, "rates": self.rates}


def train_on_keys(params: dict[str, torch.Tensor], cfg: AdaptorConfig, keys: TrainingKeys, u: torch.Tensor,
                  tcfg: RepTrainConfig, *, batch_rng: random.Random, dropout_generator: torch.Generator | None,
                  negative_generator: torch.Generator | None = None,
                  whiten: torch.Tensor | None = None) -> tuple[dict[str, torch.Tensor], TrainLog]:
    """Train a copy of `params` on cached keys; return (trained parameters, detached, and the log).
    `whiten`: lower-triangular L with ROME's C = L L^T (objective distance_whitened only)."""
    dtype, device = params["lora_A"].dtype, params["lora_A"].device
    d = params["lora_A"].shape[1]
    if u.shape != (d,):
        raise ConfigError(f"target u has shape {tuple(u.shape)}; the adaptor's key dim is {d}")
    u = u.to(device=device, dtype=dtype)
    pool, original = keys.pool.to(device, dtype), keys.original.to(device, dtype)
    pos = neg = None
    if tcfg.gate_loss_weight > 0:
        if not cfg.gate:
            raise ConfigError("rep.train.gate_loss_weight > 0 but the adaptor has no gate")
        if keys.gate_pos is None or keys.gate_neg is None or not len(keys.gate_neg):
            raise ConfigError("rep.train.gate_loss_weight > 0 needs gate positives and negatives")
        pos, neg = keys.gate_pos.to(device, dtype), keys.gate_neg.to(device, dtype)
        if not tcfg.gate_original_positive:
            pos = pos[1:]  # gate_pos[0] is k*
        if tcfg.gate_max_negatives is not None and neg.shape[0] > tcfg.gate_max_negatives:
            if negative_generator is None:
                raise ConfigError("gate_max_negatives needs an explicit negative_generator")
            # drawn on the generator's device (CPU in fit.py: the same subsample on every device)
            pick = torch.randperm(neg.shape[0], generator=negative_generator,
                                  device=negative_generator.device)[:tcfg.gate_max_negatives]
            neg = neg[pick.to(device)]

    if whiten is not None:
        whiten = whiten.to(device, dtype)
    lr, gate_lr, cw = scaled_rates(tcfg, d)
    p = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    groups = [{"params": [p[k] for k in PROJ_KEYS], "lr": lr}]
    if cfg.gate:
        groups.append({"params": [p[k] for k in GATE_KEYS], "lr": gate_lr or lr})
    opt = torch.optim.Adam(groups, weight_decay=0.0)
    log = TrainLog(rates={"lr": lr, "gate_lr": gate_lr or lr, "consistency_weight": cw})
    for step, batch in enumerate(batch_schedule(pool.shape[0], tcfg.batch_size, tcfg.steps, batch_rng,
                                                tcfg.compat_batch_restart)):
        opt.zero_grad()
        loss, parts = rep_loss(p, cfg, pool[batch], original, u, tcfg, dropout_generator, cw, whiten)
        if pos is not None:
            gl = gate_bce(p, pos, neg)
            loss = loss + tcfg.gate_loss_weight * gl
            parts["gate"] = gl.item()
        loss.backward()
        opt.step()
        log.steps.append({"step": step, "loss": loss.item(), "rows": len(batch) + 1, **parts})
    out = {k: v.detach() for k, v in p.items()}
    thr = cfg.threshold
    log.gate = {"threshold": thr, "subject_last": gate_summary(out, cfg, torch.cat([original[None], pool]), thr),
                "positives": gate_summary(out, cfg, pos, thr), "negatives": gate_summary(out, cfg, neg, thr)}
    return out, log
