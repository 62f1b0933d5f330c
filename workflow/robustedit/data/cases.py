"""Build the robustness test cases of one split: join, perturb, attach rephrases; filtering is separate."""
from __future__ import annotations


from ..errors import RecordError
from ..seeding import py_rng
from .perturb import long_context, shuffled_subjects, split_id_ood


def attach_perturbations(case: dict, tok, words: list[str], *, seed: int, n_shuffles: int, n_words: int,
                         n_held: int, id_fraction: float, shuffle_join: str = "decode") -> dict:
    """Add shuffled subjects and long contexts, each drawn from its own seeded generator per case."""
    cid = case["case_id"]
    shuffles = shuffled_subjects(tok, case["subject"], n_shuffles, py_rng(seed, "shuffle", cid), join=shuffle_join)
    rng = py_rng(seed, "long_context", cid)
    contexts = [long_context(words, n_words, rng) for _ in range(1 + n_held)]
    return {
        **case,
        "shuffled_subjects": split_id_ood(shuffles, id_fraction),
        "long_context": {"eval": contexts[0], "held": contexts[1:]},
    }


def attach_rephrases(case: dict, rephrases: list[str], source: str, n: int, id_fraction: float) -> dict:
    """Keep at most n rephrases (never the subject itself) and split them into ID/OOD halves.

    The data's own rephrases must be usable (else the record is malformed); an LLM may fail to write
    any, which leaves the case without rephrase items (counted in the split's stats, not hidden)."""
    kept = [r for r in dict.fromkeys(r.strip() for r in rephrases) if r and r != case["subject"]][:n]
    if not kept and source == "dataset":
        raise RecordError(f"case_id {case['case_id']}: no usable subject rephrases ({source})")
    out = {k: v for k, v in case.items() if k != "dataset_subject_rephrases"}
    out["subject_rephrases"] = {**split_id_ood(kept, id_fraction), "source": source}
    return out


