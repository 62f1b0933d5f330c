"""The config keys that no stage's hash covers, each with the reason (robustedit.stages hashes every other
leaf a stage reads; tests/test_stage_hashes.py checks that every leaf of the composed config is one or the
other)."""
from __future__ import annotations

# Keys a stage may read that no hash covers, each with the reason its value cannot change a result.
# "Speed only": the same computation in other batches or bookkeeping, results equal to floating-point rounding
# (batched kernels, summation order: mom2.pt moves ~1e-9 relative between stats.checkpoint_every=2 and 500),
# never another method. Byte-identical reruns need the same values of these, thread count and machine.
NOT_HASHED: dict[str, str] = {
    "hardware.threads": "speed only: torch threads",
    "hardware.batch_size": "speed only: prompts per forward pass (padded rows are masked)",
    "stats.batch_tokens": "speed only: token budget of a forward pass while summing E[kk^T]",
    "stats.checkpoint_every": "speed only: rows per chunk of the same sum (a chunk is length-sorted into "
                              "batches, so like batch_tokens it moves only the rounding)",
    "stats.checkpoint_minutes": "bookkeeping: whether a partial sum is also saved after a chunk; the sum "
                                "itself is bit-identical (tests/test_stats_checkpoints.py)",
    "rome.batch_cases": "speed only: cases optimised together (tests/test_rome_core.py: equal one at a time)",
    "rep.train.key_batch_rows": "speed only: prompts per forward while reading REP's training keys",
    "eren.encoder_batch_size": "speed only: sentences per encoder forward pass",
    "eren.faiss_device": "speed only: exact (flat) search returns the same notes on the CPU or a GPU",
    "data.splits": "job selection: which splits get a cases job, not what a split's cases are",
    "eval.sequential.split": "job selection: which split's sequential_eval job the `sequential` target runs",
    "data.rephrase.cache_dir": "location of the rephrase cache (keyed by backend, model and prompt)",
    "data.rephrase.allow_generate": "a cache miss becomes an error instead of a generation: same cases or none",
    "data.rephrase.api.api_key_env": "the name of the environment variable that holds the API key",
    "data.rephrase.api.timeout_s": "how long a request may take, not what it returns",
}

# Readable by every stage, hashed by none for that: the job's own values (which split or data set;
# Snakemake sets them per job), the folders (where things are; the data files' content is hashed
# instead) and model.name, which places every stage directory under results/<model.name>/ (EREN's
# stages do not read the model; those that do hash model.name with the rest of LOADS_MODEL).
ALWAYS_READABLE = ("job", "paths", "model.name")

# Leaves no stage reads (the rules, the table scripts or wandb do), so no hash covers them. Every leaf of
# the composed config is hashed by some stage, NOT_HASHED or here (tests/test_stage_hashes.py checks it).
READ_BY_NO_STAGE: dict[str, str] = {
    "model.max_length": "read through its interpolations stats.max_length and eval.max_length",
    "model.rep_test_variant": "read through its interpolation in data.split_files.test",
    "model.chat_template": "checked by validate (readers are described by their own conf/model file)",
    "hardware.name": "the hardware preset's label",
    "hardware.gpus": "a Snakemake resource (GPUs a model-loading job requests)",
    "eval.report_split": "which split's summaries the tables gather",
    "eval.splits": "which splits are evaluated (jobs)",
    "analysis.split": "which split the analysis figures analyse (jobs)",
    "rep.sweep_thresholds": "which eval_rep jobs the gate-threshold ablation adds",
    "rep.sweep_splits": "which splits the ablation covers (jobs)",
    "rep.search": "which rep and eval_rep jobs the setting search adds (each setting is hashed as a run)",
    "tracking": "wandb logging of finished results",
}
