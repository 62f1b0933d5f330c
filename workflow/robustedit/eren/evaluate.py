"""Edit success (ES), behaviour preservation (BP) and their harmonic mean (EQ), as EREN's Table 3.

- ES = % of in-scope inputs answered with the new target (QA: `answer_matches`; FEVER: the output's
  yes/no label equals the gold label).
- BP = % of out-of-scope inputs whose output is unchanged relative to the unedited model, i.e. the
  same reader answering closed-book (QA: equal normalised outputs; FEVER: equal yes/no/unknown labels).
- EQ = 2·ES·BP / (ES + BP), 0 when both are 0.
All edits are in the notebook at once. Every function returns per-item records and a summary.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from ..errors import ConfigError
from .answers import answer_matches, fever_label, same_output
from .data import edit_statements, subsample
from .editor import DEFAULT_K, SCORE_GATED, ErenEditor
from .encoder import Encoder
from .notebook import Notebook, clean_statement
from .reader import MAX_NEW_TOKENS, Reader


@dataclass
class EvalResult:
    items: list[dict]  # one record per evaluated input
    summary: dict  # ES, BP, EQ (percent) and counts


def edit_quality(es: float, bp: float) -> float:
    """EQ: harmonic mean of ES and BP (same unit as the inputs)."""
    return 0.0 if es + bp == 0 else 2 * es * bp / (es + bp)


def _pct(flags: Sequence[bool]) -> float | None:
    return None if not flags else 100.0 * sum(flags) / len(flags)


def summarize(items: Sequence[dict]) -> dict:
    """ES over in-scope items' `correct`, BP over out-of-scope items' `unchanged`, EQ, plus diagnostics."""
    ins = [it for it in items if it["in_scope"]]
    outs = [it for it in items if not it["in_scope"]]
    es, bp = _pct([it["correct"] for it in ins]), _pct([it["unchanged"] for it in outs])
    summary = {"ES": es, "BP": bp,
               "EQ": None if es is None or bp is None else edit_quality(es, bp),
               "n_in_scope": len(ins), "n_out_of_scope": len(outs),
               "fallback_rate_in_scope": _pct([it["step"] == 2 for it in ins]),
               "fallback_rate_out_of_scope": _pct([it["step"] == 2 for it in outs]),
               "own_note_retrieved_in_scope": _pct([it["own_note_retrieved"] for it in ins]),
               "ES_unedited": _pct([it["correct_unedited"] for it in ins])}
    in_groups = list(dict.fromkeys(it["group"] for it in ins))
    if len(in_groups) > 1:  # e.g. the robustness suite's original / rephrased / shuffled / long-context queries
        for group in in_groups:
            summary[f"ES_{group}"] = _pct([it["correct"] for it in ins if it["group"] == group])
    for group in dict.fromkeys(it["group"] for it in outs):
        summary[f"BP_{group}"] = _pct([it["unchanged"] for it in outs if it["group"] == group])
    return summary


def _own_notes(item: dict) -> list:
    """The item's own notes: one cleaned statement, or several (a record with a list of statements)."""
    own = item["own_note"]
    return own if isinstance(own, list) else [own]


def evaluate_items(items: list[dict], editor: ErenEditor, unedited: ErenEditor | None,
                   correct: Callable[[str, str], bool], unchanged: Callable[[str, str], bool],
                   closed_book: Mapping[str, str] | None = None) -> EvalResult:
    """Answer every item's `input` with the editor and the unedited model, then score it.

    Items need: id, group, in_scope, input, gold (in-scope), own_note (the cleaned edit statement).
    The unedited model's closed-book outputs are reused as the editor's step-2 outputs (same prompt,
    greedy decoding), so a fallback answer equals the unedited answer by construction.
    `closed_book` (query -> unedited output) supplies outputs already computed, e.g. for another method.
    """
    if editor.method != "unedited" and (editor.notebook is None or len(editor.notebook) == 0):
        raise ConfigError("the editor's notebook is empty: add the edit statements before evaluating")
    if unedited is None:
        unedited = ErenEditor(editor.reader, None, editor.task, "unedited")
    if unedited.method != "unedited" or unedited.task != editor.task:
        raise ConfigError("`unedited` must be an ErenEditor with method='unedited' and the editor's task")
    queries = [it["input"] for it in items]
    unique = list(dict.fromkeys(queries))
    base = dict(zip(unique, unedited.closed_book(unique, closed_book)))
    answers = editor.answer(queries, closed_book=base)
    notes = editor.notebook.notes if editor.notebook is not None else []
    out = []
    for it, ans in zip(items, answers):
        rec = {**it, "output": ans.output, "step": ans.step, "step1_output": ans.step1_output,
               "note_ids": ans.note_ids, "top_score": ans.top_score, "unedited_output": base[it["input"]],
               "own_note_retrieved": any(notes[i] in _own_notes(it) for i in ans.note_ids)}
        if it["in_scope"]:
            rec["correct"] = correct(ans.output, it["gold"])
            rec["correct_unedited"] = correct(rec["unedited_output"], it["gold"])
        else:
            rec["unchanged"] = unchanged(ans.output, rec["unedited_output"])
        out.append(rec)
    return EvalResult(out, summarize(out))


