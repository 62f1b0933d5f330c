"""Evaluate edits on CounterFact robustness cases and summarise them into the paper's table columns.

    per_case = evaluate_cases(model, tok, arch, cases, edits, batch_size=32, device="cpu", mode="batched")
    table = summarise(per_case, metric="exact_match", aggregation="micro")   # REP paper's table

`mode="sequential"` applies each case's edit to the weights, scores its items and restores the weights;
`mode="batched"` scores many cases' items per forward with every row carrying its own case's edit
(EditBatch.for_rows). Both give the same item scores (up to float rounding of W + v uᵀ vs W x + v uᵀx).

Every item is scored before the edit too (the "pre" phase, always batched across cases, the same in
both modes): that is the locality reference and the unedited baseline. With `alternatives=True` each
item's alternative target is also scored, which ROME's prob_compare needs (about twice the compute).

With `generation=GenerationSpec(...)` every item also gets the generation protocol's fields, in both
phases: its greedy continuation, decoded from the teacher-forced forward's KV cache (decoding.py), and
the generation metrics (continuations.py). generation.generate_cases computes the same fields on its own.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import torch

from ..batching import eos_ids_of
from ..edits import EditBatch, NoEdit, RankOneEditBatch
from ..errors import ConfigError, RecordError
from ..metrics import TokenScores, aggregate, get_metric, metrics_of
from .continuations import GenerationSpec, phase_fields, pre_continuations, stop_rule
from .encoding import ItemScore, encode_item
from .items import GROUPS, build_items
from .scoring import Greedy, score_items

MODES = ("batched", "sequential")
EVAL_PHASES = ("post", "pre")  # after the edit, before it (the unedited model)


def as_edit_batch(model, arch, edits, n_cases: int, device) -> EditBatch:
    """Accept an EditBatch, a list of RankOneEdit/None (one per case), or None (no edits)."""
    if edits is None:
        batch = NoEdit(n_cases)
    elif isinstance(edits, EditBatch):
        batch = edits
    else:
        batch = RankOneEditBatch(model, arch, edits, device)
    if len(batch) != n_cases:
        raise ConfigError(f"{len(batch)} edits given for {n_cases} cases")
    return batch


def _encode_cases(tok, cases: Sequence[dict], alternatives: bool, max_length: int | None,
                  long_id_passages: int | None = None):
    """Flat list of rows (case index, item index, kind, EncodedItem); kind is 'target' or 'alternative'."""
    items_per_case, rows = [], []
    for ci, case in enumerate(cases):
        items = build_items(case, long_id_passages)
        items_per_case.append(items)
        for j, it in enumerate(items):
            where = f"case_id {case['case_id']} ({it.group} item {j}): "
            rows.append((ci, j, "target", encode_item(tok, it.prompt, it.target, where, max_length)))
            if alternatives:
                rows.append((ci, j, "alternative", encode_item(tok, it.prompt, it.alternative, where, max_length)))
    return items_per_case, rows


def _pre_from_results(previous: Sequence[dict], cases: Sequence[dict], items_per_case, rows,
                      generation: GenerationSpec | None) -> list[ItemScore]:
    """Reuse the pre-edit scores (and continuations) of an earlier evaluate_cases run on the same cases."""
    if len(previous) != len(cases):
        raise ConfigError(f"pre_from has {len(previous)} cases, evaluating {len(cases)}")
    out = []
    for ci, j, kind, _ in rows:
        prev = previous[ci]
        if prev["case_id"] != cases[ci]["case_id"] or len(prev["items"]) != len(items_per_case[ci]):
            raise ConfigError(f"pre_from case {ci} (case_id {prev['case_id']}) does not match "
                              f"case_id {cases[ci]['case_id']}")
        item = prev["items"][j]
        if (item["prompt"], item["target"]) != (items_per_case[ci][j].prompt, items_per_case[ci][j].target):
            raise ConfigError(f"pre_from case_id {prev['case_id']} item {j} has a different prompt or target")
        key = "token_logprobs" if kind == "target" else "alt_token_logprobs"
        if key not in item["pre"]:
            raise ConfigError("pre_from was evaluated without alternatives")
        ids = item["pre"]["argmax_ids"] if kind == "target" else item["pre"]["alt_argmax_ids"]
        out.append(ItemScore(list(ids), list(item["pre"][key])))
    if generation is not None:
        pairs = [(it.prompt, it.target) for items in items_per_case for it in items]
        flat = iter(pre_continuations(previous, [c["case_id"] for c in cases], pairs, generation.recorded()))
        out = [replace(sc, continuation=next(flat)) if kind == "target" else sc
               for (_, _, kind, _), sc in zip(rows, out)]
    return out


def metric_values(target: TokenScores, alternative: TokenScores | None, reference: torch.Tensor) -> dict:
    """Every registered teacher-forced metric's per-item values (those needing an alternative only with one)."""
    values = {}
    for key, metric in metrics_of("teacher_forced").items():
        if "alternative" in metric.needs and alternative is None:
            continue
        values[key] = metric(target, alternative=alternative, reference_argmax=reference).tolist()
    return values


