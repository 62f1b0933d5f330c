"""EREN's data sets (CounterFact-Hard, FEVER, any QA set in EREN's format) and EasyEdit's CounterFact
splits, checked on load.

Loaders take paths and return validated plain records; errors name the file, record and field.

A data set is configured as `eren.data.<name>: <file>` or `eren.data.<name>: {file: <file>, kind: qa|fact_check}`
(`dataset_spec`). Its kind is the evaluation protocol, which the records cannot tell: a fact-check file's
claims with yes/no answers are valid QA records, but FEVER's protocol (first half edits, second half
out-of-scope checks, yes/no labels) differs. So it is stated, and a bare file takes its name's default:
`fever` -> fact_check, any other name -> qa (EREN's general format; CounterFact-Hard is one such set).
"""
from __future__ import annotations

import os
from typing import Any, Sequence

from ..errors import RecordError
from ..io import read_json
from ..seeding import py_rng

FEVER_LABELS = ("yes", "no")
KINDS = ("qa", "fact_check")  # the evaluation protocol of a data set
DEFAULT_KINDS = {"fever": "fact_check"}  # a bare file's kind by data-set name; every other name: qa
TASKS = {"qa": "qa", "fact_check": "nli"}  # kind -> the reader's task (prompts and scoring)


def dataset_spec(name: str, value: Any) -> tuple[str, str]:
    """(file, kind) of `eren.data.<name>`: a file name, or {file, kind} (kind optional: the name's default)."""
    where = f"eren.data.{name}"
    if isinstance(value, str):
        file, kind = value, DEFAULT_KINDS.get(name, "qa")
    elif isinstance(value, dict):
        unknown = sorted(set(value) - {"file", "kind"})
        if unknown or not isinstance(value.get("file"), str):
            raise RecordError(f"{where}: expected a file or {{file: <file>, kind: qa|fact_check}}, got {value!r}")
        file, kind = value["file"], value.get("kind", DEFAULT_KINDS.get(name, "qa"))
    else:
        raise RecordError(f"{where}: expected a file or {{file, kind}}, got {type(value).__name__}")
    if kind not in KINDS:
        raise RecordError(f"{where}.kind: {kind!r} is not one of {KINDS}")
    if not file:
        raise RecordError(f"{where}: the file name is empty")
    return file, kind


def _field(rec: dict, key: str, typ: type | tuple, where: str) -> Any:
    if not isinstance(rec, dict):
        raise RecordError(f"{where}: expected an object, got {type(rec).__name__}")
    if key not in rec:
        raise RecordError(f"{where}: missing field {key!r}")
    if not isinstance(rec[key], typ):
        raise RecordError(f"{where}: field {key!r} should be {typ}, got {type(rec[key]).__name__}")
    return rec[key]


