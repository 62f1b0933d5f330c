"""EREN as edits accumulate (robustedit.sequential.eren): the scored sample of the first N cases, and each
checkpoint equal to a fresh EREN run whose notebook holds the first N statements (no memo across checkpoints),
with every distinct prompt generated once over all checkpoints."""
from __future__ import annotations

import pytest

from robustedit.errors import ConfigError
from robustedit.eren.editor import ErenEditor
from robustedit.eren.encoder import HashEncoder
from robustedit.eren.evaluate import evaluate_methods
from robustedit.eren.notebook import Notebook
from robustedit.eren.robustness import SUITE_GROUPS, edit_statement, per_case_items, robustness_items
from robustedit.eren.teacher_forced import teacher_force
from robustedit.sequential.eren import ErenSettings, eren_checkpoints, scored_cases
from test_eren_reader import causal_dirs, load, reader_cfg  # noqa: F401 (fixture)
from test_eren_teacher_forced import case

SUBJECTS = ["Danielle Darrieux", "Anna Karina", "Leon Blum", "Marcel Proust", "Edith Piaf"]
TARGETS = ["English", "Danish", "German", "Italian", "Spanish"]


def test_the_scored_cases_are_a_seeded_sample_that_only_loses_members_to_new_cases():
    cases = [{"case_id": i} for i in range(40)]
    previous = None
    for n in range(1, 41):
        chosen = scored_cases(cases[:n], 8, seed=3)
        ids = [c["case_id"] for c in chosen]
        assert len(ids) == min(n, 8) and ids == sorted(ids)  # edit order kept
        if previous is not None:  # a case left out at N is never scored later
            assert {c for c in ids if c < n - 1} <= previous
        previous = set(ids)
    assert scored_cases(cases, 8, seed=3) == scored_cases(cases, 8, seed=3) != scored_cases(cases, 8, seed=4)
    with pytest.raises(ConfigError, match="n_cases"):
        scored_cases(cases, 0, seed=3)


class CountingReader:
    """The reader, counting the prompts it is asked to generate."""

    def __init__(self, reader):
        self.reader, self.prompts = reader, []

    def generate(self, prompts, max_new_tokens):
        self.prompts += list(prompts)
        return self.reader.generate(prompts, max_new_tokens=max_new_tokens)

    def __getattr__(self, name):  # teacher forcing reads the model, tokenizer and template
        return getattr(self.reader, name)


def test_each_checkpoint_equals_a_fresh_run_on_the_first_n_notes(causal_dirs):  # noqa: F811
    reader = load(causal_dirs["llama"], reader_cfg("tiny-llama", "llama"), 4)
    ordered = [case(i, s, t) for i, (s, t) in enumerate(zip(SUBJECTS, TARGETS))]
    settings = ErenSettings(k=2, index="flat", faiss_device="cpu", groups=SUITE_GROUPS, long_id_passages=1,
                            n_cases=2, seed=5)
    counting = CountingReader(reader)
    got = eren_checkpoints(ordered, [1, 3, 5], HashEncoder(), counting, settings)
    assert sorted(got) == [1, 3, 5]
    fresh_prompts = 0
    for n in (1, 3, 5):
        notebook = Notebook(HashEncoder())
        notebook.add([edit_statement(c) for c in ordered[:n]])
        chosen = scored_cases(ordered[:n], 2, 5)
        items = robustness_items(chosen, SUITE_GROUPS, 1)
        fresh = CountingReader(reader)
        result = evaluate_methods(items, fresh, notebook, "qa", ["eren"], k=2)["eren"]
        fresh_prompts += len(fresh.prompts)
        want = teacher_force({"eren": result.items}, {"eren": ErenEditor(reader, notebook, "qa", "eren", 2)},
                             reader)["eren"]
        assert got[n] == per_case_items(want), n
        assert [c["case_id"] for c in got[n]] == [c["case_id"] for c in chosen]
        assert all(len(it["note_ids"]) == min(n, 2) for c in got[n] for it in c["items"])  # the first N notes only
    # across checkpoints every distinct prompt is generated once (closed-book answers do not change with N)
    assert len(counting.prompts) == len(set(counting.prompts)) < fresh_prompts