def _phase_record(scores: list[ItemScore], alt_scores: list[ItemScore] | None, metrics: dict, j: int) -> dict:
    rec = {"argmax_ids": scores[j].argmax_ids, "token_logprobs": scores[j].logprobs}
    if alt_scores is not None:
        rec["alt_argmax_ids"] = alt_scores[j].argmax_ids
        rec["alt_token_logprobs"] = alt_scores[j].logprobs
    rec.update({k: v[j] for k, v in metrics.items()})
    return rec


def evaluate_cases(model, tok, arch, cases: Sequence[dict], edits, batch_size: int, device,
                   mode: str = "batched", *, alternatives: bool = True, pre_from: Sequence[dict] | None = None,
                   max_length: int | None = None, pack: bool = True,
                   long_id_passages: int | None = None, generation: GenerationSpec | None = None) -> list[dict]:
    """Per case {"case_id", "items": [...]}; per item: group, prompt, target, alternative, target_ids,
    the post-edit argmax_ids, token_logprobs (alt_* too with alternatives), one value in [0, 1] per
    metric key (e.g. "exact_match@1"), and the same under "pre" for the unedited model.

    edits: an EditBatch, a list with one RankOneEdit (or None) per case, or None for no edits.
    pre_from: the result of an earlier call on the same cases, to reuse its pre-edit scores.
    pack: score an item and its alternative in one row (scoring.score_items); False = a row each.
    long_id_passages: how many held passages long_id evaluates (None = all).
    Groups are those of `build_items` (long_id: the held passages REP may train on; long_ood: the
    unseen "eval" passage, the REP paper's "Long").
    generation: also continue every item greedily (module docstring); needs pack.
    """
    if mode not in MODES:
        raise ConfigError(f"unknown evaluation mode {mode!r}; use one of {MODES}")
    edit_batch = as_edit_batch(model, arch, edits, len(cases), device)
    items_per_case, rows = _encode_cases(tok, cases, alternatives, max_length, long_id_passages)
    encoded = [r[3] for r in rows]
    row_case = [r[0] for r in rows]
    case_rows: list[list[int]] = [[] for _ in cases]  # row indices of each case, in item order
    for k, ci in enumerate(row_case):
        case_rows[ci].append(k)

    greedy = None
    if generation is not None:  # budget: the target's tokens + the margin; alternatives are not continued
        greedy = Greedy([len(r[3].target_ids) + generation.margin if r[2] == "target" else None for r in rows],
                        eos_ids_of(model), stop_rule(tok, generation))
    if pre_from is not None:
        pre = _pre_from_results(pre_from, cases, items_per_case, rows, generation)
    else:
        pre = score_items(model, arch, encoded, batch_size, device, pack=pack, greedy=greedy)
    if isinstance(edit_batch, NoEdit) and pre_from is None:
        post = pre  # nothing is edited and pre is this model's: the post phase is the pre phase, not a second pass
    elif mode == "batched":
        post = score_items(model, arch, encoded, batch_size, device, edit_batch.for_rows, row_case, pack=pack,
                           greedy=greedy)
    else:
        post = [None] * len(rows)
        for ci in range(len(cases)):
            own = replace(greedy, budgets=[greedy.budgets[k] for k in case_rows[ci]]) if greedy else None
            with edit_batch.for_case(ci):
                scored = score_items(model, arch, [encoded[k] for k in case_rows[ci]], batch_size, device, pack=pack,
                                     greedy=own)
            for k, s in zip(case_rows[ci], scored):
                post[k] = s
    results = [_case_result(case, items_per_case[ci],
                            [(rows[k][2], rows[k][3], pre[k], post[k]) for k in case_rows[ci]], alternatives,
                            tok if generation is not None else None)
               for ci, case in enumerate(cases)]
    if generation is not None:
        results = [{**r, "generation": generation.recorded()} for r in results]
    return results


