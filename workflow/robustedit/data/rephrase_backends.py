"""Chat models that write subject rephrases: an OpenAI-compatible HTTP API or a local chat model.

A backend turns a list of user messages into a list of assistant replies, one per message, in order.
`name`, `model` and `settings` describe everything that changes its output; the rephrase cache is
keyed by them (secrets such as the API key and addresses such as base_url are not part of it).
"""
from __future__ import annotations

import abc
import ipaddress
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..errors import ConfigError, ModelNotAvailableError, RobustEditError

# HTTP statuses worth retrying: rate limiting and transient server-side failures.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class RephraseBackendError(RobustEditError):
    """The chat backend answered with an error or with a reply that is not a chat completion."""


@dataclass(frozen=True)
class Reply:
    text: str
    truncated: bool | None  # stopped by the token limit (its last line may be cut); None: unknown


class RephraseBackend(abc.ABC):
    kind: str  # "api" or "local"
    model: str  # the model's name as the backend knows it

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.model}"

    @property
    @abc.abstractmethod
    def settings(self) -> dict:
        """Decoding settings that change the replies (part of the cache key)."""

    @abc.abstractmethod
    def complete(self, prompts: list[str]) -> list[str]:
        """One chat completion of a single user message per prompt, in order."""

    def replies(self, prompts: list[str]) -> list[Reply]:
        """Like complete(), saying whether each reply hit the token limit (unknown by default)."""
        return [Reply(text, None) for text in self.complete(prompts)]


