"""Load REP's CounterFact splits and join them to the full-schema pool.

REP split records (rep/*.json) carry `case_id`, an index into counterfact_filtered.json (the pool
of 1,400 cases with the full ROME schema). We take the prompt template, relation, CounterFact
paraphrases and neighbourhood prompts from the pool, Patil's DIPPER paraphrases from their own file,
and the 10 subject rephrases from the split when present.
"""
from __future__ import annotations

from typing import Any

from ..errors import RecordError

REP_FIELDS = {"case_id": int, "prompt": str, "subject": str, "target_new": str, "target_true": str}


def require_field(rec: dict, field: str, typ: type, where: str) -> Any:
    if field not in rec:
        raise RecordError(f"{where}: missing field {field!r}")
    val = rec[field]
    if not isinstance(val, typ) or isinstance(val, bool):
        raise RecordError(f"{where}: field {field!r} should be {typ.__name__}, got {type(val).__name__}")
    if typ is str and not val.strip():
        raise RecordError(f"{where}: field {field!r} is empty")
    return val


def nonempty_prompts(prompts: list) -> list[str]:
    """Drop empty prompts and strip the rest: a trailing space (a Patil prompt "IBM Connections. ")
    would merge with the target's leading space under SentencePiece and break teacher forcing."""
    return [p.strip() for p in prompts if isinstance(p, str) and p.strip()]


def dataset_rephrases(rec: dict, where: str) -> list[str]:
    """The record's own subject rephrases (optional `subject_rephrase`: a list of non-empty strings)."""
    rephrases = rec.get("subject_rephrase")
    well_formed = isinstance(rephrases, list) and all(isinstance(s, str) and s.strip() for s in rephrases)
    if rephrases is not None and not well_formed:
        raise RecordError(f"{where}: subject_rephrase must be a list of non-empty strings")
    return list(rephrases or [])


def pool_index(pool: list[dict], source: str) -> dict[int, dict]:
    out = {}
    for i, rec in enumerate(pool):
        where = f"{source} record {i}"
        if not isinstance(rec, dict):
            raise RecordError(f"{where}: expected an object")
        cid = require_field(rec, "case_id", int, where)
        rw = require_field(rec, "requested_rewrite", dict, where)
        for f in ("prompt", "subject"):
            require_field(rw, f, str, f"{where} (case_id {cid}) requested_rewrite")
        for f in ("target_new", "target_true"):
            require_field(require_field(rw, f, dict, f"{where} (case_id {cid}) requested_rewrite"), "str", str,
                 f"{where} (case_id {cid}) requested_rewrite.{f}")
        if "{}" not in rw["prompt"]:
            raise RecordError(f"{where} (case_id {cid}): prompt template {rw['prompt']!r} has no '{{}}'")
        out[cid] = rec
    return out


def pool_to_rep(rec: dict) -> dict:
    """A pool record in the REP split's flat shape (no subject rephrases: the LLM writes them)."""
    rw = rec["requested_rewrite"]
    return {
        "case_id": rec["case_id"],
        "prompt": rw["prompt"].format(rw["subject"]),
        "subject": rw["subject"],
        "target_new": rw["target_new"]["str"],
        "target_true": rw["target_true"]["str"],
    }


def join_case(rep_rec: dict, pool: dict[int, dict], patil: dict[str, list[str]], split: str,
              source: str, position: int) -> dict:
    """One case record of our schema (see README 'Case records') from a REP record + the pool."""
    where = f"{source} record {position}"
    if not isinstance(rep_rec, dict):
        raise RecordError(f"{where}: expected an object, got {type(rep_rec).__name__}")
    vals = {f: require_field(rep_rec, f, t, where) for f, t in REP_FIELDS.items()}
    cid = vals["case_id"]
    where = f"{where} (case_id {cid})"
    if cid not in pool:
        raise RecordError(f"{where}: case_id not found in the CounterFact pool")
    rw = pool[cid]["requested_rewrite"]
    subject, prompt = vals["subject"], vals["prompt"]
    if subject not in prompt:
        raise RecordError(f"{where}: subject {subject!r} not found in prompt {prompt!r}")
    if rw["subject"] != subject or rw["prompt"].format(subject) != prompt:
        raise RecordError(f"{where}: prompt/subject disagree with the pool ({rw['prompt']!r}, {rw['subject']!r})")
    if rw["target_true"]["str"] != vals["target_true"]:
        raise RecordError(f"{where}: target_true {vals['target_true']!r} disagrees with the pool's "
                          f"{rw['target_true']['str']!r}")
    return {
        "case_id": cid,
        "split": split,
        "subject": subject,
        "prompt": prompt,
        "prompt_template": rw["prompt"],
        "relation_id": rw.get("relation_id"),
        "target_new": vals["target_new"],
        "target_true": vals["target_true"],
        # empty strings occur in the source lists (e.g. a Patil paraphrase of case_id 60); they are not prompts
        "paraphrase_prompts": nonempty_prompts(pool[cid].get("paraphrase_prompts", [])),
        "patil_prompts": nonempty_prompts(patil.get(f"{prompt} {vals['target_true']}", [])),
        "neighborhood_prompts": nonempty_prompts(pool[cid].get("neighborhood_prompts", [])),
        "locality_ground_truth": vals["target_true"],
        "dataset_subject_rephrases": dataset_rephrases(rep_rec, where),
        # The split's edit wins; one REP test record (case_id 1201) asks for another new object than the pool.
        "pool_target_new": rw["target_new"]["str"] if rw["target_new"]["str"] != vals["target_new"] else None,
    }