def _case_result(case: dict, items: list, rows: list, alternatives: bool, tok=None) -> dict:
    """rows: (kind, EncodedItem, pre ItemScore, post ItemScore) of this case, in item order. With `tok`, the
    target rows' continuations are scored by the generation metrics."""
    continued = tok is not None

    def pick(kind: str, what: int) -> list:
        return [r[what] for r in rows if r[0] == kind]

    target_ids = [list(e.target_ids) for e in pick("target", 1)]
    alt_ids = [list(e.target_ids) for e in pick("alternative", 1)]

    def as_scores(ids, scores):
        return TokenScores.from_lists(ids, [s.argmax_ids for s in scores], [s.logprobs for s in scores])

    reference = as_scores(target_ids, pick("target", 2)).argmax_ids  # the unedited model's argmax
    phase = {}
    for name, what in (("pre", 2), ("post", 3)):
        targets, alts = pick("target", what), (pick("alternative", what) if alternatives else None)
        metrics = metric_values(as_scores(target_ids, targets), as_scores(alt_ids, alts) if alts else None, reference)
        phase[name] = (targets, alts, metrics)
    out_items = []
    for j, it in enumerate(items):
        rec = {"group": it.group, "prompt": it.prompt, "target": it.target, "alternative": it.alternative,
               "target_ids": target_ids[j]}
        if alternatives:
            rec["alt_target_ids"] = alt_ids[j]
        rec.update(_phase_record(*phase["post"], j))
        rec["pre"] = _phase_record(*phase["pre"], j)
        out_items.append(rec)
    out = {"case_id": case["case_id"], "items": out_items}
    if continued:  # the generation protocol's fields (as generation.merge_protocols adds generate_cases' fields)
        for item, pre, post in zip(out_items, pick("target", 2), pick("target", 3)):
            item.update(phase_fields(tok, post.continuation, item["target"], pre.continuation))
            item["pre"].update(phase_fields(tok, pre.continuation, item["target"], pre.continuation))
    return out


def summarise(per_case: Sequence[dict], metric: str = "exact_match", aggregation: str = "micro", *,
              locality_metric: str = "locality_agreement", stage: str = "post") -> dict:
    """Percentages per table column (= item group). The locality column uses `locality_metric`
    (agreement with the unedited model, as REP and EasyEdit), every other column `metric`. A column
    without items in any case (e.g. shuffle_ood when every subject is one token) is omitted.
    `stage`: the evaluation phase summarised, "post" (edited) or "pre" (unedited)."""
    if stage not in EVAL_PHASES:
        raise ConfigError(f"unknown evaluation phase stage={stage!r}; use one of {EVAL_PHASES}")
    main_key, loc_key = get_metric(metric).key, get_metric(locality_metric).key
    columns, counts = {}, {}
    for group in GROUPS:
        key = loc_key if group == "locality" else main_key
        per_group = []
        for case in per_case:
            values = []
            for item in case["items"]:
                if item["group"] != group:
                    continue
                rec = item if stage == "post" else item["pre"]
                if key not in rec:
                    raise RecordError(f"case_id {case['case_id']}: no {key} in the results "
                                      f"(prob_compare needs evaluate_cases(..., alternatives=True))")
                values.append(rec[key])
            per_group.append(values)
        counts[group] = sum(len(v) for v in per_group)
        if counts[group]:
            columns[group] = aggregate(per_group, aggregation)
    return {"metric": main_key, "locality_metric": loc_key, "aggregation": aggregation, "stage": stage,
            "n_cases": len(per_case), "columns": columns, "n_items": counts}
