"""One REP edit end to end: pool -> leak guard -> keys (read once) -> fresh adaptor -> training on cached keys.

Run it after ROME's update is in the weights (the keys are read below the edited weight, so they are the
same either way, but the order mirrors the reference). `u` is ROME's unit left vector C^-1 k̄ / ||C^-1 k̄||.
Every random choice has its own generator derived from (seed, purpose, case_id).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..seeding import py_rng, torch_generator
from .adaptor import AdaptorConfig, adaptor_state, init_params
from .keys import PoolItem, collect_training_keys, pool_from_case
from .train import RepTrainConfig, train_on_keys

DEFAULT_ADAPTOR = AdaptorConfig()  # both configs are frozen dataclasses: safe as shared defaults
DEFAULT_TRAIN = RepTrainConfig()


@dataclass
class RepResult:
    state: dict  # adaptor_state(...): CPU tensors + config, torch.save-able with weights_only
    log: dict  # {"pool": counts per kind, "steps": [...], "gate": {...}}


def training_texts(tok, case: dict, templates: Sequence[str], tcfg: RepTrainConfig,
                   leaks: Callable[[Sequence[int]], bool],
                   negative_texts: Sequence[str] = ()) -> tuple[PoolItem, list[PoolItem], int, list[str]]:
    """What one case trains on: (original item, pool items kept, count of pool items left out, gate-negative
    texts), with `leaks` applied to each text's token ids (see fit_rep_adaptor)."""
    where = f"case_id {case.get('case_id')}: "
    original, pool = pool_from_case(case, templates, long_context_aug=tcfg.long_context_aug,
                                    compat_long_noop=tcfg.compat_long_noop)
    # an out-of-domain subject variant is never trained on, in any context; nor is any scored sequence
    held = set(case.get("subject_rephrases", {}).get("ood", [])) | set(case.get("shuffled_subjects", {}).get("ood", []))
    kept = [it for it in pool if it.variant not in held and not leaks(tok(it.text)["input_ids"])]
    negatives = list(negative_texts) if tcfg.gate_loss_weight > 0 else []  # read only by the gate objective
    for text in negatives:
        if leaks(tok(text)["input_ids"]):
            raise ConfigError(f"{where}gate negative {text[:80]!r} is (or begins, or is begun by) a sequence the "
                              f"evaluation scores for this case; draw negatives from unscored text")
    return original, kept, len(pool) - len(kept), negatives


def fit_rep_adaptor(model: nn.Module, tok, down_proj: nn.Module, case: dict, templates: Sequence[str],
                    u: torch.Tensor, *, leaks: Callable[[Sequence[int]], bool],
                    acfg: AdaptorConfig = DEFAULT_ADAPTOR, tcfg: RepTrainConfig = DEFAULT_TRAIN, seed: int,
                    device="cpu", negative_texts: Sequence[str] = (), whiten: torch.Tensor | None = None) -> RepResult:
    """Train the adaptor of one case (data.cases layout).

    leaks(token_ids): whether a training sequence would train on a held-out sequence the evaluation scores
    for this case (evaluate.leakage.leak_guard(tok, case)). Pool items that leak, or whose subject variant is
    an out-of-domain one (e.g. an in-domain shuffle that equals an out-of-domain rephrase, in any template),
    are left out and counted in the log; a leaking gate negative is an error. `negative_texts`: unrelated
    texts whose every position is a gate negative (read only when tcfg.gate_loss_weight > 0), besides the
    pool prompts' other positions.
    `whiten`: L with ROME's C = L L^T, for tcfg.objective == "distance_whitened"."""
    cid = case.get("case_id")
    where = f"case_id {cid}: "
    original, kept, n_left_out, negatives = training_texts(tok, case, templates, tcfg, leaks, negative_texts)
    with_gate = tcfg.gate_loss_weight > 0
    keys = collect_training_keys(model, tok, down_proj, original, kept, negative_prompts=negatives,
                                 with_gate_data=with_gate, batch_rows=tcfg.key_batch_rows, device=device,
                                 where=where)
    params = init_params(keys.pool.shape[1], acfg, torch_generator(seed, "rep_init", cid), device)
    trained, log = train_on_keys(
        params, acfg, keys, u, tcfg,
        batch_rng=py_rng(seed, "rep_batches", cid),
        dropout_generator=torch_generator(seed, "rep_dropout", cid),
        negative_generator=torch_generator(seed, "rep_gate_negatives", cid),
        whiten=whiten,
    )
    counts = dict(Counter(it.kind for it in kept))
    guard = {"pool_left_out": n_left_out, "negative_texts": len(negatives)}
    return RepResult(adaptor_state(trained, acfg), {"pool": counts, "leak_guard": guard, **log.to_dict()})