# ---- CounterFact-Hard ------------------------------------------------------------------------
def counterfact_hard_items(records: Sequence[dict]) -> list[dict]:
    """In-scope: the edit_scope questions (gold = new answer). Out-of-scope: unrelated.neighbor_subj
    (other subjects, same relation) and unrelated.same_subj (same subject, other relations)."""
    items = []
    for rec in records:
        own = clean_statement(rec["edit_statement"], f"record id {rec['id']}")
        for j, (q, a) in enumerate(rec["edit_scope"]):
            items.append({"id": rec["id"], "group": "edit_scope", "in_scope": True, "input": q, "gold": a,
                          "true_answer": rec["edit_scope_true_ans"][j], "own_note": own})
        for group in ("neighbor_subj", "same_subj"):
            for q in rec["unrelated"][group]:
                items.append({"id": rec["id"], "group": group, "in_scope": False, "input": q, "own_note": own})
    return items


def qa_items(records: Sequence[dict]) -> list[dict]:
    """Items of QA records in EREN's format (robustedit.eren.data.check_qa): in-scope the edit_scope
    questions (gold = the new answer or its aliases; true_answer when given), out-of-scope the unrelated
    questions by group (a plain list: group "unrelated"). own_note: the cleaned statement, or the list of
    them when edit_statement is a list (own_note_retrieved: any of them retrieved). On CounterFact-Hard
    records the same items as counterfact_hard_items."""
    items = []
    for rec in records:
        stmt = rec["edit_statement"]
        where = f"record id {rec['id']}"
        own = ([clean_statement(s, f"{where} edit_statement[{j}]") for j, s in enumerate(stmt)]
               if isinstance(stmt, list) else clean_statement(stmt, where))
        true = rec.get("edit_scope_true_ans")
        for j, (q, a) in enumerate(rec["edit_scope"]):
            item = {"id": rec["id"], "group": "edit_scope", "in_scope": True, "input": q, "gold": a}
            if true is not None:
                item["true_answer"] = true[j]
            items.append({**item, "own_note": own})
        unrelated = rec.get("unrelated") or {}
        groups = unrelated.items() if isinstance(unrelated, dict) else [("unrelated", unrelated)]
        for group, questions in groups:
            for q in questions:
                items.append({"id": rec["id"], "group": group, "in_scope": False, "input": q, "own_note": own})
    return items


def evaluate_counterfact_hard(records: Sequence[dict], editor: ErenEditor,
                              unedited: ErenEditor | None = None) -> EvalResult:
    return evaluate_items(counterfact_hard_items(records), editor, unedited,
                          correct=lambda out, gold: answer_matches(out, gold), unchanged=same_output)


# ---- FEVER -----------------------------------------------------------------------------------
def fever_items(edits: Sequence[dict], checks: Sequence[dict]) -> list[dict]:
    """In-scope: the edit records' claims (gold = yes/no). Out-of-scope: the check records' claims."""
    items = []
    for rec in edits:
        own = clean_statement(rec["edit_statement"], f"record id {rec['id']}")
        for claim, label in rec["edit_scope"]:
            items.append({"id": rec["id"], "group": "edit_scope", "in_scope": True, "input": claim,
                          "gold": label, "own_note": own})
    for rec in checks:
        for claim, _ in rec["edit_scope"]:
            items.append({"id": rec["id"], "group": "out_of_scope", "in_scope": False, "input": claim,
                          "own_note": None})
    return items


def evaluate_fever(edits: Sequence[dict], checks: Sequence[dict], editor: ErenEditor,
                   unedited: ErenEditor | None = None) -> EvalResult:
    return evaluate_items(fever_items(edits, checks), editor, unedited,
                          correct=lambda out, gold: fever_label(out) == gold,
                          unchanged=lambda a, b: fever_label(a) == fever_label(b))


# ---- several methods on the same items -------------------------------------------------------
def scorers(task: str) -> tuple[Callable[[str, str], bool], Callable[[str, str], bool]]:
    """(correct(output, gold), unchanged(output, unedited_output)) for a task, as the runners use them."""
    if task == "qa":
        return (lambda out, gold: answer_matches(out, gold)), same_output
    if task == "nli":
        return (lambda out, gold: fever_label(out) == gold), (lambda a, b: fever_label(a) == fever_label(b))
    raise ConfigError(f"unknown EREN task {task!r}; use 'qa' or 'nli'")


