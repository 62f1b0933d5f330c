"""EREN's reader: an instruction-tuned model behind `generate(prompts, max_new_tokens) -> outputs`.

Two kinds, chosen by the reader's model config (conf/model/<eren.reader>.yaml, `family`):
- seq2seq (family t5, e.g. FLAN-T5-XL, EREN's own reader): the plain prompt, right-padded, greedy
  `generate(max_length=max_new_tokens)` exactly as EREN's `gen_texts` (max_length=20, 10 with answer
  options). T5's max_length counts the decoder start token, so at most max_new_tokens - 1 tokens come out.
- causal (families llama, mistral, gemma3 and custom, e.g. SmolLM2-Instruct, Llama-2-chat, Mistral-Instruct): the
  prompt in the model's chat template (one user turn, generation prompt added) when the config says
  `chat_template: true`, LEFT-padded, greedy, at most `max_new_tokens` new tokens.
Batches are padded here, not by the tokenizer, so a tokenizer without a pad token (Llama-2, Mistral)
works and the caller's tokenizer is never modified. Outputs are decoded without special tokens.
"""
from __future__ import annotations

from typing import Callable, Mapping, Protocol, Sequence

import torch

from ..batching import eos_ids_of, left_pad
from ..errors import ConfigError

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


# The reader kind of each model family: causal families are those the edit model may have
# (robustedit.models.arch.CAUSAL_FAMILIES); seq2seq families can only read.
SEQ2SEQ_FAMILIES = {"t5": ("T5ForConditionalGeneration", ("t5",))}  # family -> (class, config.model_type)


def reader_kind(model_cfg: Mapping) -> str:
    """'seq2seq' or 'causal' for a reader's model config; an unknown family is a ConfigError."""
    from ..models.arch import CAUSAL_FAMILIES

    family = model_cfg.get("family")
    if family in SEQ2SEQ_FAMILIES:
        return "seq2seq"
    if family in CAUSAL_FAMILIES:
        return "causal"
    raise ConfigError(f"reader {model_cfg.get('name')!r}: model.family={family!r} is unknown; readers: "
                      f"{sorted(CAUSAL_FAMILIES)} (causal) or {sorted(SEQ2SEQ_FAMILIES)} (seq2seq)")


def _until_eos(row: Sequence[int], eos: set[int]) -> list[int]:
    """A generated row up to (not including) its first stop token; what follows is padding."""
    out = []
    for t in row:
        if t in eos:
            break
        out.append(int(t))
    return out