def _str_list(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or any(not isinstance(x, str) for x in value):
        raise RecordError(f"{where}: expected a list of strings")
    return value


def _pairs(rec: dict, where: str, aligned_true: bool = True) -> list[tuple[str, str]]:
    """edit_scope as (input, answer) pairs; may be empty (8 CounterFact-Hard records have no in-scope
    questions: their statement is still a note and their unrelated questions still count).
    `aligned_true`: edit_scope_true_ans must have one entry per pair (true in CounterFact-Hard; in
    EREN's FEVER files 1,282 of 2,048 records disagree in length, and the field is not used)."""
    scope = _field(rec, "edit_scope", list, where)
    out = []
    for j, pair in enumerate(scope):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise RecordError(f"{where}: edit_scope[{j}] should be [input, answer], got {pair!r}")
        out.append((pair[0], pair[1]))
    true = _str_list(_field(rec, "edit_scope_true_ans", list, where), f"{where}.edit_scope_true_ans")
    if aligned_true and len(true) != len(out):
        raise RecordError(f"{where}: edit_scope has {len(out)} items but edit_scope_true_ans {len(true)}")
    return out


def check_counterfact_hard(records: Any, source: str = "cfh") -> list[dict]:
    """Validate CounterFact-Hard records (id, edit_statement, edit_scope, edit_scope_true_ans, unrelated)."""
    if not isinstance(records, list):
        raise RecordError(f"{source}: expected a list of records")
    for n, rec in enumerate(records):
        where = _where(source, n, rec)
        _field(rec, "id", int, where)
        _field(rec, "edit_statement", str, where)
        _pairs(rec, where)
        unrelated = _field(rec, "unrelated", dict, where)
        for key in ("neighbor_subj", "same_subj"):
            _str_list(_field(unrelated, key, list, f"{where}.unrelated"), f"{where}.unrelated.{key}")
    return records


def check_fever(records: Any, source: str = "fever") -> list[dict]:
    """Validate FEVER records (id, edit_statement, edit_scope of [claim, yes|no]; edit_scope_true_ans
    must be a list of strings but need not align with edit_scope)."""
    if not isinstance(records, list):
        raise RecordError(f"{source}: expected a list of records")
    for n, rec in enumerate(records):
        where = f"{source}: record {n} (id {rec.get('id') if isinstance(rec, dict) else '?'})"
        _field(rec, "id", int, where)
        _field(rec, "edit_statement", str, where)
        for j, (_, label) in enumerate(_pairs(rec, where, aligned_true=False)):
            if label not in FEVER_LABELS:
                raise RecordError(f"{where}: edit_scope[{j}] label {label!r} is not one of {FEVER_LABELS}")
    return records


def _where(source: str, n: int, rec: Any) -> str:
    return f"{source}: record {n} (id {rec.get('id') if isinstance(rec, dict) else '?'})"


def check_qa(records: Any, source: str = "qa") -> list[dict]:
    """Validate QA records in EREN's format (CounterFact-Hard, EREN's HotpotQA file, one's own):

    - id: integer or string;
    - edit_statement: a statement or a non-empty list of statements (all become notes);
    - edit_scope: [[question, answer], ...] (an answer may be a list of aliases; may be empty);
    - edit_scope_true_ans (optional): the true (pre-edit) answers, one per edit_scope item;
    - unrelated (optional): out-of-scope questions, {group: [question, ...]} or [question, ...]
      (group "unrelated"); none anywhere: BP is not defined (n/a).
    Other fields (subject_name, unrelated_true_ans, type, ...) are ignored.
    """
    if not isinstance(records, list):
        raise RecordError(f"{source}: expected a list of records, got {type(records).__name__}")
    if not records:
        raise RecordError(f"{source}: no records")
    for n, rec in enumerate(records):
        where = _where(source, n, rec)
        _field(rec, "id", (int, str), where)
        if isinstance(rec["id"], bool):
            raise RecordError(f"{where}: field 'id' should be an integer or a string, got bool")
        stmt = _field(rec, "edit_statement", (str, list), where)
        for j, s in enumerate(stmt if isinstance(stmt, list) else [stmt]):
            if not isinstance(s, str) or not s.strip():
                raise RecordError(f"{where}: edit_statement{f'[{j}]' if isinstance(stmt, list) else ''} should be "
                                  f"a non-empty string, got {s!r}")
        if isinstance(stmt, list) and not stmt:
            raise RecordError(f"{where}: edit_statement is an empty list")
        scope = _field(rec, "edit_scope", list, where)
        for j, pair in enumerate(scope):
            ok = isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], str) and pair[0].strip()
            ans = pair[1] if ok else None
            ok = ok and (isinstance(ans, str) or (isinstance(ans, list) and ans
                                                   and all(isinstance(a, str) for a in ans)))
            if not ok:
                raise RecordError(f"{where}: edit_scope[{j}] should be [question, answer or [aliases]], got {pair!r}")
        if "edit_scope_true_ans" in rec:
            true = _field(rec, "edit_scope_true_ans", list, where)
            if len(true) != len(scope):
                raise RecordError(f"{where}: edit_scope has {len(scope)} items but edit_scope_true_ans {len(true)}")
            for j, t in enumerate(true):
                if not (isinstance(t, str) or (isinstance(t, list) and all(isinstance(a, str) for a in t))):
                    raise RecordError(f"{where}: edit_scope_true_ans[{j}] should be a string or a list of strings, "
                                      f"got {t!r}")
        if "unrelated" in rec:
            unrelated = _field(rec, "unrelated", (dict, list), where)
            groups = unrelated.items() if isinstance(unrelated, dict) else [(None, unrelated)]
            for group, questions in groups:
                at = f"{where}.unrelated" + (f".{group}" if group is not None else "")
                if not isinstance(questions, list) or any(not isinstance(q, str) or not q.strip() for q in questions):
                    raise RecordError(f"{at}: expected a list of non-empty question strings, got {questions!r}")
    return records


def load_qa(path: str | os.PathLike) -> list[dict]:
    return check_qa(read_json(path), str(path))


def load_counterfact_hard(path: str | os.PathLike) -> list[dict]:
    return check_counterfact_hard(read_json(path), str(path))


def load_fever(path: str | os.PathLike) -> tuple[list[dict], list[dict]]:
    """(edits, out-of-scope checks): the first half of the file is applied as edits, the second half
    only checks behaviour preservation, as EREN's test_eren.py."""
    records = check_fever(read_json(path), str(path))
    if len(records) % 2:
        raise RecordError(f"{path}: FEVER file must hold an even number of records, has {len(records)}")
    half = len(records) // 2
    return records[:half], records[half:]


def subsample(records: Sequence[dict], n: int | None, seed: int, purpose: str = "eren_subsample") -> list[dict]:
    """A seeded subset of n records in their original order (all records if n is None or >= len)."""
    records = list(records)
    if n is None or n >= len(records):
        return records
    if n < 1:
        raise ValueError(f"max_edits must be >= 1 or None, got {n}")
    keep = sorted(py_rng(seed, purpose, len(records), n).sample(range(len(records)), n))
    return [records[i] for i in keep]


def edit_statements(records: Sequence[dict]) -> list[str]:
    """The edit statements of EREN records (a list-valued statement, as HotpotQA's, is flattened)."""
    out: list[str] = []
    for rec in records:
        s = rec["edit_statement"]
        out.extend(s if isinstance(s, list) else [s])
    return out


# ---- EasyEdit CounterFact (notebook scaling) ------------------------------------------------
EASYEDIT_FIELDS = ("case_id", "prompt", "target_new", "subject", "rephrase_prompt")


def load_counterfact_easyedit(paths: Sequence[str | os.PathLike]) -> list[dict]:
    """Concatenate EasyEdit CounterFact split files, checking the fields the scaling study reads."""
    cases: list[dict] = []
    for path in paths:
        records = read_json(path)
        if not isinstance(records, list):
            raise RecordError(f"{path}: expected a list of records")
        for n, rec in enumerate(records):
            where = f"{path}: record {n}"
            _field(rec, "case_id", int, where)
            for key in EASYEDIT_FIELDS[1:]:
                _field(rec, key, str, f"{where} (case_id {rec['case_id']})")
        cases.extend(records)
    return cases


def scaling_pairs(cases: Sequence[dict]) -> tuple[list[str], list[str]]:
    """(edit statements, queries): statement = prompt + " " + target_new, query = rephrase_prompt."""
    return ([c["prompt"] + " " + c["target_new"] for c in cases], [c["rephrase_prompt"] for c in cases])
