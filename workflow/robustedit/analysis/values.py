"""Figure 5 of the REP paper: the norm of the value before and after a ROME edit.

ROME writes v* = v_init + δ at the subject's last token, where v_init is the edit layer's down_proj
output there. The `rome` stage keeps u and the right vector r = (v* − out*) / (k*·u) of each edit
(k*, out*: down_proj input and output at the bare prompt's subject-last token, out* = v_init) and
only the norms ‖v_init‖, ‖δ‖ in its diagnostics. So v* is rebuilt exactly from one forward pass:

    v* = out* + (k*·u) r,   δ = (k*·u) r.

The recomputed ‖out*‖ and ‖δ‖ are reported next to the saved ones as a consistency check.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..rome.prompts import bare_rows, read_rows


def value_norm_rows(model, tok, arch, layer: int, cases: Sequence[dict], u: torch.Tensor, v: torch.Tensor,
                    diagnostics: Sequence[dict], *, device="cpu", batch_rows: int = 16) -> list[dict]:
    """Per case: ‖v_init‖, ‖δ‖, ‖v*‖, cos(v_init, δ) (recomputed) and the rome stage's saved norms."""
    if not (len(cases) == len(diagnostics) == u.shape[0] == v.shape[0]):
        raise ValueError(f"{len(cases)} cases, {len(diagnostics)} diagnostics, {u.shape[0]} edits: they must match")
    k_star, out_star = read_rows(model, tok, arch, layer, bare_rows(tok, cases), device, batch_rows, outputs=True)
    k, out = k_star.double().cpu(), out_star.double().cpu()
    coef = (k * u.double()).sum(-1, keepdim=True)  # k*·u
    delta = coef * v.double()
    v_star = out + delta
    cos = (out * delta).sum(-1) / (out.norm(dim=-1) * delta.norm(dim=-1)).clamp_min(1e-300)
    rows = []
    for i, (case, diag) in enumerate(zip(cases, diagnostics)):
        if diag.get("case_id") != case.get("case_id"):
            raise ValueError(f"diagnostics row {i} is case_id {diag.get('case_id')}, the cases file has "
                             f"{case.get('case_id')}")
        rows.append({"case_id": case.get("case_id"), "subject": case["subject"],
                     "v_init_norm": float(out[i].norm()), "delta_norm": float(delta[i].norm()),
                     "v_star_norm": float(v_star[i].norm()), "cos_v_init_delta": float(cos[i]),
                     "norm_ratio": float(v_star[i].norm() / out[i].norm().clamp_min(1e-300)),
                     "saved_v_init_norm": diag.get("v_init_norm"), "saved_delta_norm": diag.get("delta_norm")})
    return rows