def _is_loopback(host: str | None) -> bool:
    if host is None or host == "localhost":
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ApiBackend(RephraseBackend):
    """OpenAI Chat Completions over plain urllib: OpenAI, vLLM, `transformers serve`, ..."""

    kind = "api"

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *,
                 timeout_s: float = 120.0,  # one reply of a few hundred tokens; CPU servers are slow
                 max_tokens: int = 256,  # ten short rephrases fit in ~150 tokens; more only for chatter
                 temperature: float = 0.0,  # the paper's setting is unstated; 0 makes reruns comparable
                 retries: int = 2,  # extra attempts on 429/5xx/timeouts before giving up
                 backoff_s: float = 2.0,  # wait before retry k is backoff_s * 2**k
                 max_concurrency: int = 1):  # parallel requests per complete() call
        parsed = urllib.parse.urlparse(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(f"rephrase API base_url {base_url!r} is not an http(s) URL "
                              "(e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1)")
        if not model:
            raise ConfigError("rephrase API model name is empty")
        if max_concurrency < 1 or retries < 0 or max_tokens < 1:
            raise ConfigError(f"rephrase API: max_concurrency={max_concurrency}, retries={retries}, "
                              f"max_tokens={max_tokens} must be >=1, >=0, >=1")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._api_key = api_key
        self.timeout_s, self.max_tokens, self.temperature = timeout_s, max_tokens, temperature
        self.retries, self.backoff_s, self.max_concurrency = retries, backoff_s, max_concurrency
        # A loopback server must never be reached through an HTTP proxy from the environment.
        handlers = [urllib.request.ProxyHandler({})] if _is_loopback(parsed.hostname) else []
        self._opener = urllib.request.build_opener(*handlers)

    def __repr__(self) -> str:  # never shows the key
        return f"ApiBackend(base_url={self.base_url!r}, model={self.model!r})"

    @property
    def settings(self) -> dict:
        return {"temperature": self.temperature, "max_tokens": self.max_tokens}

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def complete(self, prompts: list[str]) -> list[str]:
        return [r.text for r in self.replies(prompts)]

    def replies(self, prompts: list[str]) -> list[Reply]:
        if self.max_concurrency == 1 or len(prompts) <= 1:
            return [self.reply_one(p) for p in prompts]
        with ThreadPoolExecutor(self.max_concurrency) as pool:
            return list(pool.map(self.reply_one, prompts))

    def reply_one(self, prompt: str) -> Reply:
        payload = {"model": self.model, "messages": [{"role": "user", "content": prompt}],
                   "temperature": self.temperature, "max_tokens": self.max_tokens}
        reply = self._post(payload)
        try:
            choice = reply["choices"][0]
            content = choice["message"]["content"]
        except (KeyError, IndexError, TypeError) as e:
            raise RephraseBackendError(f"{self.url}: reply has no choices[0].message.content: "
                                       f"{json.dumps(reply)[:300]}") from e
        if not isinstance(content, str):
            raise RephraseBackendError(f"{self.url}: choices[0].message.content is "
                                       f"{type(content).__name__}, not text")
        finish = choice.get("finish_reason")
        return Reply(content, {"length": True, "stop": False}.get(finish))

    def _post(self, payload: dict) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        data = json.dumps(payload).encode()
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with self._opener.open(request, timeout=self.timeout_s) as resp:
                    body = resp.read()
            except urllib.error.HTTPError as e:
                excerpt = e.read()[:500].decode("utf-8", "replace")
                if e.code in RETRY_STATUSES and not last:
                    time.sleep(self.backoff_s * 2 ** attempt)
                    continue
                raise RephraseBackendError(f"{self.url}: HTTP {e.code} {e.reason}: {excerpt}") from e
            except urllib.error.URLError as e:
                if isinstance(e.reason, ConnectionRefusedError):
                    raise ModelNotAvailableError(
                        f"no server answers at {self.base_url} (connection refused). Start an "
                        "OpenAI-compatible server there, e.g. `transformers serve <model folder> --host "
                        "127.0.0.1 --port 8000` (needs fastapi, uvicorn, openai) or `vllm serve <model>`, "
                        "or use base_url https://api.openai.com/v1 with an API key") from e
                if isinstance(e.reason, (TimeoutError, socket.timeout)) and not last:
                    time.sleep(self.backoff_s * 2 ** attempt)
                    continue
                raise RephraseBackendError(f"cannot reach {self.url}: {e.reason}") from e
            except (TimeoutError, socket.timeout) as e:
                if not last:
                    time.sleep(self.backoff_s * 2 ** attempt)
                    continue
                raise RephraseBackendError(f"{self.url}: no reply within {self.timeout_s} s "
                                           f"({self.retries + 1} attempts)") from e
            try:
                reply = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise RephraseBackendError(f"{self.url}: reply is not JSON ({e}): "
                                           f"{body[:300].decode('utf-8', 'replace')!r}") from e
            if not isinstance(reply, dict):
                raise RephraseBackendError(f"{self.url}: reply is a JSON {type(reply).__name__}, not an object")
            return reply
        raise AssertionError("unreachable")


class LocalChatBackend(RephraseBackend):
    """A local instruction-tuned causal LM with its chat template; greedy, batched, left-padded."""

    kind = "local"

    def __init__(self, model, tokenizer, device, *, model_name: str,
                 max_new_tokens: int = 200,  # ten rephrases of a short subject need ~120-180 tokens
                 batch_size: int = 8):  # prompts per generate() call; bounds memory, not results
        if getattr(tokenizer, "chat_template", None) is None:
            raise ConfigError(f"local rephrase model {model_name!r}: tokenizer has no chat template "
                              "(use an instruction-tuned model)")
        if tokenizer.pad_token_id is None:
            raise ConfigError(f"local rephrase model {model_name!r}: tokenizer has no pad token; "
                              "load it with robustedit.models.load.load_model (sets pad = eos)")
        if max_new_tokens < 1 or batch_size < 1:
            raise ConfigError(f"local rephrase model {model_name!r}: max_new_tokens={max_new_tokens} "
                              f"and batch_size={batch_size} must be >= 1")
        self.lm, self.tokenizer, self.device = model, tokenizer, device
        self.model = model_name
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size

    @property
    def settings(self) -> dict:
        return {"decoding": "greedy", "max_new_tokens": self.max_new_tokens}

    def _eos_ids(self) -> list[int]:
        """End-of-turn ids: the model's generation config's and the tokenizer's eos (both if differ)."""
        gen_eos = getattr(getattr(self.lm, "generation_config", None), "eos_token_id", None)
        ids = gen_eos if isinstance(gen_eos, list) else [gen_eos]
        return sorted({i for i in ids + [self.tokenizer.eos_token_id] if i is not None})

    def complete(self, prompts: list[str]) -> list[str]:
        return [r.text for r in self.replies(prompts)]

    def replies(self, prompts: list[str]) -> list[Reply]:
        import torch
        from transformers import GenerationConfig

        tok = self.tokenizer
        # A fresh config so decoding depends only on our arguments, not on generation_config.json.
        eos_ids = self._eos_ids()
        gen_cfg = GenerationConfig(do_sample=False, max_new_tokens=self.max_new_tokens,
                                   pad_token_id=tok.pad_token_id, eos_token_id=eos_ids)
        out: list[Reply] = []
        for start in range(0, len(prompts), self.batch_size):
            chunk = prompts[start:start + self.batch_size]
            texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                             add_generation_prompt=True) for p in chunk]
            # The template already holds the special tokens; left padding is a per-call argument,
            # so the caller's tokenizer (padding_side="right" elsewhere in the pipeline) is untouched.
            enc = tok(texts, return_tensors="pt", padding=True, padding_side="left",
                      add_special_tokens=False).to(self.device)
            with torch.inference_mode():
                gen = self.lm.generate(**enc, generation_config=gen_cfg)
            new = gen[:, enc["input_ids"].shape[1]:]
            ended = torch.isin(new, torch.tensor(eos_ids, device=new.device)).any(dim=1)
            texts = tok.batch_decode(new, skip_special_tokens=True)
            out.extend(Reply(t, not bool(e)) for t, e in zip(texts, ended.tolist()))
        return out
