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


ON_ROME = "rep"  # ROME+REP: scored on ROME's sequence of edits, with the edited cases' adaptors
NO_WEIGHTS = "eren"  # edits notes, not weights
METHODS = ("rome", ON_ROME, "memit", "alphaedit", NO_WEIGHTS)  # eval.sequential.methods' choices


def sequential_runs(methods: list[str]) -> dict[str, list[str]]:
    """The sequences the stage runs, each with the methods scored on it, in config order: one ROME sequence
    scores rome and rep (whichever are listed); memit, alphaedit and eren run apart."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ConfigError(f"eval.sequential.methods {methods}: use some of {list(METHODS)}")
    runs: dict[str, list[str]] = {}
    for method in methods:
        runs.setdefault("rome" if method == ON_ROME else method, []).append(method)
    return runs


def method_layers(cfg: dict, method: str) -> list[int]:
    """The layers whose weights a method's sequence edits (ROME's for rep; none for eren)."""
    if method == NO_WEIGHTS:
        return []
    return [cfg["model"]["layer"]] if method in ("rome", ON_ROME) else memit_layers(cfg)


def moment_layers(cfg: dict) -> list[int]:
    """Every layer whose second moment a method of eval.sequential reads (a stats directory each)."""
    return sorted({x for m in cfg["eval"]["sequential"]["methods"] for x in method_layers(cfg, m)})


def at_layer(cfg: dict, layer: int) -> dict:
    """The config whose stats directory holds `layer`'s second moment (model.layer is all that differs)."""
    return {**cfg, "model": {**cfg["model"], "layer": layer}}
