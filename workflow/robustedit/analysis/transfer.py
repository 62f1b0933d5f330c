"""How far ROME's edit transfers to each evaluated key, before and after REP's adaptor.

ROME's edit is W' = W + v uᵀ with v = (v* − W k*) / (uᵀk*) (robustedit.edits.RankOneEdit), so on a key a
it adds (v* − W k*) · r(a) with the transfer ratio

    r(a) = uᵀa / uᵀk*        (k*: the down_proj input at the subject's last token of the bare prompt)

r = 1 at k* itself. REP replaces a by a' = adaptor(a) (test mode, hard gate g > threshold), so r(a') is
the fraction of the edit that fires on the item with the adaptor in place.

Items are those of evaluate.items.build_items, in its order, for every item whose text holds a subject
variant at a known character span: success, rephrase_*/shuffle_* (the subject's first occurrence
replaced, as replace_subject does), long_* (passage + " " + prompt: the span moved by len(passage) + 1),
paraphrase/patil where the original subject occurs (first occurrence; the others are counted as
skipped). Locality items hold another subject and are left out. Keys are read as everywhere else
(tokens.encode_with_span + readout.read_down_proj).

The adapted key is the deterministic one (no dropout): with rep.adaptor.eval_dropout the evaluation's
adapted key is random, and its mean is this one (inverted dropout; the gate reads the undropped key).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import torch
import torch.nn as nn

from ..batching import pad_id_of
from ..errors import RecordError
from ..evaluate.items import GROUPS, build_items
from ..readout import read_down_proj
from ..rep.adaptor import adaptor_forward, gate_values, load_adaptor_state
from ..tokens import encode_with_span, subject_span

SWAPPED = ("rephrase_id", "rephrase_ood", "shuffle_id", "shuffle_ood")  # subject replaced in the prompt
LONG = ("long_id", "long_ood")  # passage + " " + prompt
FOUND = ("paraphrase", "patil")  # the original subject, where it occurs
OUTCOMES = ("success", "failure")  # ROME's exact match on the item: 1 / 0
METRIC = "exact_match@1"  # the per-item metric joined from the evaluation results


@dataclasses.dataclass(frozen=True)
class SubjectItem:
    group: str
    index: int  # position within its group, in build_items order
    text: str  # the evaluated prompt (exactly build_items' Item.prompt)
    span: tuple[int, int]  # character span of the subject variant in `text`
    target: str  # the item's target (build_items' Item.target)


def subject_items(case: dict, long_id_passages: int | None = None) -> tuple[list[SubjectItem], dict[str, int]]:
    """The case's items with a subject span, in build_items order, and per group the count of items
    skipped because the original subject does not occur in them (paraphrase, patil)."""
    where = f"case_id {case.get('case_id', '?')}: "
    items = build_items(case, long_id_passages)
    subject, prompt = case["subject"], case["prompt"]
    start, end = subject_span(prompt, subject, where)
    held = case["long_context"]["held"]
    passages = {"long_id": held if long_id_passages is None else held[:long_id_passages],
                "long_ood": [case["long_context"]["eval"]]}
    variants = {"rephrase_id": case["subject_rephrases"]["id"], "rephrase_ood": case["subject_rephrases"]["ood"],
                "shuffle_id": case["shuffled_subjects"]["id"], "shuffle_ood": case["shuffled_subjects"]["ood"]}
    out, skipped, seen = [], {g: 0 for g in FOUND}, {g: 0 for g in GROUPS}
    for it in items:
        j = seen[it.group]
        seen[it.group] += 1
        if it.group == "success":
            span = (start, end)
        elif it.group in SWAPPED:
            span = (start, start + len(variants[it.group][j]))
        elif it.group in LONG:
            off = len(passages[it.group][j]) + 1
            span = (off + start, off + end)
        elif it.group in FOUND:
            at = it.prompt.find(subject)
            if at < 0:
                skipped[it.group] += 1
                continue
            span = (at, at + len(subject))
        else:  # locality: a neighbour's subject, not this case's
            continue
        if it.group != "success" and it.group not in FOUND and it.prompt[span[0]:span[1]] != (
                variants[it.group][j] if it.group in SWAPPED else subject):
            raise RecordError(f"{where}{it.group}[{j}]: the computed span {span} misses the subject in {it.prompt!r}")
        out.append(SubjectItem(it.group, j, it.prompt, span, it.target))
    return out, skipped


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a @ b) / (a.norm(dim=-1) * b.norm())


@torch.no_grad()
def transfer_records(model: nn.Module, tok, down_proj: nn.Module, case: dict, u: torch.Tensor, state: dict | None,
                     threshold: float, device, *, long_id_passages: int | None = None,
                     batch_rows: int = 32) -> tuple[list[dict], dict[str, int]]:
    """One record per subject item of the case (subject_items order): case_id, group, index, prompt,
    r_before, r_after, gate (soft g(a); None without an adaptor), gate_open (g > threshold), cos_before,
    cos_after (cosines to k*). `state`: the case's adaptor state, or None (then a' = a). Returns the
    records and subject_items' skipped counts. Ratios and cosines are computed in float64."""
    where = f"case_id {case.get('case_id', '?')}: "
    items, skipped = subject_items(case, long_id_passages)
    enc = [encode_with_span(tok, it.text, *it.span, where) for it in items]
    keys = read_down_proj(model, down_proj, [e[0] for e in enc], [e[1] for e in enc], pad_id=pad_id_of(tok),
                          device=device, batch_rows=batch_rows).float()
    if items[0].group != "success":
        raise RecordError(f"{where}the first item must be the success prompt (k*)")
    u = u.to(keys.device).double()
    if u.shape != keys.shape[1:]:
        raise RecordError(f"{where}u has shape {tuple(u.shape)}, the keys {tuple(keys.shape[1:])}")
    k_star = keys[0].double()
    num_before = keys.double() @ u
    denom = num_before[0]  # uᵀk* from the same product, so the success item's r is exactly 1
    if denom == 0:
        raise RecordError(f"{where}uᵀk* = 0: the edit cannot be expressed as a transfer ratio")
    gate, adapted = None, keys
    if state is not None:
        params, cfg = load_adaptor_state(state)
        params = {k: v.to(keys.device) for k, v in params.items()}
        cfg = dataclasses.replace(cfg, eval_dropout=False)  # deterministic: the mean adapted key
        gate = gate_values(params, cfg, keys).double()
        adapted = adaptor_forward(params, cfg, keys, "test", threshold=threshold)
    a, a2 = keys.double(), adapted.double()
    r_before, r_after = num_before / denom, (a2 @ u) / denom
    cos_before, cos_after = _cos(a, k_star), _cos(a2, k_star)
    records = []
    for i, it in enumerate(items):
        g = None if gate is None else float(gate[i])
        records.append({"case_id": case["case_id"], "group": it.group, "index": it.index, "prompt": it.text,
                        "r_before": float(r_before[i]), "r_after": float(r_after[i]), "gate": g,
                        "gate_open": None if g is None else bool(g > threshold),
                        "cos_before": float(cos_before[i]), "cos_after": float(cos_after[i])})
    return records, skipped


