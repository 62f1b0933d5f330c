"""Run EREN on the project's robustness suite (the ROME/REP case records), scored per Table 1 column.

The queries are exactly the prompts of robustedit.evaluate.items.build_items (one definition of the
suite for every method), so the columns mean what they mean for ROME and REP:
    success        the edit prompt                     rephrase_id / _ood  subject rephrases (1st / 2nd half)
    locality       the neighbourhood prompts           shuffle_id / _ood   shuffled subjects (1st / 2nd half)
    long_id        each held passage + " " + prompt    long_ood            the unseen passage + " " + prompt
    paraphrase / patil   CounterFact's / Patil et al.'s rephrased prompts (optional columns)
Each case contributes one note, its edit statement prompt + " " + target_new; the caller decides what
the notebook holds (one case's statement, or all cases' at once).
- Edit queries are scored with `eren_answer_match@1`: the reader's generated answer contains target_new
  as a whole-word span after SQuAD normalisation (robustedit.eren.answers.answer_matches).
- Locality queries are scored with `eren_output_unchanged@1`: the normalised output equals the unedited
  reader's closed-book output.
These two are generation-based, so they are named here rather than in robustedit.metrics, whose registry
holds teacher-forced token metrics.
"""
from __future__ import annotations

from typing import Sequence

from ..errors import ConfigError, RecordError
from ..evaluate.items import GROUPS, build_items
from ..evaluate.suite import summarise
from ..metrics import AGGREGATIONS, aggregate
from .answers import answer_matches, same_output
from .editor import ErenEditor
from .evaluate import EvalResult, evaluate_items
from .notebook import clean_statement
from .teacher_forced import TF_METRICS

EREN_METRIC = "eren_answer_match@1"
EREN_LOCALITY_METRIC = "eren_output_unchanged@1"
# Table 1's robustness columns; paraphrase and patil may be added (eren.suite.groups).
SUITE_GROUPS = ("success", "locality", "rephrase_id", "shuffle_id", "long_id", "rephrase_ood", "shuffle_ood",
                "long_ood")
LOCALITY_GROUP = "locality"
# Table 1 looks summaries up by metric name (scripts/table1.py: exact_match for the teacher-forced rows,
# generation_match for the generation rows). EREN's generation-based scorer is filed under generation_match (the
# block's `metric` names it); its teacher-forced scores under the metrics they are.
GENERATION_KEY = "generation_match"


def _where(case: dict) -> str:
    return f"case_id {case.get('case_id', '?') if isinstance(case, dict) else '?'}"


def edit_statement(case: dict) -> str:
    """The note of a case: prompt + " " + target_new."""
    for key in ("prompt", "target_new"):
        if not isinstance(case.get(key), str):
            raise RecordError(f"{_where(case)}: field {key!r} should be a string")
    return case["prompt"] + " " + case["target_new"]


def check_groups(groups: Sequence[str]) -> tuple[str, ...]:
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or not groups:
        raise ConfigError(f"eren.suite.groups {list(groups)} must be a non-empty subset of {list(GROUPS)}")
    return tuple(groups)


def case_queries(case: dict, groups: Sequence[str] = SUITE_GROUPS,
                 long_id_passages: int | None = None) -> dict[str, list[str]]:
    """Queries of one case by group, in Table 1's column order (build_items validates the case)."""
    groups = check_groups(groups)
    out: dict[str, list[str]] = {g: [] for g in GROUPS if g in groups}
    for item in build_items(case, long_id_passages):
        if item.group in out:
            out[item.group].append(item.prompt)
    return out


def robustness_items(cases: Sequence[dict], groups: Sequence[str] = SUITE_GROUPS,
                     long_id_passages: int | None = None) -> list[dict]:
    """Evaluation items: edit queries (in scope, gold target_new) and locality queries (out of scope), each
    with the `target` Table 1 teacher-forces for it (target_new; locality: the true object)."""
    groups = check_groups(groups)
    items = []
    for case in cases:
        own = clean_statement(edit_statement(case), _where(case))
        for item in build_items(case, long_id_passages):  # Table 1's column order (it validates the case)
            if item.group not in groups:
                continue
            rec = {"id": case["case_id"], "group": item.group, "in_scope": item.group != LOCALITY_GROUP,
                   "input": item.prompt, "own_note": own, "target": item.target}
            if rec["in_scope"]:
                rec["gold"] = case["target_new"]
                rec["true_answer"] = case.get("target_true")
            items.append(rec)
    return items


def evaluate_robustness(cases: Sequence[dict], editor: ErenEditor, unedited: ErenEditor | None = None,
                        groups: Sequence[str] = SUITE_GROUPS, long_id_passages: int | None = None) -> EvalResult:
    """ES per column (answer matches target_new) and locality (output unchanged vs the unedited reader)."""
    return evaluate_items(robustness_items(cases, groups, long_id_passages), editor, unedited,
                          correct=lambda out, gold: answer_matches(out, gold), unchanged=same_output)


def item_value(item: dict, unedited: bool = False) -> float:
    """1.0 / 0.0: answer match for edit queries, unchanged output for locality queries. With
    `unedited`, the unedited reader's closed-book answer is scored (its locality is 1 by definition)."""
    if not item["in_scope"]:
        return 1.0 if unedited else float(item["unchanged"])
    return float(item["correct_unedited" if unedited else "correct"])


def per_case_items(items: Sequence[dict]) -> list[dict]:
    """Scored items grouped by case, in first-seen order: [{"case_id", "items": [...]}]."""
    cases: dict = {}
    for it in items:
        cases.setdefault(it["id"], []).append(it)
    return [{"case_id": cid, "items": its} for cid, its in cases.items()]


def suite_summary(items: Sequence[dict], aggregation: str, unedited: bool = False) -> dict:
    """Percent per Table 1 column, in the format of robustedit.evaluate.suite.summarise (`stage` "post",
    or "pre" with `unedited`: the reader answering closed-book, as the unedited rows of Table 1)."""
    per_case = per_case_items(items)
    columns, counts = {}, {}
    for group in GROUPS:
        values = [[item_value(it, unedited) for it in case["items"] if it["group"] == group] for case in per_case]
        counts[group] = sum(len(v) for v in values)
        if counts[group]:
            columns[group] = aggregate(values, aggregation)
    return {"metric": EREN_METRIC, "locality_metric": EREN_LOCALITY_METRIC, "aggregation": aggregation,
            "stage": "pre" if unedited else "post", "n_cases": len(per_case), "columns": columns,
            "n_items": counts}


def suite_summaries(items: Sequence[dict], teacher_forced: bool) -> dict:
    """Both protocols' blocks of one method's scored items (the teacher-forced ones when computed), keyed
    "<pre|post>/<metric>/<aggregation>" as robustedit.pipeline.evaluate.summaries keys ROME's."""
    per_case = per_case_items(items)
    out = {}
    for stage in ("pre", "post"):
        for agg in AGGREGATIONS:
            out[f"{stage}/{GENERATION_KEY}/{agg}"] = suite_summary(items, agg, unedited=stage == "pre")
            for metric in TF_METRICS if teacher_forced else ():
                out[f"{stage}/{metric}/{agg}"] = summarise(per_case, metric, agg, stage=stage)
    return out
