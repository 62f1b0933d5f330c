"""Figure 4 of the REP paper: keys of unrelated text that resemble a subject's key.

WikiText is cut into windows of consecutive words; each window is one sequence, so the key at each
of its positions is the key of the prefix that ends there. For every subject, the whitened cosine
(whiten.py) between its original key and every scanned key is computed; prefixes that contain the
subject itself are excluded (the first token whose prefix holds the subject string, and every later
one). Kept: the `top_k` most similar prefixes per subject and a histogram of all similarities.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn

from ..readout import read_down_proj
from ..rome.compute_u import MomentSolver
from .whiten import whitened_units

N_BINS = 200  # histogram bins over [-1, 1]: 0.01 wide


@dataclass
class Window:
    text: str
    ids: list[int]
    ends: list[int]  # character end offset of each token
    real: list[bool]  # False for special tokens (BOS): they cover no text and are not scanned


@dataclass
class ScanResult:
    top_sim: torch.Tensor  # [S, K] float64, most similar first (-inf where fewer than K positions)
    top_window: torch.Tensor  # [S, K] window index
    top_pos: torch.Tensor  # [S, K] token position in the window
    counts: torch.Tensor  # [N_BINS] similarities of every (subject, scanned key) pair
    edges: torch.Tensor  # [N_BINS + 1]
    n_keys: int  # scanned positions


def encode_window(tok, text: str) -> Window:
    enc = tok(text, return_offsets_mapping=True)
    spans = enc["offset_mapping"]
    return Window(text, list(enc["input_ids"]), [e for _, e in spans], [e > s for s, e in spans])


def scan_windows(tok, words: Sequence[str], n_tokens: int, window_words: int, start: int) -> list[Window]:
    """Windows of `window_words` consecutive words from word `start` on (wrapping around the text once)
    until they hold at least `n_tokens` tokens."""
    if window_words < 1 or not words:
        raise ValueError("need a positive window size and some words to scan")
    out, total = [], 0
    max_windows = -(-len(words) // window_words)  # one pass over the text at most
    pos = start % len(words)
    while total < n_tokens and len(out) < max_windows:
        chunk = list(words[pos:pos + window_words])
        if len(chunk) < window_words:
            chunk += list(words[:window_words - len(chunk)])
        out.append(encode_window(tok, " ".join(chunk)))
        total += len(out[-1].ids)
        pos = (pos + window_words) % len(words)
    return out


def subject_cut(window: Window, subject: str) -> int:
    """First position whose prefix contains `subject` (len(ids) when it never occurs)."""
    at = window.text.find(subject)
    if at < 0 or not subject:
        return len(window.ids)
    end = at + len(subject)
    return next((t for t, e in enumerate(window.ends) if e >= end), len(window.ids))


def _merge_top(best: tuple, sims: torch.Tensor, win: torch.Tensor, pos: torch.Tensor, k: int) -> tuple:
    s = torch.cat([best[0], sims], 1)
    w = torch.cat([best[1], win.expand(sims.shape[0], -1)], 1)
    p = torch.cat([best[2], pos.expand(sims.shape[0], -1)], 1)
    top = torch.topk(s, min(k, s.shape[1]), dim=1)
    return top.values, w.gather(1, top.indices), p.gather(1, top.indices)


def scan_similar_keys(model: nn.Module, down_proj: nn.Module, solver: MomentSolver, subject_keys: torch.Tensor,
                      subjects: Sequence[str], windows: Sequence[Window], *, top_k: int, pad_id: int = 0,
                      batch_rows: int = 16, device="cpu") -> ScanResult:
    """Scan every real position of `windows` against each subject key ([S, D])."""
    zs = whitened_units(solver, subject_keys)  # [S, D] float64
    S = zs.shape[0]
    empty = (torch.empty(S, 0, dtype=torch.float64, device=zs.device),
             torch.empty(S, 0, dtype=torch.long, device=zs.device),
             torch.empty(S, 0, dtype=torch.long, device=zs.device))
    best, counts, n_keys = empty, torch.zeros(N_BINS, dtype=torch.float64), 0
    for lo in range(0, len(windows), batch_rows):
        chunk = windows[lo:lo + batch_rows]
        where = [(lo + i, t) for i, w in enumerate(chunk) for t in range(len(w.ids)) if w.real[t]]
        if not where:
            continue
        flat = read_down_proj(model, down_proj, [w.ids for w in chunk],
                              [[t for t, real in enumerate(w.real) if real] for w in chunk], pad_id=pad_id,
                              device=device, batch_rows=batch_rows, by_length=False).float()
        sims = zs @ whitened_units(solver, flat).T  # [S, N]
        win = torch.tensor([w for w, _ in where], device=sims.device)
        pos = torch.tensor([t for _, t in where], device=sims.device)
        for s, subject in enumerate(subjects):  # prefixes holding the subject are not "unrelated"
            cut = torch.tensor([subject_cut(w, subject) for w in chunk], device=sims.device)
            sims[s, pos >= cut[win - lo]] = float("-inf")
        valid = sims[torch.isfinite(sims)]
        counts += torch.histc(valid.clamp(-1, 1).cpu(), bins=N_BINS, min=-1, max=1).to(torch.float64)
        n_keys += len(where)
        best = _merge_top(best, sims, win[None], pos[None], top_k)
    return ScanResult(best[0].cpu(), best[1].cpu(), best[2].cpu(), counts,
                      torch.linspace(-1, 1, N_BINS + 1, dtype=torch.float64), n_keys)


def top_prefix_rows(result: ScanResult, windows: Sequence[Window], case_ids: Sequence, subjects: Sequence[str],
                    tok, tail_tokens: int) -> list[dict]:
    """One row per (subject, rank): similarity and the prefix's last `tail_tokens` tokens as text."""
    rows = []
    for s, (cid, subject) in enumerate(zip(case_ids, subjects)):
        for rank in range(result.top_sim.shape[1]):
            sim = float(result.top_sim[s, rank])
            if sim == float("-inf"):
                break
            w, t = int(result.top_window[s, rank]), int(result.top_pos[s, rank])
            tail = tok.decode(windows[w].ids[max(0, t + 1 - tail_tokens):t + 1], skip_special_tokens=True)
            rows.append({"case_id": cid, "subject": subject, "rank": rank + 1, "similarity": sim,
                         "window": w, "position": t, "prefix_tail": tail.replace("\n", " ").strip()})
    return rows


def histogram_rows(result: ScanResult) -> list[dict]:
    e = result.edges.tolist()
    return [{"bin_lo": e[i], "bin_hi": e[i + 1], "count": int(c)} for i, c in enumerate(result.counts.tolist())]
