"""Token positions computed on exactly the string fed to the model (BOS included).

Two facts drive this module:
- Llama/Gemma tokenizers prepend BOS and SentencePiece merges a leading space into the next
  piece, so lengths of separately tokenised prefixes are unreliable. We use the fast
  tokenizer's character offsets on the full string instead.
- ROME's target tokens: in `clean` mode we tokenise `prompt + " " + target` jointly and take
  the tokens after the prompt; `easyedit` mode reproduces the reference's `tok(" " + target)`
  minus BOS, which keeps a stand-alone "▁" token on Llama/Mistral.
"""
from __future__ import annotations

from .errors import RecordError as _RecordError

TARGET_MODES = ("clean", "easyedit")


def subject_span(text: str, subject: str, where: str = "") -> tuple[int, int]:
    """Character span of the first occurrence of `subject` in `text`."""
    if not subject:
        raise _RecordError(f"{where}empty subject")
    start = text.find(subject)
    if start < 0:
        raise _RecordError(f"{where}subject {subject!r} not found in prompt {text!r}")
    return start, start + len(subject)


def encode_with_span(tok, text: str, start: int, end: int, where: str = "") -> tuple[list[int], int]:
    """Token ids of `text` (special tokens included) and the index of the last token overlapping
    characters [start, end): the one rule every stage uses to find a subject's last token."""
    enc = tok(text, return_offsets_mapping=True)
    last = None
    for i, (s, e) in enumerate(enc["offset_mapping"]):
        if e > s and s < end and e > start:  # token overlaps the span (special tokens have s == e)
            last = i
    if last is None:
        raise _RecordError(f"{where}no token covers characters {start}:{end} ({text[start:end]!r}) of {text!r}")
    return list(enc["input_ids"]), last


def subject_last_index(tok, text: str, subject: str, where: str = "") -> int:
    """Index (in `tok(text).input_ids`, special tokens included) of the subject's last token."""
    return encode_with_span(tok, text, *subject_span(text, subject, where), where)[1]


def subject_last_index_by_prefix(tok, text: str, subject: str, where: str = "") -> int:
    """EasyEdit's rule: len(encode(prefix + subject)) - 1. Equal to `subject_last_index` unless the
    subject's last token merges with the following characters; kept as a differential reference."""
    _, end = subject_span(text, subject, where)
    return len(tok(text[:end])["input_ids"]) - 1


def target_token_ids(tok, prompt: str, target: str, mode: str = "clean", where: str = "") -> list[int]:
    """Token ids the model must produce after `prompt` to say `target`."""
    if not target or not target.strip():
        raise _RecordError(f"{where}empty target")
    if mode == "clean":
        prompt_ids = tok(prompt)["input_ids"]
        full_ids = tok(prompt + " " + target)["input_ids"]
        if full_ids[: len(prompt_ids)] != prompt_ids:
            raise _RecordError(f"{where}prompt {prompt!r} tokenises differently when followed by {target!r}")
        ids = full_ids[len(prompt_ids):]
    elif mode == "easyedit":
        ids = tok(" " + target)["input_ids"]
        specials = {tok.bos_token_id, tok.unk_token_id} - {None}
        ids = [i for i in ids if i not in specials] if ids and ids[0] in specials else ids
    else:
        raise ValueError(f"unknown target mode {mode!r}; use one of {TARGET_MODES}")
    if not ids:
        raise _RecordError(f"{where}target {target!r} has no tokens after prompt {prompt!r}")
    return ids


def replace_subject(prompt: str, subject: str, new_subject: str, where: str = "") -> str:
    """Replace the first occurrence of the subject (the one ROME's key is read at)."""
    if subject not in prompt:
        raise _RecordError(f"{where}subject {subject!r} not found in prompt {prompt!r}")
    return prompt.replace(subject, new_subject, 1)
