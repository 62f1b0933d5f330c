"""Standalone split records in the shape of REP's zsRE split (`rep/test.zsre_*.json`): each record carries
its own locality prompts, so no pool is joined. Any new fact can be written this way (`kind: zsre`).

A record: `case_id, prompt` (the question, subject filled in), `subject, target_new, target_true`,
`locality_prompt` (list; REP's zsRE: one Natural Questions prompt), `locality_ground_truth` (its answer),
optional `subject_rephrase` (list) and `rephrase_prompt` (a paraphrased prompt or a list of them; null in
REP's file). The case has the CounterFact cases' schema (README 'Case records'): no Patil paraphrases, the
locality prompts as neighbourhood prompts, scored the same way (agreement with the unedited model's argmax
on the locality answer's tokens, as REP's `locality.zsre_acc`).
"""
from __future__ import annotations

from ..errors import RecordError
from .counterfact import dataset_rephrases, nonempty_prompts, require_field

ZSRE_FIELDS = {"case_id": int, "prompt": str, "subject": str, "target_new": str, "target_true": str,
               "locality_prompt": list, "locality_ground_truth": str}


def zsre_case(rec: dict, split: str, source: str, position: int) -> dict:
    """One case record of our schema from a standalone (zsRE-shaped) record; errors name file, record, field."""
    where = f"{source} record {position}"
    if not isinstance(rec, dict):
        raise RecordError(f"{where}: expected an object, got {type(rec).__name__}")
    vals = {f: require_field(rec, f, t, where) for f, t in ZSRE_FIELDS.items()}
    where = f"{where} (case_id {vals['case_id']})"
    subject, prompt = vals["subject"], vals["prompt"]
    if subject not in prompt:
        raise RecordError(f"{where}: subject {subject!r} not found in prompt {prompt!r}")
    locality = nonempty_prompts(vals["locality_prompt"])
    if not locality or len(locality) != len(vals["locality_prompt"]):
        raise RecordError(f"{where}: field 'locality_prompt' must be a non-empty list of non-empty strings")
    paraphrases = rec.get("rephrase_prompt")
    paraphrases = [paraphrases] if isinstance(paraphrases, str) else paraphrases or []
    if not isinstance(paraphrases, list) or not all(isinstance(p, str) for p in paraphrases):
        raise RecordError(f"{where}: field 'rephrase_prompt' must be a string, a list of strings or null")
    return {
        "case_id": vals["case_id"],
        "split": split,
        "subject": subject,
        "prompt": prompt,
        "prompt_template": prompt.replace(subject, "{}", 1),
        "relation_id": None,
        "target_new": vals["target_new"],
        "target_true": vals["target_true"],
        "paraphrase_prompts": nonempty_prompts(paraphrases),
        "patil_prompts": [],
        "neighborhood_prompts": locality,
        "locality_ground_truth": vals["locality_ground_truth"],
        "dataset_subject_rephrases": dataset_rephrases(rec, where),
        "pool_target_new": None,
    }
