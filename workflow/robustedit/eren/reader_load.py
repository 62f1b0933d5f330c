"""Loading EREN's readers from their prepared model folders: load_reader (by the reader's model config,
checked against the folder before weights load) and load_chat_reader (a causal reader without a config, for tests).
The reader classes themselves are in robustedit.eren.reader.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import torch

from ..errors import ConfigError, ModelNotAvailableError
from .reader import SEQ2SEQ_FAMILIES, ChatReader, Seq2SeqReader, reader_kind


def _expected(model_cfg: Mapping, kind: str) -> tuple[str, tuple[str, ...]]:
    """(transformers class, accepted config.model_type values) of the reader's family."""
    from ..models.arch import resolve_family

    family = model_cfg["family"]
    if kind == "seq2seq":
        return SEQ2SEQ_FAMILIES[family]
    described = resolve_family(family, model_cfg.get("hf_class"), model_cfg.get("model_types"))  # preset or custom
    return described.hf_class, described.model_types


def _check_folder_config(config, model_cfg: Mapping, kind: str) -> None:
    """Fail clearly, before loading weights, if the folder holds another model than the config describes."""
    hf_class, model_types = _expected(model_cfg, kind)
    name, family = model_cfg["name"], model_cfg["family"]
    if config.model_type not in model_types:
        raise ConfigError(f"reader {name}: model.family={family!r} expects {hf_class} (model_type in {model_types}), "
                          f"the folder's config.json has model_type {config.model_type!r} ({config.architectures})")
    n = config.num_layers if kind == "seq2seq" else config.num_hidden_layers
    if n != model_cfg["n_layers"]:
        raise ConfigError(f"reader {name}: model.n_layers={model_cfg['n_layers']} but the folder's model has {n}")


def load_reader(model_dir: str | Path, model_cfg: Mapping, *, device: str | torch.device,
                dtype: str | torch.dtype, batch_size: int = 16, progress: bool = False) -> ChatReader | Seq2SeqReader:
    """The reader described by `model_cfg` (a conf/model/*.yaml dict) from its prepared folder (a Hugging
    Face folder: config.json, weights, tokenizer), frozen, on `device` in `dtype`.

    The kind follows model.family (reader_kind); the tokenizer's BOS behaviour must match model.add_bos and a
    causal reader uses its chat template exactly when model.chat_template is true. `device` follows
    robustedit.models.load.resolve_device ("cuda" without a GPU is an error).
    """
    # batch_size 16 and progress off: as ChatReader; the stages pass hardware.batch_size and progress=True.
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    from ..models.load import check_pad, check_tokenizer, resolve_device, resolve_dtype

    device = resolve_device(device) if isinstance(device, str) else device
    dtype = resolve_dtype(dtype) if isinstance(dtype, str) else dtype
    kind = reader_kind(model_cfg)
    if kind == "seq2seq" and model_cfg["chat_template"]:
        raise ConfigError(f"reader {model_cfg['name']}: a seq2seq reader reads plain prompts; set "
                          "model.chat_template: false")
    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise ModelNotAvailableError(f"no reader model at {path}; run `make models` (or the prepare_model rule "
                                     f"for {model_cfg['name']}) first")
    _check_folder_config(AutoConfig.from_pretrained(path), model_cfg, kind)
    tok = AutoTokenizer.from_pretrained(path)
    check_tokenizer(tok, dict(model_cfg))
    check_pad(tok, dict(model_cfg))  # model.pad, where given, describes the tokenizer (the reader pads itself)
    auto = AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForCausalLM
    model = auto.from_pretrained(path, dtype=dtype)
    hf_class = _expected(model_cfg, kind)[0]
    if type(model).__name__ != hf_class:
        raise ConfigError(f"reader {model_cfg['name']}: model.family={model_cfg['family']!r} expects {hf_class}, "
                          f"loaded {type(model).__name__}")
    for p in model.parameters():
        p.requires_grad_(False)
    if kind == "seq2seq":
        return Seq2SeqReader(model, tok, device=device, batch_size=batch_size, progress=progress)
    return ChatReader(model, tok, device=device, batch_size=batch_size,
                      use_chat_template=bool(model_cfg["chat_template"]), progress=progress)


def load_chat_reader(model_dir: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype = "float32",
                     batch_size: int = 16, use_chat_template: bool | None = None,
                     progress: bool = False) -> ChatReader:
    """A causal reader from a prepared folder without its model config (tests; the stages use load_reader).

    Defaults: CPU in float32 (the test machine), the tokenizer's chat template if it has one.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..models.load import resolve_device, resolve_dtype

    device = resolve_device(device) if isinstance(device, str) else device
    dtype = resolve_dtype(dtype) if isinstance(dtype, str) else dtype

    model_dir = Path(model_dir)
    pointer = model_dir / "hub.json"  # a folder prepared by older code may point at a hub snapshot instead
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
