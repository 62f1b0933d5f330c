"""The evaluation items of one CounterFact robustness case, built once and labelled by group.

Each item is a teacher-forced (prompt, target) pair plus the `alternative` target that ROME's
probability comparison weighs it against. Groups (they are also the summary table's columns):

    success       prompt -> target_new                                  (alternative: target_true)
    locality      each neighborhood prompt -> locality_ground_truth       (alternative: target_new),
                  scored by agreement with the unedited model's argmax
    rephrase_id   prompt with the subject replaced by each in-domain rephrase  -> target_new
    rephrase_ood  the same with the out-of-domain rephrases
    shuffle_id    prompt with the subject replaced by each in-domain shuffled subject -> target_new
    shuffle_ood   the same with the out-of-domain shuffles
    long_id       each long_context["held"] passage + " " + prompt -> target_new. The held passages
                  are the ones REP trains on (when its long-context augmentation is on), so they
                  are in-domain exactly as the first half of the rephrases is; the reference
                  reports the same items as `long_context_held`.
    long_ood      long_context["eval"] + " " + prompt -> target_new: a passage no method sees
                  before evaluation. This is the REP paper's "Long" column (`long_acc`): the
                  reference's long-context augmentation is a no-op, so its "Long" was unseen text.
    paraphrase    each paraphrase prompt -> target_new
    patil         each Patil et al. paraphrased prompt -> target_new

Subjects are replaced on their first occurrence only (robustedit.tokens.replace_subject): the one
ROME reads its key at.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import RecordError
from ..tokens import replace_subject

GROUPS = ("success", "locality", "rephrase_id", "shuffle_id", "long_id",
          "rephrase_ood", "shuffle_ood", "long_ood", "paraphrase", "patil")

REQUIRED_KEYS = ("case_id", "subject", "prompt", "target_new", "target_true", "paraphrase_prompts",
                 "patil_prompts", "neighborhood_prompts", "locality_ground_truth", "subject_rephrases",
                 "shuffled_subjects", "long_context")


@dataclass(frozen=True)
class Item:
    group: str
    prompt: str
    target: str
    alternative: str  # the competing target of ROME's P(target) > P(alternative)


def _field(case: dict, key: str, where: str, kind: type):
    value = case[key]
    if not isinstance(value, kind):
        raise RecordError(f"{where}{key} must be a {kind.__name__}, got {type(value).__name__}")
    return value


def _strings(value, where: str, key: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(s, str) and s.strip() for s in value):
        raise RecordError(f"{where}{key} must be a list of non-empty strings")
    return value


def build_items(case: dict, long_id_passages: int | None = None) -> list[Item]:
    """All items of one case, in the order of GROUPS; raises RecordError naming the case_id.
    long_id_passages: evaluate only the first n held passages for long_id (None = all)."""
    cid = case.get("case_id", "?")
    where = f"case_id {cid}: "
    missing = [k for k in REQUIRED_KEYS if k not in case]
    if missing:
        raise RecordError(f"{where}missing keys {missing}")
    subject = _field(case, "subject", where, str)
    prompt = _field(case, "prompt", where, str)
    new, true = _field(case, "target_new", where, str), _field(case, "target_true", where, str)
    if subject not in prompt:
        raise RecordError(f"{where}subject {subject!r} not found in prompt {prompt!r}")
    rephrases = _field(case, "subject_rephrases", where, dict)
    shuffles = _field(case, "shuffled_subjects", where, dict)
    long_ctx = _field(case, "long_context", where, dict)

    def swapped(group: str, subjects: list[str]) -> list[Item]:
        return [Item(group, replace_subject(prompt, subject, s, where), new, true) for s in subjects]

    def with_context(group: str, passages: list[str]) -> list[Item]:
        return [Item(group, passage + " " + prompt, new, true) for passage in passages]

    items = [Item("success", prompt, new, true)]
    locality_target = _field(case, "locality_ground_truth", where, str)
    items += [Item("locality", p, locality_target, new)
              for p in _strings(case["neighborhood_prompts"], where, "neighborhood_prompts")]
    for split in ("id", "ood"):
        if split not in rephrases or split not in shuffles:
            raise RecordError(f"{where}subject_rephrases and shuffled_subjects need an {split!r} list")
    items += swapped("rephrase_id", _strings(rephrases["id"], where, "subject_rephrases.id"))
    items += swapped("shuffle_id", _strings(shuffles["id"], where, "shuffled_subjects.id"))
    if not isinstance(long_ctx.get("eval"), str) or not long_ctx["eval"].strip():
        raise RecordError(f"{where}long_context.eval must be a non-empty string")
    held = _strings(long_ctx.get("held"), where, "long_context.held")
    items += with_context("long_id", held if long_id_passages is None else held[:long_id_passages])
    items += swapped("rephrase_ood", _strings(rephrases["ood"], where, "subject_rephrases.ood"))
    items += swapped("shuffle_ood", _strings(shuffles["ood"], where, "shuffled_subjects.ood"))
    items += with_context("long_ood", [long_ctx["eval"]])
    items += [Item("paraphrase", p, new, true)
              for p in _strings(case["paraphrase_prompts"], where, "paraphrase_prompts")]
    items += [Item("patil", p, new, true) for p in _strings(case["patil_prompts"], where, "patil_prompts")]
    return items
