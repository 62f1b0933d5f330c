"""Oracle ceilings of a key-side fix: how far any adaptor of the subject's key could take ROME.

ROME writes W' = W + v uᵀ, which maps its key k* (robustedit.analysis.transfer: the down_proj input at the
subject's last token of the bare prompt) to the edited value. An adaptor such as REP changes only the key a
that a rephrased, shuffled or long-context item produces at its subject's last token. Two oracles replace
that one key, with ROME's edit in the weights, and score the item as the evaluation does (teacher-forced
exact_match@1: every target token is the argmax):

    oracle_k_star   a -> k*                                 the ceiling of any key-side adaptor
    oracle_r_one    a -> a + (uᵀk* - uᵀa) / (uᵀu) · u         the edit's share fixed (r = 1), the rest of a kept

The gap between them is the part of the failure that lies in the rest of W (what W does with the rest of
a); the gap from oracle_k_star to Success is what no key at that position can fix (the other positions and
the context). Both keep every other position's key. `rome_check` scores the item with no replacement: it
equals eval_rome's exact_match@1 on the item up to batching (the evaluation packs and pads rows).

Each item is one unbatched forward of three identical rows (plain, oracle_k_star, oracle_r_one), the
reference-style computation: slow, but only the subject items of the analysed split are scored.
"""
from __future__ import annotations

import functools
from typing import Sequence

import torch
import torch.nn as nn

from ..edits import RankOneEdit, applied
from ..errors import RecordError
from ..evaluate.encoding import encode_item
from ..hooks import capture_input, edit_input
from ..tokens import encode_with_span
from .bootstrap import bootstrap_interval, case_sums, paired_difference
from .transfer import subject_items

ORACLES = ("rome_check", "oracle_k_star", "oracle_r_one")  # the three rows of each item's forward


def replaced_keys(x: torch.Tensor, position: int, k_star: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """down_proj inputs x [3, T, D] of three copies of one item: row 0 kept, row 1's key at `position`
    set to k*, row 2's shifted along u until uᵀa = uᵀk* (computed in float64, cast back)."""
    out = x.clone()
    a = x[2, position].double()
    u64, k64 = u.double(), k_star.double()
    out[1, position] = k_star.to(x.dtype)
    out[2, position] = (a + (u64 @ k64 - u64 @ a) / (u64 @ u64) * u64).to(x.dtype)
    return out


@torch.no_grad()
def oracle_records(model: nn.Module, tok, down_proj: nn.Module, case: dict, edit: RankOneEdit, device, *,
                   long_id_passages: int | None = None) -> list[dict]:
    """One record per subject item of the case (robustedit.analysis.transfer.subject_items order): case_id,
    group, index, prompt and, for each of ORACLES, the exact_match@1 (1.0 / 0.0) and `<name>_logprob`, the
    sum of the target tokens' log-probabilities. `edit` is the case's ROME
    edit on `down_proj`; k* is read from the success prompt on the unedited model."""
    where = f"case_id {case.get('case_id', '?')}: "
    items, _ = subject_items(case, long_id_passages)
    if items[0].group != "success":
        raise RecordError(f"{where}the first item must be the success prompt (k*)")
    u = edit.u.to(device)
    k_star = None
    records = []
    for it in items:
        ids, position = encode_with_span(tok, it.text, *it.span, where)
        enc = encode_item(tok, it.text, it.target, where)
        if list(enc.input_ids[:enc.n_prompt]) != ids:
            raise RecordError(f"{where}{it.group}[{it.index}]: the prompt's ids differ from the scored ones")
        input_ids = torch.tensor([enc.input_ids] * 3, dtype=torch.long, device=device)
        if k_star is None:  # the success item comes first: its key on the unedited model is k*
            with capture_input(down_proj) as cap:
                model(input_ids=input_ids[:1])
            k_star = cap.value[0, position].to(u.dtype)
        replace = functools.partial(replaced_keys, position=position, k_star=k_star, u=u)
        with applied(down_proj, edit), edit_input(down_proj, replace):
            logits = model(input_ids=input_ids).logits
        read = torch.tensor(list(enc.read_positions()), device=logits.device)
        want = torch.tensor(enc.target_ids, device=logits.device)
        at = logits[:, read].float()
        hits = (at.argmax(-1) == want).all(-1).tolist()
        logprob = torch.log_softmax(at, -1).gather(-1, want.expand(3, -1)[..., None])[..., 0].sum(-1).tolist()
        records.append({"case_id": case["case_id"], "group": it.group, "index": it.index, "prompt": it.text,
                        **{name: float(h) for name, h in zip(ORACLES, hits)},
                        **{f"{name}_logprob": lp for name, lp in zip(ORACLES, logprob)}})
    return records


METHODS = ("rome_em", "rep_em", *ORACLES)  # the evaluations' ROME and ROME+REP, then the oracles
# Paired differences (first − second, same cases resampled together): what the oracles add to ROME, and
# whether ROME+REP reaches the single-position ceiling
PAIRS = (("oracle_k_star", "rome_em"), ("oracle_r_one", "rome_em"), ("rep_em", "oracle_k_star"),
         ("oracle_k_star", "oracle_r_one"))


def pair_name(a: str, b: str) -> str:
    return f"{a}-{b}"


def summarise_oracles(rows: Sequence[dict], groups: Sequence[str]) -> list[dict]:
    """Per group: n items and, for each of METHODS, the exact match in percent (micro: over the group's
    items) with its 95% case-level bootstrap interval (`<method>_lo`, `<method>_hi`); for each of PAIRS the
    paired difference `<a>-<b>` with its interval."""
    groups = [g for g in groups if any(r["group"] == g for r in rows)]
    case_ids = list(dict.fromkeys(r["case_id"] for r in rows))
    tables = {}
    for method in METHODS:
        per_case = {c: {g: [] for g in groups} for c in case_ids}
        for r in rows:
            per_case[r["case_id"]][r["group"]].append(float(r[method]))  # 0 / 1; the interval is in percent
        tables[method] = case_sums(list(per_case.items()), groups)
    intervals = {m: bootstrap_interval(t) for m, t in tables.items()}
    intervals.update({pair_name(a, b): paired_difference(tables[a], tables[b]) for a, b in PAIRS})
    out = []
    for g in groups:
        row = {"group": g, "n": sum(r["group"] == g for r in rows)}
        for name, by_group in intervals.items():
            iv = by_group[g]
            row.update({name: iv.value, f"{name}_lo": iv.lo, f"{name}_hi": iv.hi})
        out.append(row)
    return out
