"""Teacher-forced scores of answers under EREN's reader: how the reader scores a given answer to a prompt.

    scores = score_answers(reader, prompts, targets)   # one ItemScore (argmax ids, log-probs) per pair

The answer is read exactly where the reader's generated answer would begin:
- causal reader (ChatReader): after `reader.format(prompt)`, the text the reader generates from (the chat
  template with its generation prompt, or the plain prompt). The answer's tokens are the suffix of
  `tok(text + sep + target)` after `tok(text)`, with the reader's own special-token rule; sep is "" when
  the text ends in white space (a chat template's "assistant\\n") and " " otherwise (as ROME's targets).
- seq2seq reader (Seq2SeqReader, FLAN-T5): the encoder reads `tok(prompt)`, the decoder starts at its
  start token and is fed the answer's tokens `tok(target, add_special_tokens=False)`.
Answer token j is scored at the position whose greedy output would be token j had tokens < j been
generated: the same quantity `exact_match@1` reads for ROME. Batches are padded as the reader pads them
for generation (left for causal readers, with position ids that skip the pads; right for seq2seq), and
`tests/test_eren_teacher_forced.py` checks every score against one unpadded forward per item.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..batching import left_pad, right_pad
from ..errors import ConfigError, RecordError
from ..evaluate.encoding import ItemScore, scores_from_logits
from .reader import ChatReader, Seq2SeqReader


def base_reader(reader):
    """The ChatReader / Seq2SeqReader inside the wrappers (TimedReader, MemoReader) that hold it as `.reader`."""
    while not isinstance(reader, (ChatReader, Seq2SeqReader)):
        if not hasattr(reader, "reader"):
            raise ConfigError(f"{type(reader).__name__} has no model to teacher-force (a ChatReader or "
                              "Seq2SeqReader is needed; set eren.suite.teacher_forced=false for a stub reader)")
        reader = reader.reader
    return reader


def answer_ids(reader, prompt: str, target: str, where: str = "") -> tuple[list[int], list[int]]:
    """(what the model reads before the answer, the answer's token ids) for one prompt and target."""
    if not target or not target.strip():
        raise RecordError(f"{where}empty target")
    tok = reader.tokenizer
    if isinstance(reader, Seq2SeqReader):
        prompt_ids = list(tok(prompt)["input_ids"])
        target_ids = list(tok(target, add_special_tokens=False)["input_ids"])
    else:
        text = reader.format(prompt)
        sep = "" if text[-1:].isspace() else " "
        prompt_ids = list(tok(text, add_special_tokens=reader.add_special_tokens)["input_ids"])
        full = list(tok(text + sep + target, add_special_tokens=reader.add_special_tokens)["input_ids"])
        if full[:len(prompt_ids)] != prompt_ids:
            raise RecordError(f"{where}the reader's input for {prompt!r} tokenises differently when followed by "
                              f"the answer {target!r}")
        target_ids = full[len(prompt_ids):]
    if not target_ids or not prompt_ids:
        raise RecordError(f"{where}answer {target!r} to {prompt!r} has no tokens to score")
    return prompt_ids, target_ids


def _read(logits: torch.Tensor, targets: list[list[int]], starts: list[int]) -> list[ItemScore]:
    """ItemScores of row r's answer read at positions starts[r] .. starts[r] + len(targets[r]) - 1."""
    rows = torch.cat([torch.full((len(t),), r, dtype=torch.long) for r, t in enumerate(targets)])
    cols = torch.cat([torch.arange(a, a + len(t)) for a, t in zip(starts, targets)])
    flat = torch.as_tensor([x for t in targets for x in t], dtype=torch.long, device=logits.device)
    return scores_from_logits(logits[rows.to(logits.device), cols.to(logits.device)], flat, [len(t) for t in targets])


@torch.no_grad()
def _causal_batch(reader: ChatReader, prompts: list[list[int]], targets: list[list[int]]) -> list[ItemScore]:
    ids, mask = left_pad([p + t for p, t in zip(prompts, targets)], reader.pad_id, reader.device)
    keep = max(len(t) for t in targets) + 1  # the last `keep` positions hold every row's read positions
    logits = reader.model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                          logits_to_keep=keep).logits
    # row r's answer fills its last len(t) positions, so they are read at keep-1-len(t) .. keep-2
    return _read(logits, targets, [keep - 1 - len(t) for t in targets])


@torch.no_grad()
def _seq2seq_batch(reader: Seq2SeqReader, prompts: list[list[int]], targets: list[list[int]]) -> list[ItemScore]:
    start = reader.model.config.decoder_start_token_id
    if start is None:
        raise ConfigError("the seq2seq reader's config.json has no decoder_start_token_id")
    ids, mask = right_pad(prompts, pad_id=reader.pad_id, device=reader.device)
    dec, dec_mask = right_pad([[start] + t[:-1] for t in targets], pad_id=reader.pad_id, device=reader.device)
    logits = reader.model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec,
                          decoder_attention_mask=dec_mask).logits
    return _read(logits, targets, [0] * len(targets))


def score_answer_ids(reader, prompts: Sequence[Sequence[int]], targets: Sequence[Sequence[int]]) -> list[ItemScore]:
    """Scores of token-level (model input, answer ids) pairs, in input order, in length-sorted batches of the
    reader's batch_size."""
    reader = base_reader(reader)
    if len(prompts) != len(targets):
        raise ValueError(f"{len(prompts)} prompts and {len(targets)} targets")
    if reader.model.training:
        raise ConfigError("teacher forcing needs model.eval(): dropout would make the scores random")
    batch = _seq2seq_batch if isinstance(reader, Seq2SeqReader) else _causal_batch
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(targets[i]))
    out: list[ItemScore | None] = [None] * len(prompts)
    for lo in range(0, len(order), reader.batch_size):
        idx = order[lo:lo + reader.batch_size]
        for i, score in zip(idx, batch(reader, [list(prompts[i]) for i in idx], [list(targets[i]) for i in idx])):
            out[i] = score
    return out  # type: ignore[return-value]


def score_answers(reader, prompts: Sequence[str], targets: Sequence[str],
                  where: Sequence[str] | None = None) -> tuple[list[list[int]], list[ItemScore]]:
    """(answer token ids, ItemScore) per (prompt, target) pair; `where` names each pair in errors."""
    base = base_reader(reader)
    encoded = [answer_ids(base, p, t, where[i] if where else f"item {i}: ")
               for i, (p, t) in enumerate(zip(prompts, targets, strict=True))]
    return [t for _, t in encoded], score_answer_ids(base, [p for p, _ in encoded], [t for _, t in encoded])
