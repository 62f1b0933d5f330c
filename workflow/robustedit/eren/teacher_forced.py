"""EREN under the teacher-forced protocol: the same token metrics ROME's rows have, on the same suite items.

    scored = teacher_force(results, editors, reader)   # method -> items with exact_match@1 etc. added

EREN answers in two steps, and only the answer can be teacher-forced; the route is EREN's own:
- **Route** (by generation, as EREN runs): step 1 when the reader answered from the top-k notes, step 2
  when it fell back to answering closed-book (it said "unanswerable", nothing was retrieved, or, for
  EREN+score, the top note scored below the threshold). The item's `step` and `note_ids` record it.
- **Answer prompt**: the route's prompt, exactly as the reader saw it: step 1's prompt with the same
  notes in the same order, or the closed-book prompt.
- **Edit items** (in scope): target_new is teacher-forced after the answer prompt (post) and after the
  closed-book prompt (pre, the unedited reader): `exact_match@1` (every answer token is the argmax),
  `token_mean_acc@1`.
- **Locality items**: the true object (locality_ground_truth) after the answer prompt, each token's argmax
  compared with the argmax after the closed-book prompt: `locality_agreement@1`, as ROME's locality
  compares the edited and the unedited model. An item EREN sent to step 2 agrees by construction.
How an answer is read after a prompt (chat template, seq2seq decoder) is robustedit.eren.reader_scoring's.
prob_compare@1 is not computed: it would score every alternative target too (twice the forwards).
"""
from __future__ import annotations

from typing import Mapping, Sequence

from ..errors import RecordError
from ..evaluate.suite import metric_values
from ..metrics import TokenScores
from .editor import ErenEditor
from .reader_scoring import score_answers

TF_METRICS = ("exact_match", "token_mean_acc")  # EREN's teacher-forced summaries (locality_agreement@1 beside)


def answer_prompt(editor: ErenEditor, item: dict, notes: Sequence[str]) -> str:
    """The prompt EREN answered the item from: step 1's with its retrieved notes, or the closed-book one."""
    if item["step"] == 1:
        return editor.step1_prompt(item["input"], [notes[i] for i in item["note_ids"]])
    return editor.closed_book_prompt(item["input"])


def _where(item: dict) -> str:
    return f"case_id {item['id']} ({item['group']}, {item['input'][:40]!r}): "


def teacher_force(results: Mapping[str, Sequence[dict]], editors: Mapping[str, ErenEditor],
                  reader) -> dict[str, list[dict]]:
    """Each method's scored suite items (robustedit.eren.evaluate.evaluate_items; each with its `target`)
    with the teacher-forced fields added: target_ids, argmax_ids, token_logprobs and one value per metric
    key (post), and the same under "pre" for the closed-book reader. Each distinct (prompt, target) pair
    is scored once for all methods."""
    plan: dict[str, list[tuple[tuple[str, str], tuple[str, str]]]] = {}  # method -> (pre pair, post pair)
    pairs: dict[tuple[str, str], str] = {}  # (prompt, target) -> where, in first-seen order
    for method, items in results.items():
        editor = editors[method]
        notes = editor.notebook.notes if editor.notebook is not None else []
        plan[method] = []
        for it in items:
            if "target" not in it:
                raise RecordError(f"{_where(it)}no target to teacher-force")
            pre = (editor.closed_book_prompt(it["input"]), it["target"])
            post = (answer_prompt(editor, it, notes), it["target"])
            pairs.setdefault(pre, _where(it))
            pairs.setdefault(post, _where(it))
            plan[method].append((pre, post))
    keys = list(pairs)
    target_ids, scores = score_answers(reader, [p for p, _ in keys], [t for _, t in keys], [pairs[k] for k in keys])
    scored = {k: (ids, s) for k, ids, s in zip(keys, target_ids, scores)}
    return {method: _with_metrics(results[method], plan[method], scored) for method in results}


def _with_metrics(items: Sequence[dict], plan, scored) -> list[dict]:
    if not items:
        return []
    ids, pre, post = [], [], []
    for it, (pre_pair, post_pair) in zip(items, plan):
        (pre_ids, pre_score), (post_ids, post_score) = scored[pre_pair], scored[post_pair]
        if pre_ids != post_ids:  # the answer is read after the same template suffix, so this is a tokenizer surprise
            raise RecordError(f"{_where(it)}the answer {it['target']!r} tokenises differently after the closed-book "
                              "and the step-1 prompt, so their argmaxes cannot be compared")
        ids.append(pre_ids)
        pre.append(pre_score)
        post.append(post_score)

    def as_scores(phase):
        return TokenScores.from_lists(ids, [s.argmax_ids for s in phase], [s.logprobs for s in phase])

    reference = as_scores(pre).argmax_ids  # the closed-book reader's argmax: locality's reference
    values = {name: metric_values(as_scores(phase), None, reference) for name, phase in (("pre", pre), ("post", post))}

    def record(name: str, phase: list, j: int) -> dict:
        return {"argmax_ids": phase[j].argmax_ids, "token_logprobs": phase[j].logprobs,
                **{k: v[j] for k, v in values[name].items()}}
    return [{**it, "target_ids": ids[j], **record("post", post, j), "pre": record("pre", pre, j)}
            for j, it in enumerate(items)]
