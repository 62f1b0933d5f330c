"""One REP edit end to end: pool -> keys (read once) -> fresh adaptor -> training on cached keys.

Run it after ROME's update is in the weights (the keys are read below the edited weight, so they are the
same either way, but the order mirrors the reference). `u` is ROME's unit left vector C^-1 k̄ / ||C^-1 k̄||.
Every random choice has its own generator derived from (seed, purpose, case_id).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn

from ..seeding import py_rng, torch_generator
from .adaptor import AdaptorConfig, adaptor_state, init_params
from .keys import collect_training_keys, pool_from_case
from .train import RepTrainConfig, train_on_keys

DEFAULT_ADAPTOR = AdaptorConfig()  # both configs are frozen dataclasses: safe as shared defaults
DEFAULT_TRAIN = RepTrainConfig()


@dataclass
class RepResult:
    state: dict  # adaptor_state(...): CPU tensors + config, torch.save-able with weights_only
    log: dict  # {"pool": counts per kind, "steps": [...], "gate": {...}}


def fit_rep_adaptor(model: nn.Module, tok, down_proj: nn.Module, case: dict, templates: Sequence[str],
                    u: torch.Tensor, *, acfg: AdaptorConfig = DEFAULT_ADAPTOR, tcfg: RepTrainConfig = DEFAULT_TRAIN,
                    seed: int, device="cpu", negative_prompts: Sequence[str] | None = None) -> RepResult:
    """Train the adaptor of one case (data.cases layout). Gate negatives default to the case's
    neighbourhood prompts; they are read only when `tcfg.gate_loss_weight > 0`."""
    cid = case.get("case_id")
    original, pool = pool_from_case(case, templates, long_context_aug=tcfg.long_context_aug,
                                    compat_long_noop=tcfg.compat_long_noop)
    with_gate = tcfg.gate_loss_weight > 0
    if negative_prompts is None:
        negative_prompts = case.get("neighborhood_prompts", [])
    keys = collect_training_keys(model, tok, down_proj, original, pool, negative_prompts=negative_prompts,
                                 with_gate_data=with_gate, batch_rows=tcfg.key_batch_rows, device=device,
                                 where=f"case_id {cid}: ")
    params = init_params(keys.pool.shape[1], acfg, torch_generator(seed, "rep_init", cid), device)
    trained, log = train_on_keys(
        params, acfg, keys, u, tcfg,
        batch_rng=py_rng(seed, "rep_batches", cid),
        dropout_generator=torch_generator(seed, "rep_dropout", cid),
        negative_generator=torch_generator(seed, "rep_gate_negatives", cid),
    )
    counts = dict(Counter(it.kind for it in pool))
    return RepResult(adaptor_state(trained, acfg), {"pool": counts, **log.to_dict()})