class MemoReader:
    """A reader that generates each (prompt, budget) once and then repeats its output: greedy decoding
    makes that the same answer (up to the rounding of another batch's padding), so EREN+score, whose
    step-1 prompts are EREN's, costs no generation when EREN runs before it."""

    def __init__(self, reader: Reader):
        self.reader, self.cache = reader, {}

    def generate(self, prompts: Sequence[str], max_new_tokens: int = MAX_NEW_TOKENS) -> list[str]:
        todo = list(dict.fromkeys(p for p in prompts if (p, max_new_tokens) not in self.cache))
        if todo:
            outs = self.reader.generate(todo, max_new_tokens=max_new_tokens)
            if len(outs) != len(todo):
                raise RuntimeError(f"reader returned {len(outs)} outputs for {len(todo)} prompts")
            self.cache.update(((p, max_new_tokens), o) for p, o in zip(todo, outs))
        return [self.cache[(p, max_new_tokens)] for p in prompts]


def evaluate_methods(items: list[dict], reader: Reader, notebook: Notebook | None, task: str,
                     methods: Sequence[str], k: int = DEFAULT_K,
                     score_threshold: float | None = None) -> dict[str, EvalResult]:
    """Evaluate each method on the same items and notebook; the reader's closed-book outputs (the
    unedited method, and every step-2 fallback) are generated once and shared by all methods, and so is
    every step-1 prompt two methods share (MemoReader). `score_threshold` is eren_score's (and only its)."""
    if (SCORE_GATED in methods) != (score_threshold is not None):
        raise ConfigError(f"score_threshold is needed exactly when the methods {list(methods)} include "
                          f"{SCORE_GATED!r}; got {score_threshold!r}")
    reader = MemoReader(reader)
    unedited = ErenEditor(reader, None, task, "unedited", k)
    unique = list(dict.fromkeys(it["input"] for it in items))
    base = dict(zip(unique, unedited.closed_book(unique)))
    correct, unchanged = scorers(task)
    out = {}
    for method in methods:
        gate = score_threshold if method == SCORE_GATED else None
        editor = unedited if method == "unedited" else ErenEditor(reader, notebook, task, method, k, gate)
        result = evaluate_items(items, editor, unedited, correct, unchanged, closed_book=base)
        result.summary.update(method=method, k=k, n_notes=0 if notebook is None else len(notebook))
        if gate is not None:
            result.summary["score_threshold"] = gate
        out[method] = result
    return out


# ---- one-call runners ------------------------------------------------------------------------
def build_editor(statements: Sequence[str], encoder: Encoder | None, reader: Reader, task: str, method: str,
                 k: int = DEFAULT_K, index: str = "flat", faiss_device: str = "cpu") -> ErenEditor:
    """An editor whose notebook holds all `statements` (none for method='unedited')."""
    if method == "unedited":
        return ErenEditor(reader, None, task, method, k)
    if encoder is None:
        raise ConfigError(f"eren.method={method!r} needs an encoder")
    notebook = Notebook(encoder, index=index, faiss_device=faiss_device)
    notebook.add(statements)
    return ErenEditor(reader, notebook, task, method, k)


def run_counterfact_hard(records: Sequence[dict], encoder: Encoder | None, reader: Reader, method: str = "eren",
                         k: int = DEFAULT_K, index: str = "flat", max_edits: int | None = None,
                         seed: int = 0) -> EvalResult:
    """Subsample (seeded) to max_edits records, put all their statements in one notebook, evaluate."""
    records = subsample(records, max_edits, seed)
    editor = build_editor(edit_statements(records), encoder, reader, "qa", method, k, index)
    result = evaluate_counterfact_hard(records, editor)
    result.summary.update(method=method, k=k, n_edits=len(records))
    return result


def run_fever(edits: Sequence[dict], checks: Sequence[dict], encoder: Encoder | None, reader: Reader,
              method: str = "eren", k: int = DEFAULT_K, index: str = "flat", max_edits: int | None = None,
              seed: int = 0) -> EvalResult:
    """As run_counterfact_hard; max_edits subsamples the edit half and the check half alike."""
    edits = subsample(edits, max_edits, seed, "eren_fever_edits")
    checks = subsample(checks, max_edits, seed, "eren_fever_checks")
    editor = build_editor(edit_statements(edits), encoder, reader, "nli", method, k, index)
    result = evaluate_fever(edits, checks, editor)
    result.summary.update(method=method, k=k, n_edits=len(edits))
    return result