def _item_metrics(results: Sequence[dict], label: str) -> dict:
    """(case_id, group, index) -> (prompt, exact_match@1) of an evaluation's results.jsonl rows."""
    out = {}
    for case in results:
        seen: dict[str, int] = {}
        for item in case["items"]:
            j = seen.get(item["group"], 0)
            seen[item["group"]] = j + 1
            if METRIC not in item:
                raise RecordError(f"{label} results: case_id {case['case_id']} item has no {METRIC!r}")
            out[(case["case_id"], item["group"], j)] = (item["prompt"], item[METRIC])
    return out


def join_outcomes(records: Sequence[dict], rome_results: Sequence[dict], rep_results: Sequence[dict]) -> list[dict]:
    """Each record with ROME's and ROME+REP's exact_match@1 on its item (`rome_em`, `rep_em`), the item's
    ROME outcome ("success"/"failure") and the case's ROME edit success (`rome_case_success`: the success
    item). Matched by (case_id, group, index within group); the prompt texts must agree."""
    rome, rep = _item_metrics(rome_results, "eval_rome"), _item_metrics(rep_results, "eval_rep")
    out = []
    for rec in records:
        key = (rec["case_id"], rec["group"], rec["index"])
        for label, table in (("eval_rome", rome), ("eval_rep", rep)):
            if key not in table or table[key][0] != rec["prompt"]:
                raise RecordError(f"{label} results have no item {key} with prompt {rec['prompt']!r} "
                                  f"(rerun the evaluation on the same cases)")
        rome_em, rep_em = rome[key][1], rep[key][1]
        out.append({**rec, "rome_em": rome_em, "rep_em": rep_em, "rome_outcome": OUTCOMES[0 if rome_em >= 1 else 1],
                    "rome_case_success": rome[(rec["case_id"], "success", 0)][1]})
    return out


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    if not values:
        return (math.nan,) * 3
    q = torch.quantile(torch.tensor(values, dtype=torch.float64), torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    return tuple(float(x) for x in q)


def summarise_transfer(rows: Sequence[dict]) -> list[dict]:
    """Per group (GROUPS order) × ROME outcome (per item): n, quartiles (q25, median, q75; linear
    interpolation) of r_before and r_after, the mean gate-open fraction (empty without adaptors), the
    ROME+REP success rate (mean rep_em) and ROME's (mean rome_em, 1 or 0 by construction)."""
    out = []
    for group in [g for g in GROUPS if any(r["group"] == g for r in rows)]:
        domain = group.rsplit("_", 1)[1] if group.endswith(("_id", "_ood")) else ""
        for outcome in OUTCOMES:
            sel = [r for r in rows if r["group"] == group and r["rome_outcome"] == outcome]
            if not sel:
                continue
            row = {"group": group, "domain": domain, "rome_outcome": outcome, "n": len(sel)}
            for col in ("r_before", "r_after"):
                row.update(zip((f"{col}_q25", f"{col}_median", f"{col}_q75"), _quartiles([r[col] for r in sel])))
            opened = [r["gate_open"] for r in sel if r["gate_open"] is not None]
            row["gate_open_frac"] = sum(opened) / len(opened) if opened else None
            row["rep_success"] = sum(r["rep_em"] for r in sel) / len(sel)
            row["rome_success"] = sum(r["rome_em"] for r in sel) / len(sel)
            out.append(row)
    return out


def plot_transfer(rows: Sequence[dict], path, title: str = "") -> None:
    """Box plots of r before and after the adaptor per group, one panel per ROME outcome."""
    from .plots import _pyplot, save_png

    plt = _pyplot()
    groups = [g for g in GROUPS if any(r["group"] == g for r in rows)]
    fig, axes = plt.subplots(len(OUTCOMES), 1, figsize=(max(6.0, 1.2 * len(groups)), 7.0), squeeze=False)
    for ax, outcome in zip(axes[:, 0], OUTCOMES):
        for i, g in enumerate(groups):
            for shift, col, color in ((-0.2, "r_before", "tab:gray"), (0.2, "r_after", "tab:blue")):
                vals = [float(r[col]) for r in rows if r["group"] == g and r["rome_outcome"] == outcome]
                if vals:
                    ax.boxplot([vals], positions=[i + shift], widths=0.35, patch_artist=True, showfliers=False,
                               boxprops={"facecolor": color, "alpha": 0.6}, medianprops={"color": "black"})
        ax.axhline(1.0, color="black", lw=0.6, ls="--")
        ax.axhline(0.0, color="black", lw=0.4)
        ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right")
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.set_ylabel("r = uᵀa / uᵀk*")
        ax.set_title(f"items ROME gets {'right' if outcome == 'success' else 'wrong'} "
                     f"(grey: key a, blue: adapted key a')")
    if title:
        fig.suptitle(title)
    save_png(fig, path)
