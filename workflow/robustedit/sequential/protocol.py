"""The sequential protocol: edits applied one after another, the suite scored as they accumulate.

    order = edit_order([c["case_id"] for c in cases], seed=0)
    checkpoints = edit_counts([1, 10, 50, "all"], len(cases))
    per_n = run_sequence(model, arch, editor, [cases[i] for i in order], checkpoints, score)

After the N-th edit, `score(model, edited_cases)` sees the model with the first N edits in its weights and
the N cases edited so far (so early edits' retention is scored with the rest). The suite's unedited ("pre")
phase does not depend on N: scored once on the unedited model, it is every checkpoint's reference
(Locality against the unedited model). The weights are restored when the sequence ends or fails.
"""
from __future__ import annotations

import random
from typing import Callable, Sequence, TypeVar

import torch

from ..errors import ConfigError
from ..rome.execute import validate_request
from ..edits import down_proj_restored
from .editors import SequentialEditor

ALL = "all"  # in eval.sequential.n_edits: every case of the split
T = TypeVar("T")


def edit_order(case_ids: Sequence, seed: int) -> list[int]:
    """Indices of the cases in the seeded order their edits are applied (a permutation, its own generator)."""
    order = list(range(len(case_ids)))
    random.Random(seed).shuffle(order)
    return order


def edit_counts(n_edits: Sequence[int | str], n_cases: int) -> list[int]:
    """The checkpoints N (sorted, distinct): "all" is n_cases; a count above n_cases is an error."""
    out = set()
    for n in n_edits:
        count = n_cases if n == ALL else n
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ConfigError(f"eval.sequential.n_edits: {n!r} is neither a positive count nor {ALL!r}")
        if count > n_cases:
            raise ConfigError(f"eval.sequential.n_edits: {count} edits asked for, the split has {n_cases} cases")
        out.add(count)
    if not out:
        raise ConfigError("eval.sequential.n_edits is empty")
    return sorted(out)


def request_of(case: dict) -> dict:
    return {k: case[k] for k in ("case_id", "prompt", "subject", "target_new")}


def check_finite(model, arch, layers: Sequence[int], case_ids: Sequence) -> None:
    for layer in layers:
        if not torch.isfinite(arch.module(model, "down_proj", layer).weight).all():
            raise FloatingPointError(f"the edit of case_id(s) {list(case_ids)} wrote non-finite weights into "
                                     f"layer {layer}; nothing is saved")


def run_sequence(model, arch, editor: SequentialEditor, cases: Sequence[dict], checkpoints: Sequence[int],
                 score: Callable[[object, Sequence[dict]], T], batch: int = 1) -> dict[int, T]:
    """Apply the cases' edits in order, `batch` per update (1: every edit sees all earlier ones; MEMIT and
    AlphaEdit may take several at once), and score after each checkpoint N: {N: score(model, cases[:N])}."""
    if batch < 1 or any(n % batch and n != len(cases) for n in checkpoints):
        raise ConfigError(f"every checkpoint {list(checkpoints)} must be a multiple of the batch of {batch} edits")
    requests = [validate_request(request_of(c), i) for i, c in enumerate(cases)]
    out: dict[int, T] = {}
    with down_proj_restored(model, arch, editor.layers):
        done = 0
        for n in sorted(checkpoints):
            while done < n:
                chunk = requests[done: min(done + batch, n)]
                editor.apply(model, chunk)
                check_finite(model, arch, editor.layers, [r["case_id"] for r in chunk])
                done += len(chunk)
            out[n] = score(model, cases[:n])
    return out
