"""ROME's left vector (notes §1.4): k̄ = mean over context templates of the down_proj input at the
subject's last token, u = C⁻¹ k̄ / ‖C⁻¹ k̄‖ (float64 Cholesky solve, no explicit inverse);
without the second-moment adjustment u = k̄ / ‖k̄‖.

Positions are computed on exactly the string fed to the model (BOS included) from the fast
tokenizer's character offsets; the subject is located inside the prompt part of a templated string,
so a template prefix that happens to contain the subject cannot move the index. Batches are
right-padded by us, whatever the tokenizer's padding side.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..batching import right_pad
from ..errors import ConfigError
from ..hooks import capture_input, capture_output, run_until, stop_after
from ..tokens import encode_with_span, subject_span


def templated_prompt(template: str, prompt: str, subject: str, where: str = "") -> tuple[str, int, int]:
    """template.format(prompt) and the character span of the subject inside the prompt part."""
    start, end = subject_span(prompt, subject, where)
    offset = template.index("{}")
    return template.format(prompt), offset + start, offset + end


def where_of(request: dict) -> str:
    """Error-message prefix naming the case."""
    return f"case {request['case_id']}: " if "case_id" in request else ""


@dataclass
class PromptRow:
    ids: list[int]  # token ids fed to the model (special tokens included)
    index: int  # position read/edited (subject's last token)


def templated_rows(tok, prompt: str, subject: str, templates: Sequence[str], where: str = "") -> list[PromptRow]:
    rows = []
    for t in templates:
        text, s, e = templated_prompt(t, prompt, subject, where)
        rows.append(PromptRow(*encode_with_span(tok, text, s, e, where)))
    return rows


def pad_id_of(tok) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else 0  # value irrelevant: pads are masked


@torch.no_grad()
def read_down_proj(model, tok, arch, layer: int, rows: Sequence[PromptRow], device,
                   batch_rows: int = 128, outputs: bool = False):
    """down_proj input (and output) at each row's index: [n_rows, key_dim] (, [n_rows, hidden])."""
    module = arch.module(model, "down_proj", layer)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i].ids))  # similar lengths share a batch
    keys: list = [None] * len(rows)
    outs: list = [None] * len(rows)
    for lo in range(0, len(order), batch_rows):
        part = order[lo: lo + batch_rows]
        ids, mask = right_pad([rows[i].ids for i in part], pad_id_of(tok), device)
        idx = torch.tensor([rows[i].index for i in part], device=device)
        ar = torch.arange(len(part), device=device)
        with capture_input(module) as cin, capture_output(module) as cout, stop_after(module):
            run_until(model, input_ids=ids, attention_mask=mask)
        for j, i in enumerate(part):
            keys[i] = cin.value[ar, idx][j]
            outs[i] = cout.value[ar, idx][j]
    k = torch.stack(keys)
    return (k, torch.stack(outs)) if outputs else k


class MomentSolver:
    """Solves C x = k for many k with one float64 Cholesky factorisation of C.

    The factor lives on `device` (default: C's device; pass the run's device when C was loaded on
    the CPU, so the solves run there). `solve` returns on the device of its input."""

    def __init__(self, C: torch.Tensor, device: str | torch.device | None = None):
        if C.ndim != 2 or C.shape[0] != C.shape[1]:
            raise ConfigError(f"second moment must be square, got shape {tuple(C.shape)}")
        C64 = C.to(device=C.device if device is None else device, dtype=torch.float64)
        factor, info = torch.linalg.cholesky_ex(C64)
        if int(info) != 0:
            raise ConfigError(
                "the second moment C is not positive definite (too few tokens for its dimension?); "
                "collect statistics over more documents"
            )
        self.factor = factor

    @property
    def dim(self) -> int:
        return self.factor.shape[0]

    def solve(self, k: torch.Tensor) -> torch.Tensor:
        """C⁻¹ k for k of shape [B, D] (float64, on k's device)."""
        k64 = k.to(self.factor.device, torch.float64)
        return torch.cholesky_solve(k64.T, self.factor).T.to(k.device)


def mean_template_keys(model, tok, arch, layer: int, requests: Sequence[dict], templates: Sequence[str],
                       device, batch_rows: int = 128) -> torch.Tensor:
    """k̄ per request: [B, key_dim] float64, averaged over the templates (one batched pass for all requests)."""
    rows: list[PromptRow] = []
    for r in requests:
        rows += templated_rows(tok, r["prompt"], r["subject"], templates, where_of(r))
    keys = read_down_proj(model, tok, arch, layer, rows, device, batch_rows)
    return keys.to(torch.float64).view(len(requests), len(templates), -1).mean(1)


def left_vectors(kbar: torch.Tensor, solver: MomentSolver | None) -> torch.Tensor:
    """u = C⁻¹k̄/‖C⁻¹k̄‖ (or k̄/‖k̄‖ when solver is None), in float64."""
    u = kbar.to(torch.float64) if solver is None else solver.solve(kbar)
    return u / u.norm(dim=-1, keepdim=True)


def compute_u(model, tok, arch, layer: int, requests: Sequence[dict], templates: Sequence[str],
              solver: MomentSolver | None, device, batch_rows: int = 128) -> torch.Tensor:
    """Left vectors [B, key_dim] in float64 (callers cast to the working dtype)."""
    kbar = mean_template_keys(model, tok, arch, layer, requests, templates, device, batch_rows)
    if solver is not None and solver.dim != kbar.shape[1]:
        raise ConfigError(f"second moment has dimension {solver.dim}, the layer-{layer} key has {kbar.shape[1]}")
    return left_vectors(kbar, solver)
