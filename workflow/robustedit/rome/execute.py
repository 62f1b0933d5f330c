"""ROME for a list of independent requests (single-edit protocol): each request gets its own rank-one
edit of the same, unedited model. Requests are processed `hparams.batch_cases` at a time (batched
key reading and batched v* optimisation; results equal one-at-a-time).

A request is {"prompt": filled sentence, "subject": str, "target_new": str} (optionally "case_id",
used in error messages). The target is the bare string; the leading space is handled by
robustedit.tokens.target_token_ids according to hparams.target_mode.
"""
from __future__ import annotations

from typing import Sequence

from ..edits import RankOneEdit
from ..errors import ConfigError, RecordError
from ..tokens import subject_span
from .compute_u import MomentSolver, compute_u
from .compute_v import VResult, compute_v
from .hparams import ROMEHyperParams
from .templates import check_bare_first

REQUEST_KEYS = ("prompt", "subject", "target_new")


def validate_request(request: dict, position: int) -> dict:
    where = f"case {request['case_id']}: " if "case_id" in request else f"request {position}: "
    for key in REQUEST_KEYS:
        if not isinstance(request.get(key), str):
            raise RecordError(f"{where}field {key!r} is missing or not a string")
    if not request["target_new"].strip():
        raise RecordError(f"{where}empty target_new")
    subject_span(request["prompt"], request["subject"], where)
    if request["prompt"].count(request["subject"]) > 1:
        # the reference's prompt.replace(subject, "{}") would fill every occurrence and then fail
        raise RecordError(f"{where}subject {request['subject']!r} occurs more than once in {request['prompt']!r}")
    return request if "case_id" in request else {**request, "case_id": f"#{position}"}


def _solver(C, hp: ROMEHyperParams) -> MomentSolver | None:
    if not hp.mom2_adjustment:
        return None  # u = k̄/‖k̄‖; a given C is not used
    if C is None:
        raise ConfigError("rome.mom2_adjustment is true but no second moment C was given")
    return C if isinstance(C, MomentSolver) else MomentSolver(C)


def execute_rome_detailed(model, tok, arch, requests: Sequence[dict], C, templates: Sequence[str],
                          hparams: ROMEHyperParams, device, layer: int) -> list[tuple[RankOneEdit, VResult]]:
    """C: the second moment [key_dim, key_dim] or a prepared MomentSolver (factorised once; pass one
    when calling repeatedly). Returns each request's edit with its v* diagnostics."""
    arch.check_layer(layer)
    check_bare_first(templates)
    if len(templates) != hparams.n_templates:
        raise ConfigError(f"{len(templates)} context templates given, "
                          f"the hyperparameters describe {hparams.n_templates}")
    checked = [validate_request(r, i) for i, r in enumerate(requests)]
    solver = _solver(C, hparams)
    out: list[tuple[RankOneEdit, VResult]] = []
    for lo in range(0, len(checked), hparams.batch_cases):
        chunk = checked[lo: lo + hparams.batch_cases]
        u = compute_u(model, tok, arch, layer, chunk, templates, solver, device, hparams.key_batch_rows)
        vres = compute_v(model, tok, arch, layer, chunk, u, templates, hparams, device)
        for b, res in enumerate(vres):
            # u in δ's working dtype (float32 for half models), the dtype the denominator k*·u used
            out.append((RankOneEdit(layer, u[b].to(res.right_vector.dtype), res.right_vector), res))
    return out


def execute_rome(model, tok, arch, requests: Sequence[dict], C, templates: Sequence[str],
                 hparams: ROMEHyperParams, device, layer: int) -> list[RankOneEdit]:
    return [edit for edit, _ in execute_rome_detailed(model, tok, arch, requests, C, templates, hparams,
                                                       device, layer)]


__all__ = ["execute_rome", "execute_rome_detailed", "validate_request"]
