"""Run EREN on the project's robustness suite (the ROME/REP case records).

From a case (subject, prompt, target_new, target_true, neighborhood_prompts,
subject_rephrases{id,ood}, shuffled_subjects{id,ood}, long_context{eval}) we build:
- the edit statement: prompt + " " + target_new;
- edit queries, scored by whether the reader's answer matches target_new (`answer_matches`):
  the original prompt; the prompt with the subject replaced by each subject rephrase and each
  shuffled subject (ID and OOD halves kept apart); long_context["eval"] + " " + prompt;
- locality queries, the neighbourhood prompts, scored by whether the output is unchanged relative
  to the unedited model (equal normalised outputs).
The caller decides what the notebook holds (one case's statement, or all cases' at once).
"""
from __future__ import annotations

from typing import Sequence

from ..data.perturb import replace_subject
from ..errors import RecordError
from .answers import answer_matches, same_output
from .editor import ErenEditor
from .evaluate import EvalResult, evaluate_items
from .notebook import clean_statement

EDIT_GROUPS = ("original", "subject_rephrase_id", "subject_rephrase_ood", "shuffled_subject_id",
               "shuffled_subject_ood", "long_context")


def _get(case: dict, key: str, typ: type, where: str):
    if key not in case:
        raise RecordError(f"{where}: missing field {key!r}")
    if not isinstance(case[key], typ):
        raise RecordError(f"{where}: field {key!r} should be {typ.__name__}, got {type(case[key]).__name__}")
    return case[key]


def _halves(case: dict, key: str, where: str) -> dict[str, list[str]]:
    value = _get(case, key, dict, where)
    out = {}
    for half in ("id", "ood"):
        items = value.get(half)
        if not isinstance(items, list) or any(not isinstance(x, str) for x in items):
            raise RecordError(f"{where}: {key}.{half} should be a list of strings")
        out[half] = items
    return out


def edit_statement(case: dict) -> str:
    where = f"case_id {case.get('case_id', '?')}"
    return _get(case, "prompt", str, where) + " " + _get(case, "target_new", str, where)


def case_queries(case: dict) -> dict[str, list[str]]:
    """Queries of one case by group: the EDIT_GROUPS (edit queries) and "neighborhood" (locality)."""
    where = f"case_id {case.get('case_id', '?')}"
    subject = _get(case, "subject", str, where)
    prompt = _get(case, "prompt", str, where)
    rephrases = _halves(case, "subject_rephrases", where)
    shuffles = _halves(case, "shuffled_subjects", where)
    long_ctx = _get(case, "long_context", dict, where)
    if not isinstance(long_ctx.get("eval"), str):
        raise RecordError(f"{where}: long_context.eval should be a string")
    neighborhood = _get(case, "neighborhood_prompts", list, where)
    return {
        "original": [prompt],
        "subject_rephrase_id": [replace_subject(prompt, subject, s, f"{where}: ") for s in rephrases["id"]],
        "subject_rephrase_ood": [replace_subject(prompt, subject, s, f"{where}: ") for s in rephrases["ood"]],
        "shuffled_subject_id": [replace_subject(prompt, subject, s, f"{where}: ") for s in shuffles["id"]],
        "shuffled_subject_ood": [replace_subject(prompt, subject, s, f"{where}: ") for s in shuffles["ood"]],
        "long_context": [long_ctx["eval"] + " " + prompt],
        "neighborhood": [str(p) for p in neighborhood],
    }


def robustness_items(cases: Sequence[dict]) -> list[dict]:
    """Evaluation items (in-scope edit queries with gold target_new, out-of-scope neighbourhood)."""
    items = []
    for case in cases:
        own = clean_statement(edit_statement(case), f"case_id {case.get('case_id', '?')}")
        for group, texts in case_queries(case).items():
            in_scope = group != "neighborhood"
            for text in texts:
                item = {"id": case.get("case_id"), "group": group, "in_scope": in_scope, "input": text,
                        "own_note": own}
                if in_scope:
                    item["gold"] = case["target_new"]
                    item["true_answer"] = case.get("target_true")
                items.append(item)
    return items


def evaluate_robustness(cases: Sequence[dict], editor: ErenEditor, unedited: ErenEditor | None = None) -> EvalResult:
    """ES per query group (answer matches target_new) and locality (output unchanged)."""
    return evaluate_items(robustness_items(cases), editor, unedited,
                          correct=lambda out, gold: answer_matches(out, gold), unchanged=same_output)
