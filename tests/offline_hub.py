"""An offline stand-in for the Hugging Face hub: tiny random Llama and Mistral models saved in hub layout
(`<cache>/models--<org>--<name>/snapshots/<commit>/`) at the commit hash their conf/model/*.yaml pins, so
`prepare_model` reaches them through the real `snapshot_download` with HF_HUB_OFFLINE=1 and
HF_HUB_CACHE=<cache>, exactly as it reaches a real 7B model (only the weights are tiny and random).

The tokenizer keeps what matters of Llama-2's and Mistral's: it prepends BOS (`<s>`), has an EOS (`</s>`),
has NO pad token, and carries a Llama-2 style chat template ([INST] ... [/INST]); its vocabulary is
SmolLM2's byte-level BPE (offline) plus those two special tokens.
"""
from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
# Llama-2 chat format: the reader wraps each prompt as one user turn
LLAMA2_CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}{{ bos_token + '[INST] ' + m['content'] + ' [/INST]' }}"
    "{% else %}{{ ' ' + m['content'] + eos_token }}{% endif %}{% endfor %}"
)


def bos_tokenizer(base_tokenizer_json: Path, chat: bool):
    """A fast tokenizer that adds `<s>` in front of every text and has no pad token (as Llama-2's)."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    t = Tokenizer.from_file(str(base_tokenizer_json))
    t.add_special_tokens(["<s>", "</s>"])
    bos = t.token_to_id("<s>")
    t.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                     special_tokens=[("<s>", bos)])
    tok = PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<s>", eos_token="</s>")
    if chat:
        tok.chat_template = LLAMA2_CHAT_TEMPLATE
    assert tok.pad_token_id is None
    return tok


def tiny_causal_lm(family: str, vocab_size: int, bos_id: int, eos_id: int, n_layers: int, seed: int = 0):
    """A random LlamaForCausalLM / MistralForCausalLM with the real configs' structure, tiny widths."""
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    torch.manual_seed(seed)
    common = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=n_layers,
                  num_attention_heads=4, max_position_embeddings=4096, bos_token_id=bos_id,
                  eos_token_id=eos_id, pad_token_id=None, tie_word_embeddings=False, rms_norm_eps=1e-5)
    if family == "llama":
        return LlamaForCausalLM(LlamaConfig(num_key_value_heads=4, **common)).eval()
    if family == "mistral":  # grouped-query attention and a sliding window, as Mistral-7B
        return MistralForCausalLM(MistralConfig(num_key_value_heads=2, sliding_window=4096, **common)).eval()
    raise ValueError(f"no tiny stand-in for family {family!r}")


def hub_source(model_name: str) -> tuple[str, str, dict]:
    """(hub_id, pinned revision, model config) of conf/model/<model_name>.yaml."""
    cfg = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "model" / f"{model_name}.yaml"))
    return cfg["source"]["hub_id"], cfg["source"]["revision"], cfg


def snapshot_dir(cache: Path, hub_id: str, revision: str) -> Path:
    """The cache layout huggingface_hub reads offline: refs/main and snapshots/<commit>/."""
    repo = cache / f"models--{hub_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return repo / "snapshots" / revision


def fill_hub_cache(cache: Path, model_names: list[str], n_layers: dict[str, int] | None = None,
                   dtype=torch.bfloat16) -> Path:
    """Save one tiny random model per configured hub model into the cache, at its pinned revision, with
    the config's layer count unless `n_layers` names another (the run then overrides model.n_layers)."""
    base = REPO / "resources" / "models" / "smollm2-135m" / "tokenizer.json"
    for seed, name in enumerate(model_names):
        hub_id, revision, cfg = hub_source(name)
        out = snapshot_dir(cache, hub_id, revision)
        if (out / "config.json").is_file():
            continue
        tok = bos_tokenizer(base, chat=bool(cfg.get("chat_template")))
        layers = (n_layers or {}).get(name, cfg["n_layers"])
        model = tiny_causal_lm(cfg["family"], len(tok), tok.bos_token_id, tok.eos_token_id, layers, seed)
        model.to(dtype).save_pretrained(out)  # bf16 on disk, as the real checkpoints
        tok.save_pretrained(out)
        # real hub repos ship both formats; prepare_model must fetch (and link) only safetensors
        (out / "pytorch_model.bin").write_bytes(b"not loaded: the pipeline reads safetensors only")
    return cache
