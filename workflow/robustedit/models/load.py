"""Load a prepared model folder with its tokenizer, checked against its description."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import ConfigError, ModelNotAvailableError
from .arch import Architecture

DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ConfigError(f"dtype {name!r} is unknown; use one of {sorted(DTYPES)}")
    return DTYPES[name]


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when available; an explicit 'cuda' without a GPU is an error, not a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"hardware.device={name!r} but no CUDA device is visible; use hardware=cpu")
    return dev


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    arch: Architecture
    cfg: dict  # the model config it was described by

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def check_tokenizer(tok, model_cfg: dict) -> None:
    """The config states whether the tokenizer prepends BOS; verify rather than trust."""
    ids = tok("Paris")["input_ids"]
    adds_bos = tok.bos_token_id is not None and len(ids) > 0 and ids[0] == tok.bos_token_id
    if adds_bos != bool(model_cfg["add_bos"]):
        raise ConfigError(
            f"model {model_cfg['name']}: model.add_bos={model_cfg['add_bos']} but the tokenizer "
            f"{'adds' if adds_bos else 'does not add'} BOS; set model.add_bos: {str(adds_bos).lower()}"
        )


PAD_EOS, PAD_NONE = "eos", "none"  # model.pad values that are not a token: pad with EOS / no pad token


def check_pad(tok, model_cfg: dict) -> None:
    """model.pad states the tokenizer's own pad behaviour; verify rather than trust.

    eos: it has no pad token (the loader pads with EOS); none: it has none and none is set (batches are
    padded with masked placeholder ids); any other string: its pad token is exactly that token.
    Absent or null (configs written before model.pad): not checked; the loader pads with EOS if needed."""
    pad, own, name = model_cfg.get("pad"), tok.pad_token, model_cfg.get("name")
    if pad is None:
        return
    if pad in (PAD_EOS, PAD_NONE):
        if own is not None:
            raise ConfigError(f"model {name}: model.pad={pad!r} says the tokenizer has no pad token, but it has "
                              f"{own!r}; set model.pad: {own!r}")
        if pad == PAD_EOS and tok.eos_token is None:
            raise ConfigError(f"model {name}: model.pad='eos' but the tokenizer has no eos token; set model.pad: none")
        return
    if own != pad:
        fix = repr(own) if own is not None else "eos (pad with EOS) or none"
        raise ConfigError(f"model {name}: model.pad={pad!r} but the tokenizer's pad token is {own!r}; "
                          f"set model.pad: {fix}")


def apply_pad(tok, model_cfg: dict) -> None:
    """Give the tokenizer the pad token the description asks for (after check_pad): EOS for `eos`, and for
    an absent/null model.pad when the tokenizer has none (what load_model always did); `none` sets nothing."""
    if tok.pad_token_id is None and model_cfg.get("pad") in (None, PAD_EOS):
        tok.pad_token = tok.eos_token


def load_tokenizer(path: Path, model_cfg: dict):
    """The folder's tokenizer, right-padded, its BOS and pad behaviour checked against the description."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "right"  # ROME-family label alignment assumes right padding
    check_pad(tok, model_cfg)
    apply_pad(tok, model_cfg)
    check_tokenizer(tok, model_cfg)
    return tok


def load_model(model_dir: str | Path, model_cfg: dict, device: str = "cpu", dtype: str = "float32") -> LoadedModel:
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(model_dir)  # every source, hub snapshots too, is prepared into a plain model folder
    if not (path / "config.json").is_file():
        raise ModelNotAvailableError(
            f"no model at {path}; run `snakemake --cores all prepare_models` (or `make models`) first"
        )
    arch = Architecture.from_config(model_cfg)
    arch.check_config(AutoConfig.from_pretrained(path))  # before the weights: a wrong folder fails in seconds
    tok = load_tokenizer(path, model_cfg)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype))
    model.to(resolve_device(device)).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    arch.check(model)
    return LoadedModel(model, tok, arch, dict(model_cfg))
