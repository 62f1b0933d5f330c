"""ROME context templates sampled from the model (EasyEdit's `get_context_templates`: the original ROME
samples 21 continuations of "<|endoftext|>", EasyEdit and the REP release continue five fixed prefixes).

    ["{}"] + [sample.replace("{", "").replace("}", "") + ". {}" for each sample]

For every (max_out_len, n) pair, each of the prefixes ("The", "Therefore", ...) gets n // len(prefixes)
continuations by top-k sampling; like the reference's `generate_fast`, `max_out_len` counts the prompt
tokens (BOS included), generation does not stop at EOS, and the text is decoded without special tokens,
NFKD-normalised, with "\\n\\n" -> " ". Our own sampling loop draws from an explicit CPU
torch.Generator, so the templates are a pure function of (model, tokenizer, generator seed).
"""
from __future__ import annotations

import unicodedata
from typing import Sequence

import torch

from ..errors import ConfigError

DEFAULT_LENGTH_PARAMS = ((5, 10), (10, 10))  # EasyEdit/REP context_template_length_params: 21 templates
DEFAULT_PREFIXES = ("The", "Therefore", "Because", "I", "You")  # EasyEdit's generation seeds


@torch.no_grad()
def sample_continuations(model, tok, prefix: str, n: int, max_out_len: int, top_k: int,
                         generator: torch.Generator, device: str | torch.device = "cpu") -> list[list[int]]:
    """n token sequences: tok(prefix) extended by top-k sampling until max_out_len tokens in total."""
    start = tok(prefix)["input_ids"]
    ids = torch.tensor([start] * n, dtype=torch.long, device=device)
    while ids.shape[1] < max_out_len:
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), logits_to_keep=1).logits[:, -1]
        probs = torch.softmax(logits.float(), dim=-1)
        top_p, top_i = probs.topk(top_k, dim=-1)
        top_p = (top_p / top_p.sum(-1, keepdim=True)).cpu()
        pick = torch.multinomial(top_p, 1, generator=generator).to(top_i.device)
        ids = torch.cat([ids, top_i.gather(1, pick)], dim=1)
    return ids.tolist()


def clean_template_text(text: str) -> str:
    """The reference's post-processing of one sample, then the brace strip and '. {}' suffix."""
    text = unicodedata.normalize("NFKD", text).replace("\n\n", " ").replace("<|endoftext|>", "")
    return text.replace("{", "").replace("}", "") + ". {}"


def generate_context_templates(
    model, tok, generator: torch.Generator, *,
    length_params: Sequence[Sequence[int]] = DEFAULT_LENGTH_PARAMS,
    prefixes: Sequence[str] = DEFAULT_PREFIXES,
    top_k: int = 5,  # the reference's generate_fast default
    device: str | torch.device = "cpu",
) -> list[str]:
    if generator.device.type != "cpu":
        raise ConfigError("template sampling needs a CPU torch.Generator (draws are made on the CPU)")
    templates = ["{}"]
    for max_out_len, n in length_params:
        if n % len(prefixes):
            raise ConfigError(f"template count {n} is not a multiple of the {len(prefixes)} prefixes")
        for prefix in prefixes:
            for seq in sample_continuations(model, tok, prefix, n // len(prefixes), int(max_out_len),
                                            top_k, generator, device):
                templates.append(clean_template_text(tok.decode(seq, skip_special_tokens=True)))
    check_bare_first(templates)
    return templates


def check_template_slot(template: str, where: str = "context template") -> None:
    """A template holds exactly one "{}" (the prompt goes there) and no other brace."""
    rest = template.replace("{}", "")
    if template.count("{}") != 1 or rest.count("{") or rest.count("}"):
        raise ConfigError(f"{where} {template!r} must hold exactly one '{{}}' and no other braces")


def check_bare_first(templates: Sequence[str]) -> None:
    """ROME's template list: the first is the bare "{}" (v_init and k̄'s first key are read in the
    prompt itself) and each passes check_template_slot."""
    if not templates or templates[0] != "{}":
        raise ConfigError("the first ROME context template must be the bare '{}'")
    for i, t in enumerate(templates):
        check_template_slot(t, f"context template {i}")