class _BatchedReader:
    """Length-sorted batching, progress and decoding shared by both reader kinds; a subclass sets
    `format`, `add_special_tokens` and `_generate_batch(rows, max_new_tokens) -> new token rows`."""

    add_special_tokens = True

    def __init__(self, model, tokenizer, device: str | torch.device, batch_size: int, progress: bool):
        if batch_size < 1:
            raise ConfigError(f"reader batch_size must be >= 1, got {batch_size}")
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer  # only read: tokenized without padding, decoded; never modified
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.progress = progress
        self.eos_ids = eos_ids_of(model)

    def format(self, prompt: str) -> str:
        """The exact text fed to the model for a prompt."""
        return prompt

    @torch.no_grad()
    def generate_ids(self, prompts: Sequence[str], max_new_tokens: int = MAX_NEW_TOKENS) -> list[list[int]]:
        """Greedy new token ids per prompt, in input order, each cut before its first stop token."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        texts = [self.format(p) for p in prompts]
        if not texts:
            return []
        rows = self.tokenizer(texts, add_special_tokens=self.add_special_tokens)["input_ids"]
        # Batch prompts of similar length together (less padding); outputs are restored to input order.
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        outputs: list[list[int]] = [[] for _ in rows]
        starts = range(0, len(order), self.batch_size)
        if self.progress and len(starts) > 1:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"reader ({len(order)} prompts)", unit="batch", mininterval=10)
        for start in starts:
            idx = order[start:start + self.batch_size]
            new = self._generate_batch([rows[i] for i in idx], max_new_tokens)
            for i, row in zip(idx, new.tolist()):
                outputs[i] = _until_eos(row, self.eos_ids)
        return outputs

    def generate(self, prompts: Sequence[str], max_new_tokens: int = MAX_NEW_TOKENS) -> list[str]:
        ids = self.generate_ids(prompts, max_new_tokens)
        return [t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)] if ids else []


class ChatReader(_BatchedReader):
    """A causal LM reader: chat-templated prompts, left-padded batches, `max_new_tokens` new tokens."""

    def __init__(self, model, tokenizer, device: str | torch.device = "cpu", batch_size: int = 16,
                 use_chat_template: bool | None = None, progress: bool = False):
        # device "cpu": tests build readers directly; the stages pass hardware.device via load_reader.
        # 16 prompts per batch: EREN prompts are ~100-300 tokens, so this fits CPU memory easily.
        # use_chat_template None: use the tokenizer's template if it has one (load_reader passes the config's).
        # progress: a tqdm bar over batches on stderr (the pipeline's stages turn it on for their logs).
        super().__init__(model, tokenizer, device, batch_size, progress)
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if use_chat_template and not has_template:
            raise ConfigError("use_chat_template=True (model.chat_template) but the reader's tokenizer has no "
                              "chat template")
        self.use_chat_template = has_template if use_chat_template is None else use_chat_template
        # With a chat template the text already holds any BOS the model expects.
        self.add_special_tokens = not self.use_chat_template
        self.pad_id = self._pad_id(tokenizer)

    @staticmethod
    def _pad_id(tokenizer) -> int:
        """The id written into left padding: pad, else eos, else unk. Its value never matters (the
        attention mask hides it and the position ids skip it); Llama-2 and Mistral have no pad token."""
        for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id):
            if tid is not None:
                return tid
        raise ConfigError("the reader's tokenizer has no pad, eos or unk token to pad batches with")

    def format(self, prompt: str) -> str:
        if not self.use_chat_template:
            return prompt
        return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                  add_generation_prompt=True)

    def _generate_batch(self, rows: list[list[int]], max_new_tokens: int) -> torch.Tensor:
        ids, mask = left_pad(rows, self.pad_id)
        # Greedy whatever the model's generation_config says (Llama-2-chat's samples); max_length=None: the
        # budget is max_new_tokens alone, even where the generation_config sets a max_length (4096 there).
        gen = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                  do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, max_length=None,
                                  pad_token_id=self.pad_id)
        return gen[:, ids.shape[1]:]


class Seq2SeqReader(_BatchedReader):
    """An encoder-decoder reader (FLAN-T5): plain prompts with the tokenizer's special tokens (T5 appends
    </s>), right-padded, greedy `generate(max_length=max_new_tokens)` as EREN calls it."""

    def __init__(self, model, tokenizer, device: str | torch.device, batch_size: int = 16, progress: bool = False):
        # 16 prompts per batch and progress: as ChatReader.
        super().__init__(model, tokenizer, device, batch_size, progress)
        self.pad_id = model.config.pad_token_id
        if self.pad_id is None:
            raise ConfigError("the seq2seq reader's config.json has no pad_token_id to pad the encoder input with")

    def _generate_batch(self, rows: list[list[int]], max_new_tokens: int) -> torch.Tensor:
        from ..batching import right_pad

        ids, mask = right_pad(rows, pad_id=self.pad_id, device=self.device)
        # EREN: model.generate(**inputs, max_length=max_length), greedy; max_new_tokens=None so that a
        # generation_config's max_new_tokens cannot take precedence. The output starts with the decoder start token.
        gen = self.model.generate(input_ids=ids, attention_mask=mask, do_sample=False, num_beams=1,
                                  max_length=max_new_tokens, max_new_tokens=None)
        return gen[:, 1:]
