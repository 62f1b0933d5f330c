"""Which layers eval.sequential's methods edit, and where each layer's second moment lives (light: the rules
import it to plan the stats jobs of MEMIT's layers)."""
from __future__ import annotations

from robustedit.errors import ConfigError

MEMIT_LAYERS_BELOW, MEMIT_N_LAYERS = 1, 5  # eval.sequential.memit.layers=null: model.layer-1 .. model.layer+3


def memit_layers(cfg: dict) -> list[int]:
    """eval.sequential.memit.layers (a layer the model lacks is an error), or five layers from one below the
    ROME layer (EasyEdit's Llama-2 [4..8] around ROME's 5), those the model has."""
    layers = cfg["eval"]["sequential"]["memit"]["layers"]
    if layers is None:  # the rule's layers, those the model has (a 4-layer test model: [0..3])
        start = cfg["model"]["layer"] - MEMIT_LAYERS_BELOW
        return [x for x in range(start, start + MEMIT_N_LAYERS) if 0 <= x < cfg["model"]["n_layers"]]
    if min(layers) < 0 or max(layers) >= cfg["model"]["n_layers"]:
        raise ConfigError(f"eval.sequential.memit.layers {layers} is outside the model's {cfg['model']['n_layers']} "
                          f"layers (model.layer={cfg['model']['layer']})")
    return layers


def method_layers(cfg: dict, method: str) -> list[int]:
    return [cfg["model"]["layer"]] if method == "rome" else memit_layers(cfg)


def moment_layers(cfg: dict) -> list[int]:
    """Every layer whose second moment a method of eval.sequential reads (a stats directory each)."""
    return sorted({x for m in cfg["eval"]["sequential"]["methods"] for x in method_layers(cfg, m)})


def at_layer(cfg: dict, layer: int) -> dict:
    """The config whose stats directory holds `layer`'s second moment (model.layer is all that differs)."""
    return {**cfg, "model": {**cfg["model"], "layer": layer}}
