"""Architecture adapters: turn a model description into modules. Models are described, not sniffed.

A model config names its `family`; the family gives the expected transformers class and default
module-name templates (`{}` is the layer index). A config may override single templates.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch.nn as nn

from ..errors import ConfigError

MODULE_KINDS = ("layers", "layer", "mlp", "down_proj", "final_norm", "lm_head", "embed")


@dataclass(frozen=True)
class ModuleTemplates:
    layers: str = "model.layers"  # the ModuleList of decoder blocks
    layer: str = "model.layers.{}"  # one decoder block
    mlp: str = "model.layers.{}.mlp"  # ROME adds delta to this module's output
    down_proj: str = "model.layers.{}.mlp.down_proj"  # ROME edits this weight; its input is the key
    final_norm: str = "model.norm"
    lm_head: str = "lm_head"
    embed: str = "model.embed_tokens"


@dataclass(frozen=True)
class Family:
    hf_class: str  # transformers class the weights must load as
    model_types: tuple[str, ...]  # accepted config.model_type values
    templates: ModuleTemplates = field(default_factory=ModuleTemplates)


# LLaMA-2, Mistral and Gemma-3 share module paths; they differ in class and model_type.
FAMILIES: dict[str, Family] = {
    "llama": Family("LlamaForCausalLM", ("llama",)),
    "mistral": Family("MistralForCausalLM", ("mistral",)),
    "gemma3": Family("Gemma3ForCausalLM", ("gemma3_text", "gemma3")),
}


class Architecture:
    """Resolves module paths for one described model and checks a loaded model against it."""

    def __init__(self, family: str, n_layers: int, templates: dict | None = None):
        if family not in FAMILIES:
            raise ConfigError(f"model.family={family!r} is unknown; known families: {sorted(FAMILIES)}")
        self.family_name = family
        self.family = FAMILIES[family]
        unknown = set(templates or {}) - set(MODULE_KINDS)
        if unknown:
            raise ConfigError(f"model.modules has unknown keys {sorted(unknown)}; known: {list(MODULE_KINDS)}")
        self.templates = replace(self.family.templates, **{k: v for k, v in (templates or {}).items() if v})
        self.n_layers = int(n_layers)

    @classmethod
    def from_config(cls, model_cfg) -> "Architecture":
        return cls(model_cfg["family"], model_cfg["n_layers"], dict(model_cfg.get("modules") or {}))

    def check_layer(self, layer: int) -> int:
        if not isinstance(layer, int) or not 0 <= layer < self.n_layers:
            raise ConfigError(f"layer {layer!r} is out of range for a {self.n_layers}-layer {self.family_name} model")
        return layer

    def name(self, kind: str, layer: int | None = None) -> str:
        if kind not in MODULE_KINDS:
            raise ConfigError(f"unknown module kind {kind!r}; known: {list(MODULE_KINDS)}")
        tmpl = getattr(self.templates, kind)
        if "{}" in tmpl:
            if layer is None:
                raise ConfigError(f"module {kind!r} needs a layer index")
            return tmpl.format(self.check_layer(layer))
        return tmpl

    def module(self, model: nn.Module, kind: str, layer: int | None = None) -> nn.Module:
        name = self.name(kind, layer)
        try:
            return model.get_submodule(name)
        except AttributeError as e:
            raise ConfigError(f"module {name!r} ({kind}) not found in {type(model).__name__}") from e

    def check(self, model: nn.Module) -> None:
        """Fail clearly if the loaded model is not what the config describes."""
        cls = type(model).__name__
        if cls != self.family.hf_class:
            raise ConfigError(f"family {self.family_name!r} expects {self.family.hf_class}, loaded {cls}")
        model_type = getattr(model.config, "model_type", None)
        if model_type not in self.family.model_types:
            raise ConfigError(f"family {self.family_name!r} expects model_type in {self.family.model_types}, got {model_type!r}")
        n = model.config.num_hidden_layers
        if n != self.n_layers:
            raise ConfigError(f"model.n_layers={self.n_layers} but the loaded model has {n} layers")
        for kind in ("down_proj", "mlp"):
            self.module(model, kind, 0)
        self.module(model, "lm_head")
        self.module(model, "final_norm")

    def key_dim(self, model: nn.Module, layer: int) -> int:
        """Dimension of ROME's key (the down-projection input)."""
        return self.module(model, "down_proj", layer).in_features
