"""Figure 3 of the REP paper: the edit key against the keys of perturbed prompts.

For each case the key is the edit layer's down_proj input at the subject's last token (as ROME reads
it) for the bare prompt (the *original* key) and for every variant: the prompt with the subject
replaced by each subject rephrase or shuffled subject (in-domain and out-of-domain halves), and each
long-context prompt "{passage} {prompt}" (held passages and the evaluation passage). Items and
subject positions come from REP's own pool builder (rep.keys.build_pool with the bare template), so
these are exactly the keys REP trains and is evaluated on.

Rows compare the original key with each variant (whitened cosine, see whiten.py, and raw cosine);
the baseline is pairs of original keys of different subjects. The PCA (Figure 3, right) projects one
case's whitened keys on their first principal components.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn

from ..batching import pad_id_of
from ..errors import RecordError
from ..readout import read_down_proj
from ..rep.keys import PoolItem, build_pool
from ..rome.compute_u import MomentSolver
from ..tokens import encode_with_span
from .whiten import raw_cosine, whiten, whitened_cosine

PERTURBATIONS = ("rephrase", "shuffle", "long")
BARE = ("{}",)  # the bare template: every variant is read in the prompt itself, as evaluation does


@dataclass
class CaseKeys:
    case_id: object
    subject: str
    original: torch.Tensor  # [D] key of the bare prompt (float32)
    keys: torch.Tensor  # [N, D] keys of the variants, in `kinds` order
    kinds: list[str]  # rephrase / shuffle / long, per variant
    groups: list[str]  # id / ood (rephrases, shuffles) or held / eval (passages), per variant
    variants: list[str]  # the subject string used, or the passage's label for long contexts


def _halves(record: dict | None) -> tuple[list[str], list[str]]:
    record = record or {}
    return list(record.get("id", [])), list(record.get("ood", []))


def case_items(case: dict) -> tuple[PoolItem, list[tuple[str, str, PoolItem]]]:
    """(original item, [(group, label, item)]) for one case of the `cases` stage."""
    where = f"case_id {case.get('case_id')}: "
    try:
        prompt, subject = case["prompt"], case["subject"]
    except KeyError as e:
        raise RecordError(f"{where}missing field {e.args[0]!r}") from e
    r_id, r_ood = _halves(case.get("subject_rephrases"))
    s_id, s_ood = _halves(case.get("shuffled_subjects"))
    lc = case.get("long_context") or {}
    held = list(lc.get("held", []))
    ev = lc.get("eval") or []
    evals = [ev] if isinstance(ev, str) else list(ev)
    original, pool = build_pool(prompt, subject, BARE, r_id + r_ood, s_id + s_ood, held + evals,
                                long_context_aug=bool(held or evals), where=where)
    # build_pool keeps the order it was given: rephrases, shuffles, then passages
    groups = (["id"] * len(r_id) + ["ood"] * len(r_ood) + ["id"] * len(s_id) + ["ood"] * len(s_ood)
              + ["held"] * len(held) + ["eval"] * len(evals))
    labels = ([it.variant for it in pool[:len(r_id) + len(r_ood) + len(s_id) + len(s_ood)]]
              + [f"held[{i}]" for i in range(len(held))] + [f"eval[{i}]" for i in range(len(evals))])
    if len(groups) != len(pool):
        raise RecordError(f"{where}pool has {len(pool)} items, expected {len(groups)}")
    return original, list(zip(groups, labels, pool))


def read_case_keys(model: nn.Module, tok, down_proj: nn.Module, cases: Sequence[dict], *, batch_rows: int = 16,
                   device="cpu") -> list[CaseKeys]:
    """Original and variant keys of every case (one batched pass, similar lengths batched together)."""
    owner, items = [], []
    per_case = []
    for ci, case in enumerate(cases):
        original, labelled = case_items(case)
        per_case.append(labelled)
        owner += [ci] * (1 + len(labelled))
        items += [original] + [it for _, _, it in labelled]
    enc = [encode_with_span(tok, it.text, *it.span, f"case_id {cases[c].get('case_id')}: ")
           for c, it in zip(owner, items)]
    flat = read_down_proj(model, down_proj, [e[0] for e in enc], [e[1] for e in enc], pad_id=pad_id_of(tok),
                          device=device, batch_rows=batch_rows).float().cpu()
    out, lo = [], 0
    for case, labelled in zip(cases, per_case):
        n = 1 + len(labelled)
        block = flat[lo:lo + n]
        lo += n
        out.append(CaseKeys(case.get("case_id"), case["subject"], block[0], block[1:],
                            [it.kind for _, _, it in labelled], [g for g, _, _ in labelled],
                            [lab for _, lab, _ in labelled]))
    return out


def variant_rows(solver: MomentSolver, case_keys: Sequence[CaseKeys]) -> list[dict]:
    """One row per (case, variant): whitened and raw cosine with the case's original key."""
    rows = []
    for ck in case_keys:
        if not ck.kinds:
            continue
        sim = whitened_cosine(solver, ck.original, ck.keys).tolist()
        raw = raw_cosine(ck.original[None], ck.keys).tolist()
        for j, kind in enumerate(ck.kinds):
            rows.append({"case_id": ck.case_id, "subject": ck.subject, "kind": kind, "group": ck.groups[j],
                         "variant": ck.variants[j], "other_case_id": "", "similarity": sim[j], "raw_cosine": raw[j]})
    return rows


