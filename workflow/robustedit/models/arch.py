"""Architecture adapters: turn a model description into modules. Models are described, not sniffed.

A model config names its `family`. A preset family (llama, mistral, gemma3) fixes the transformers class
and the accepted `config.model_type`s; `family: custom` takes both from the config (`hf_class`,
`model_types`), so any Llama-like causal LM (Qwen2, Qwen3, ...) can be described in YAML. Every family
starts from the Llama module-name templates (`{}` is the layer index); `modules:` overrides single ones.
Nothing is inferred from names: the loaded model is checked against the description (`Architecture.check`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch.nn as nn

from ..errors import ConfigError

MODULE_KINDS = ("layers", "layer", "mlp", "down_proj", "final_norm", "lm_head", "embed")
CUSTOM = "custom"  # the family of a model whose class and model_type its config states


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


# Presets. LLaMA-2/3, Mistral and Gemma-3 share module paths; they differ in class and model_type.
FAMILIES: dict[str, Family] = {
    "llama": Family("LlamaForCausalLM", ("llama",)),
    "mistral": Family("MistralForCausalLM", ("mistral",)),
    "gemma3": Family("Gemma3ForCausalLM", ("gemma3_text", "gemma3")),
}
CAUSAL_FAMILIES = (*FAMILIES, CUSTOM)  # what model.family may be for a causal LM (edit model or reader)


def resolve_family(family: str, hf_class: str | None = None, model_types=None) -> Family:
    """The Family a config describes: a preset by name, or `custom` with model.hf_class and model.model_types."""
    if family == CUSTOM:
        return _described_family(hf_class, model_types)
    if family not in FAMILIES:
        raise ConfigError(f"model.family={family!r} is unknown; known families: {sorted(CAUSAL_FAMILIES)} "
                          "(custom: give model.hf_class and model.model_types)")
    if hf_class is not None or model_types is not None:
        raise ConfigError(f"model.family={family!r} is a preset ({FAMILIES[family].hf_class}): drop model.hf_class "
                          "and model.model_types, or set model.family: custom to describe another class")
    return FAMILIES[family]


def _described_family(hf_class, model_types) -> Family:
    if not isinstance(hf_class, str) or not hf_class.isidentifier():
        raise ConfigError(f"model.family='custom' needs model.hf_class, the transformers class the weights load as "
                          f"(e.g. Qwen2ForCausalLM); got {hf_class!r}")
    if isinstance(model_types, str) or not model_types or not all(isinstance(t, str) and t for t in model_types):
        raise ConfigError(f"model.family='custom' needs model.model_types, a non-empty list of accepted config.json "
                          f"model_type values (e.g. [qwen2]); got {model_types!r}")
    return Family(hf_class, tuple(model_types))


class Architecture:
    """Resolves module paths for one described model and checks a loaded model against it."""

    def __init__(self, family: str, n_layers: int, templates: dict | None = None, *,
                 hf_class: str | None = None, model_types=None):
        # hf_class, model_types None: a preset family fixes them (only `custom` reads them)
        self.family_name = family
        self.family = resolve_family(family, hf_class, model_types)
        self.label = self.family.hf_class if family == CUSTOM else family  # how messages name the model
        unknown = set(templates or {}) - set(MODULE_KINDS)
        if unknown:
            raise ConfigError(f"model.modules has unknown keys {sorted(unknown)}; known: {list(MODULE_KINDS)}")
        self.templates = replace(self.family.templates, **{k: v for k, v in (templates or {}).items() if v})
        self.n_layers = int(n_layers)

    @classmethod
    def from_config(cls, model_cfg) -> "Architecture":
        return cls(model_cfg["family"], model_cfg["n_layers"], dict(model_cfg.get("modules") or {}),
                   hf_class=model_cfg.get("hf_class"), model_types=model_cfg.get("model_types"))

    def check_layer(self, layer: int) -> int:
        if not isinstance(layer, int) or not 0 <= layer < self.n_layers:
            raise ConfigError(f"layer {layer!r} is out of range for a {self.n_layers}-layer {self.label} model")
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
            raise ConfigError(f"module {name!r} ({kind}) not found in {type(model).__name__}: set "
                              f"model.modules.{kind} to its path (`{{}}` = layer index)") from e

    # ------------------------------------------------------------ checks against the loaded model
    def check(self, model: nn.Module) -> None:
        """Fail clearly, naming the config key, if the loaded model is not what the config describes."""
        self._check_class(model)
        self.check_config(model.config)
        self._check_blocks(model)
        for kind in ("embed", "final_norm", "lm_head"):
            self.module(model, kind)
        for i in range(self.n_layers):
            self._check_down_proj(model, i)

    def check_config(self, config) -> None:
        """model_type and layer count of a config.json (also before the weights are loaded)."""
        model_type = getattr(config, "model_type", None)
        if model_type not in self.family.model_types:
            key = "model.model_types" if self.family_name == CUSTOM else "model.family"
            raise ConfigError(f"family {self.family_name!r} expects model_type in {self.family.model_types}, got "
                              f"{model_type!r} ({key}; describe another model with family: custom, model.hf_class "
                              "and model.model_types)")
        n = config.num_hidden_layers
        if n != self.n_layers:
            raise ConfigError(f"model.n_layers={self.n_layers} but the loaded model has {n} layers")

    def _check_class(self, model: nn.Module) -> None:
        cls = type(model).__name__
        if cls != self.family.hf_class:
            key = "model.hf_class" if self.family_name == CUSTOM else "model.family"
            raise ConfigError(f"family {self.family_name!r} expects {self.family.hf_class}, loaded {cls} ({key}; "
                              "describe another class with family: custom, model.hf_class and model.model_types)")

    def _check_blocks(self, model: nn.Module) -> None:
        layers = self.module(model, "layers")
        if not isinstance(layers, nn.ModuleList) or len(layers) != self.n_layers:
            raise ConfigError(f"model.modules.layers: {self.name('layers')!r} is a {type(layers).__name__} of "
                              f"{len(layers) if hasattr(layers, '__len__') else '?'} modules, expected a ModuleList "
                              f"of model.n_layers={self.n_layers} decoder blocks")
        for i in range(self.n_layers):
            if self.module(model, "layer", i) is not layers[i]:
                raise ConfigError(f"model.modules.layer: {self.name('layer', i)!r} is not block {i} of "
                                  f"model.modules.layers ({self.name('layers')!r})")
            self.module(model, "mlp", i)

    def _check_down_proj(self, model: nn.Module, layer: int) -> None:
        """ROME's edited weight: an nn.Linear inside the MLP whose input (the key) is the MLP's hidden width."""
        name, mlp = self.name("down_proj", layer), self.name("mlp", layer)
        down = self.module(model, "down_proj", layer)
        if not isinstance(down, nn.Linear):
            raise ConfigError(f"model.modules.down_proj: {name!r} is a {type(down).__name__}; ROME edits the weight "
                              "of an nn.Linear (its input is the key)")
        if not name.startswith(mlp + "."):
            raise ConfigError(f"model.modules.down_proj: {name!r} is not inside model.modules.mlp ({mlp!r}); ROME "
                              "adds its change to the MLP's output, which must be down_proj's output")
        width = getattr(model.config, "intermediate_size", None)  # None: the config does not say; not checked
        if width is not None and down.in_features != width:
            raise ConfigError(f"model.modules.down_proj: {name!r} has in_features={down.in_features}, but the key "
                              f"dimension (config intermediate_size) is {width}; point it at the MLP's output "
                              "projection")

    def key_dim(self, model: nn.Module, layer: int) -> int:
        """Dimension of ROME's key (the down-projection input)."""
        return self.module(model, "down_proj", layer).in_features
