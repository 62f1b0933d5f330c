"""EREN's reader: an instruction-tuned model behind `generate(prompts, max_new_tokens) -> outputs`.

EREN uses FLAN-T5-XL with greedy `generate(max_length=20)` (10 when answer options are listed).
For a decoder-only chat model the same budget is `max_new_tokens`. Prompts are wrapped in the
model's chat template (one user turn, generation prompt added) when it has one, batched with LEFT
padding (set per call, the caller's tokenizer is not modified), and decoded without special tokens.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Mapping, Protocol, Sequence

import torch

from ..errors import ConfigError, ModelNotAvailableError

MAX_NEW_TOKENS = 20  # EREN: generate(max_length=20) for free-text answers
MAX_NEW_TOKENS_OPTIONS = 10  # EREN: max_length=10 when answer options are given


class Reader(Protocol):
    """Anything that maps prompts to greedy completions, one output per prompt, in order."""

    def generate(self, prompts: Sequence[str], max_new_tokens: int = MAX_NEW_TOKENS) -> list[str]: ...


class StubReader:
    """A reader with fixed answers, for tests: `answer(prompt)` or a prompt -> answer mapping.

    Records every call's prompts in `calls` so tests can see which steps ran and in what batches.
    """

    def __init__(self, answer: Callable[[str], str] | Mapping[str, str], default: str | None = None):
        self._answer = answer
        self.default = default
        self.calls: list[list[str]] = []

    def generate(self, prompts: Sequence[str], max_new_tokens: int = MAX_NEW_TOKENS) -> list[str]:
        prompts = list(prompts)
        self.calls.append(prompts)
        if callable(self._answer):
            return [self._answer(p) for p in prompts]
        out = []
        for p in prompts:
            if p in self._answer:
                out.append(self._answer[p])
            elif self.default is not None:
                out.append(self.default)
            else:
                raise KeyError(f"StubReader has no answer for prompt {p!r}")
        return out


class TimedReader:
    """Wraps a reader and counts the prompts it generates for and the seconds spent (for reports)."""

    def __init__(self, reader: Reader):
        self.reader = reader
        self.n_prompts = 0
        self.seconds = 0.0

    def generate(self, prompts: Sequence[str], max_new_tokens: int = MAX_NEW_TOKENS) -> list[str]:
        import time

        t0 = time.perf_counter()
        out = self.reader.generate(prompts, max_new_tokens=max_new_tokens)
        self.seconds += time.perf_counter() - t0
        self.n_prompts += len(prompts)
        return out

    def stats(self) -> dict:
        return {"generations": self.n_prompts, "generate_s": self.seconds,
                "s_per_generation": self.seconds / self.n_prompts if self.n_prompts else None}


class ChatReader:
    """A causal LM with its tokenizer, generating greedily in left-padded, length-sorted batches."""

    def __init__(self, model, tokenizer, device: str | torch.device = "cpu", batch_size: int = 16,
                 use_chat_template: bool | None = None, progress: bool = False):
        # 16 prompts per batch: EREN prompts are ~100-300 tokens, so this fits CPU memory easily.
        # progress: a tqdm bar over batches on stderr (the pipeline's stages turn it on for their logs).
        if batch_size < 1:
            raise ConfigError(f"reader batch_size must be >= 1, got {batch_size}")
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.progress = progress
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if use_chat_template and not has_template:
            raise ConfigError("use_chat_template=True but the reader's tokenizer has no chat template")
        self.use_chat_template = has_template if use_chat_template is None else use_chat_template
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if self.pad_id is None:
            raise ConfigError("the reader's tokenizer has neither a pad nor an eos token")

    def format(self, prompt: str) -> str:
        """The exact text fed to the model for a prompt."""
        if not self.use_chat_template:
            return prompt
        return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                  add_generation_prompt=True)

    @torch.no_grad()
    def generate(self, prompts: Sequence[str], max_new_tokens: int = MAX_NEW_TOKENS) -> list[str]:
        texts_all = [self.format(p) for p in prompts]
        # Batch prompts of similar length together (less padding); outputs are restored to input order.
        order = sorted(range(len(texts_all)), key=lambda i: len(texts_all[i]))
        outputs: list[str] = [""] * len(texts_all)
        starts = range(0, len(order), self.batch_size)
        if self.progress and len(starts) > 1:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"reader ({len(order)} prompts)", unit="batch", mininterval=10)
        for start in starts:
            idx = order[start:start + self.batch_size]
            texts = [texts_all[i] for i in idx]
            # With a chat template the text already holds any BOS the model expects.
            batch = self.tokenizer(texts, return_tensors="pt", padding=True, padding_side="left",
                                   add_special_tokens=not self.use_chat_template).to(self.device)
            gen = self.model.generate(**batch, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                                      pad_token_id=self.pad_id)
            new = gen[:, batch["input_ids"].shape[1]:]
            for i, text in zip(idx, self.tokenizer.batch_decode(new, skip_special_tokens=True)):
                outputs[i] = text.strip()
        return outputs


def load_chat_reader(model_dir: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32",
                     batch_size: int = 16, use_chat_template: bool | None = None,
                     progress: bool = False) -> ChatReader:
    """Load a prepared local model folder (e.g. resources/models/smollm2-135m) as a reader.

    `device` follows robustedit.models.load.resolve_device ("cuda" without a GPU is an error).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..models.load import resolve_device, resolve_dtype

    device = resolve_device(device) if isinstance(device, str) else device
    dtype = resolve_dtype(dtype) if isinstance(dtype, str) else dtype

    model_dir = Path(model_dir)
    pointer = model_dir / "hub.json"  # a prepared folder may point at a hub snapshot instead
    if pointer.is_file():
        model_dir = Path(json.loads(pointer.read_text())["path"])
    if not (model_dir / "config.json").is_file():
        raise ModelNotAvailableError(f"no reader model at {model_dir}; run `make models` first")
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    for p in model.parameters():
        p.requires_grad_(False)
    return ChatReader(model, tok, device=device, batch_size=batch_size, use_chat_template=use_chat_template,
                      progress=progress)