def random_pair_rows(solver: MomentSolver, case_keys: Sequence[CaseKeys], n_pairs: int,
                     rng: random.Random) -> list[dict]:
    """Baseline: original keys of two different subjects (all pairs, or `n_pairs` drawn by `rng`)."""
    pairs = [(i, j) for i in range(len(case_keys)) for j in range(i + 1, len(case_keys))]
    if len(pairs) > n_pairs:
        pairs = sorted(rng.sample(pairs, n_pairs))
    if not pairs:
        return []
    a = torch.stack([case_keys[i].original for i, _ in pairs])
    b = torch.stack([case_keys[j].original for _, j in pairs])
    sim, raw = whitened_cosine(solver, a, b).tolist(), raw_cosine(a, b).tolist()
    return [{"case_id": case_keys[i].case_id, "subject": case_keys[i].subject, "kind": "random",
             "group": "different subject", "variant": case_keys[j].subject, "other_case_id": case_keys[j].case_id,
             "similarity": s, "raw_cosine": r} for (i, j), s, r in zip(pairs, sim, raw)]


def pca_rows(solver: MomentSolver, ck: CaseKeys, n_components: int = 2) -> list[dict]:
    """The case's whitened keys (original first) on their first principal components (SVD of the
    centred matrix). Each component's sign puts the original key on its non-negative side."""
    z = whiten(solver, torch.cat([ck.original[None], ck.keys]))
    zc = z - z.mean(0)
    _, s, vh = torch.linalg.svd(zc, full_matrices=False)
    k = min(n_components, vh.shape[0])
    proj = zc @ vh[:k].T
    proj = proj * torch.where(proj[0] < 0, -1.0, 1.0).to(proj.dtype)
    ratio = (s[:k] ** 2 / (s ** 2).sum().clamp_min(1e-300)).tolist()
    kinds, groups, variants = ["original"] + ck.kinds, ["original"] + ck.groups, [ck.subject] + ck.variants
    rows = []
    for r in range(proj.shape[0]):
        row = {"case_id": ck.case_id, "subject": ck.subject, "kind": kinds[r], "group": groups[r],
               "variant": variants[r]}
        for c in range(n_components):
            row[f"pc{c + 1}"] = float(proj[r, c]) if c < k else 0.0
            row[f"pc{c + 1}_variance_ratio"] = ratio[c] if c < k else 0.0
        rows.append(row)
    return rows
