"""EREN as edits accumulate: after the N-th edit its notebook holds the first N edit statements.

    per_n = eren_checkpoints(ordered, [1, 10, 50, 107], encoder, reader, settings)   # {N: per-case records}

EREN edits no weight, so "sequential" means the notebook grows in the edit order; the question is whether
retrieval and the reader's relevance check hold up as notes crowd each other. After N edits, the scored
cases are up to `n_cases` of the first N (those with the lowest seeded rank: a uniform sample of the first N,
and consecutive checkpoints share most of theirs), each asked its whole suite (robustedit.eren.robustness,
the same items as the parameter methods) by generation, then teacher-forced
(robustedit.eren.teacher_forced), so the sequential table reads EREN's exact_match@1 beside ROME's.
The reader generates each distinct prompt once across all checkpoints (robustedit.eren.evaluate.MemoReader):
closed-book answers never change, and a step-1 prompt with the same notes in the same order is not
generated again.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..eren.editor import ErenEditor
from ..eren.evaluate import MemoReader, evaluate_methods
from ..eren.notebook import Notebook
from ..eren.robustness import edit_statement, per_case_items, robustness_items
from ..eren.teacher_forced import teacher_force
from ..errors import ConfigError
from ..seeding import derive_seed

METHOD = "eren"  # two-step EREN (robustedit.eren.editor.METHODS), the paper's


@dataclass(frozen=True)
class ErenSettings:
    k: int  # notes the reader sees (eren.k)
    index: str  # eren.index
    faiss_device: str  # eren.faiss_device
    groups: tuple[str, ...]  # the suite's columns (eren.suite.groups)
    long_id_passages: int | None  # eval.long_id_passages
    n_cases: int  # cases scored per checkpoint (eval.sequential.eren.n_cases)
    seed: int  # the scored cases' ranks


def scored_cases(done: Sequence[dict], n_cases: int, seed: int) -> list[dict]:
    """The (up to) n_cases of `done` with the lowest seeded rank, in edit order. A case's rank is a seeded hash
    of its id alone, so this is a uniform sample of the first N, and a case stays scored as N grows until new
    cases outrank it (one left out is never scored later)."""
    if n_cases < 1:
        raise ConfigError(f"eval.sequential.eren.n_cases={n_cases} must be >= 1")
    rank = {str(c["case_id"]): derive_seed(seed, "sequential eren case", str(c["case_id"])) for c in done}
    keep = set(sorted(rank, key=lambda cid: (rank[cid], cid))[:n_cases])
    return [c for c in done if str(c["case_id"]) in keep]


def eren_checkpoints(ordered: Sequence[dict], counts: Sequence[int], encoder, reader,
                     settings: ErenSettings) -> dict[int, list[dict]]:
    """{N: per-case scored items} (robustedit.eren.robustness.per_case_items) with the notebook holding the first
    N cases' statements; each item carries both protocols' fields (generation, and the teacher-forced
    exact_match@1 etc. with the closed-book reader under "pre")."""
    memo = MemoReader(reader)  # across checkpoints: every distinct prompt is generated once
    out = {}
    for n in counts:
        done = list(ordered[:n])
        notebook = Notebook(encoder, index=settings.index, faiss_device=settings.faiss_device)
        notebook.add([edit_statement(c) for c in done])
        items = robustness_items(scored_cases(done, settings.n_cases, settings.seed), settings.groups,
                                 settings.long_id_passages)
        result = evaluate_methods(items, memo, notebook, "qa", [METHOD], settings.k)[METHOD]
        editor = ErenEditor(memo, notebook, "qa", METHOD, settings.k)  # the routes' prompts, as EREN built them
        out[n] = per_case_items(teacher_force({METHOD: result.items}, {METHOD: editor}, reader)[METHOD])
    return out
