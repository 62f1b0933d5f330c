"""REP ("Keys to Robust Edits", Robust Edit Pathway): a gated low-rank adaptor on the edited layer's
down_proj input, trained per edit to pull the keys of subject variants towards ROME's key direction u.

    adaptor.py  the adaptor (functional form over a dict of tensors, an nn.Module wrapper, state I/O)
    keys.py     the training pool (subject variants x context templates) and its cached keys
    train.py    training on cached keys (loss, Adam, batch schedule, optional gate objective)
    fit.py      one case end to end (what it trains on, past the evaluation's leak guard)
    apply.py    test-time hooks: one adaptor, per-row adaptors, and a ROME+REP EditBatch
    compose.py  many cases' adaptors acting together on every row (ROME+REP as edits accumulate)
"""
from .adaptor import Adaptor, AdaptorConfig, adaptor_forward, adaptor_state, init_params, load_adaptor_state
from .apply import RepEditBatch, adaptor_hook, batched_adaptor_forward, batched_adaptors, stack_states
from .compose import composed_adaptor_forward, composed_adaptors
from .fit import RepResult, fit_rep_adaptor, training_texts
from .keys import PoolItem, TrainingKeys, build_pool, collect_training_keys, pool_from_case
from .train import RepTrainConfig, TrainLog, batch_schedule, train_on_keys

__all__ = [
    "Adaptor", "AdaptorConfig", "adaptor_forward", "adaptor_state", "init_params", "load_adaptor_state",
    "RepEditBatch", "adaptor_hook", "batched_adaptor_forward", "batched_adaptors", "stack_states",
    "composed_adaptor_forward", "composed_adaptors",
    "RepResult", "fit_rep_adaptor", "training_texts",
    "PoolItem", "TrainingKeys", "build_pool", "collect_training_keys", "pool_from_case",
    "RepTrainConfig", "TrainLog", "batch_schedule", "train_on_keys",
]
