"""The general-ability probe of the sequential protocol: perplexity on WikiText lines that no stage used.

    lines = held_out_lines(texts, used, passages, n_lines=100, min_words=20, seed=s)
    losses = line_losses(model, tok, arch, lines, batch_size=16, device="cpu")   # [(Σ NLL, tokens)] per line

The lines come from the statistics' corpus and exclude what the pipeline already fed the model for this
split: every row the stats stage sampled (`used`: their indices; ROME's C is computed on them) and every
line sharing an 8-word run with a case's long-context passage (held or eval; REP trains on the held ones).
Headings (" = Title = ") and lines under `min_words` words are skipped. Perplexity is exp(Σ NLL / Σ tokens)
over the lines' next-token predictions (every token after the first); the unit of resampling for its interval
is the line (robustedit.pipeline.sequential_tables).
"""
from __future__ import annotations

import random
from typing import Collection, Sequence

import torch

from ..batching import PAD_ID, right_pad
from ..errors import ConfigError
from ..evaluate.scoring import length_batches
from ..readout import lm_head_input, logits_from_hidden

SHINGLE = 8  # words: a line sharing any run of 8 words with a passage counts as used by the long contexts
POSITIONS_PER_HEAD = 1024  # positions projected onto the vocabulary at once: 1 GiB of float32 logits at V = 262k


def _shingles(words: Sequence[str]) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + SHINGLE]) for i in range(len(words) - SHINGLE + 1)}


def held_out_lines(texts: Sequence[str], used: Collection[int], passages: Sequence[str], n_lines: int,
                   min_words: int, seed: int) -> list[str]:
    """n_lines distinct lines of `texts` (stripped), none at an index in `used` nor equal to a used line,
    none a heading or shorter than min_words words, none sharing an 8-word run with a passage; a seeded sample,
    in corpus order."""
    taken = {texts[i].strip() for i in used}
    in_passages = set().union(*(_shingles(p.split()) for p in passages)) if passages else set()
    candidates = []
    for i, raw in enumerate(texts):
        line, words = raw.strip(), raw.split()
        if (i in used or line in taken or line.startswith("=") or len(words) < min_words
                or _shingles(words) & in_passages):
            continue
        candidates.append(line)
    candidates = list(dict.fromkeys(candidates))  # a line repeated in the corpus counts once
    if len(candidates) < n_lines:
        raise ConfigError(f"eval.sequential.perplexity.n_lines={n_lines}: only {len(candidates)} WikiText lines of "
                          f">= {min_words} words are unused by the statistics and the long contexts")
    chosen = set(random.Random(seed).sample(range(len(candidates)), n_lines))
    return [line for k, line in enumerate(candidates) if k in chosen]


@torch.no_grad()
def line_losses(model, tok, arch, lines: Sequence[str], batch_size: int, device,
                max_length: int | None = None) -> list[tuple[float, int]]:
    """Per line: the summed negative log-likelihood (nats) of its tokens after the first, and their count.
    A line is tokenised as the model reads text (BOS included where the tokenizer adds it) and cut to
    max_length tokens."""
    ids = [list(tok(line)["input_ids"])[:max_length] for line in lines]
    if any(len(x) < 2 for x in ids):
        raise ConfigError("every perplexity line needs at least two tokens")
    out: list[tuple[float, int] | None] = [None] * len(ids)
    for batch in length_batches([len(x) for x in ids], batch_size):
        input_ids, mask = right_pad([ids[i] for i in batch], PAD_ID, device)
        hidden = lm_head_input(model, arch, input_ids=input_ids, attention_mask=mask)
        rows, pos = (mask[:, 1:] > 0).nonzero(as_tuple=True)  # predicting token pos + 1 from position pos
        targets = input_ids[rows, pos + 1]
        nll = torch.cat([  # POSITIONS_PER_HEAD rows of vocabulary logits at a time (Gemma's V = 262k)
            -torch.log_softmax(logits_from_hidden(model, arch, hidden[rows[j:j + POSITIONS_PER_HEAD],
                                                                     pos[j:j + POSITIONS_PER_HEAD]]).float(), -1)
            .gather(-1, targets[j:j + POSITIONS_PER_HEAD, None]).squeeze(-1)
            for j in range(0, len(rows), POSITIONS_PER_HEAD)])
        sums = torch.zeros(len(batch), dtype=torch.float64, device=nll.device).index_add_(0, rows, nll.double())
        for k, i in enumerate(batch):
            out[i] = (float(sums[k]), len(ids[i]) - 1)
    return out  # type: ignore[return-value]
