"""The prompts ROME runs, as token-id rows with the position it reads or edits there.

Positions are computed on exactly the string fed to the model (BOS included) from the fast
tokenizer's character offsets (tokens.encode_with_span); the subject is located inside the prompt part
of a templated string, so a template prefix that happens to contain the subject cannot move the index.

    templated_rows   template.format(prompt) for each context template; index = the subject's last
                     token (where k̄ is read for u, and where δ is added for v*)
    case_rows        v*'s rows of one request: one rewriting prompt per template, teacher-forced with
                     the target prefix and labelled with the target tokens, then the KL prompt
                     "{subject} is a" (ROME's `compute_v`, Meng et al. 2022)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..batching import pad_id_of
from ..errors import RecordError
from ..readout import read_down_proj
from ..tokens import encode_with_span, subject_span, target_token_ids
from .hparams import ROMEHyperParams


def where_of(request: dict) -> str:
    """Error-message prefix naming the case."""
    return f"case {request['case_id']}: " if "case_id" in request else ""


def templated_prompt(template: str, prompt: str, subject: str, where: str = "") -> tuple[str, int, int]:
    """template.format(prompt) and the character span of the subject inside the prompt part."""
    start, end = subject_span(prompt, subject, where)
    offset = template.index("{}")
    return template.format(prompt), offset + start, offset + end


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


def bare_rows(tok, requests: Sequence[dict]) -> list[PromptRow]:
    """The bare prompt of each request and its subject-last index (where ROME reads k* and v_init)."""
    return [templated_rows(tok, r["prompt"], r["subject"], ["{}"], where_of(r))[0] for r in requests]


def read_rows(model, tok, arch, layer: int, rows: Sequence[PromptRow], device, batch_rows: int = 128,
              outputs: bool = False):
    """down_proj input (and output) of the edit layer at each row's index: [n_rows, key_dim]
    (, [n_rows, hidden]) in the model's dtype; rows of similar length share a forward."""
    return read_down_proj(model, arch.module(model, "down_proj", layer), [r.ids for r in rows],
                          [r.index for r in rows], pad_id=pad_id_of(tok), device=device, batch_rows=batch_rows,
                          outputs=outputs)


@dataclass
class CaseRows:
    rows: list[PromptRow]  # one rewriting row per template, then the KL row
    labels: list[list[tuple[int, int]]]  # per rewriting row: (position whose logits predict, token id)
    n_target: int  # |y|: the NLL divisor


def case_rows(tok, request: dict, templates: Sequence[str], hp: ROMEHyperParams) -> CaseRows:
    where = where_of(request)
    prompt, subject = request["prompt"], request["subject"]
    y = target_token_ids(tok, prompt, request["target_new"], mode=hp.target_mode, where=where)
    rows, labels = [], []
    for t in templates:
        text, s, e = templated_prompt(t, prompt, subject, where)
        if hp.target_mode == "clean":  # token-level teacher forcing: labels sit exactly after the prompt
            prompt_ids, idx = encode_with_span(tok, text, s, e, where)
            ids = prompt_ids + y[:-1]
        else:  # EasyEdit / the REP release: re-tokenise prompt + decoded target prefix, right-align the
            # labels (on Llama/Mistral the stand-alone "▁" target token then labels a prompt position)
            full = text + tok.decode(y[:-1])
            ids, idx = encode_with_span(tok, full, s, e, where)
        if len(ids) < len(y) or idx >= len(ids):
            raise RecordError(f"{where}prompt {text!r} is too short for target {request['target_new']!r}")
        labels.append([(len(ids) - len(y) + j, tid) for j, tid in enumerate(y)])
        rows.append(PromptRow(ids, idx))
    kl_text, s, e = templated_prompt(hp.kl_prompt, subject, subject, where)
    rows.append(PromptRow(*encode_with_span(tok, kl_text, s, e, where)))
    return CaseRows(rows, labels, len(y))
