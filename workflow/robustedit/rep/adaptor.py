"""REP's key adaptor (Robust Edit Pathway), as a functional map over a dict of tensors.

On keys x (the down_proj input, feature dimension D) the adaptor computes

    delta = B(A(dropout(x))) * alpha / r            A: D -> r (no bias), B: r -> D (no bias, zero init)
    g     = sigmoid(W2 gelu(W1 x + b1) + b2)        W1: D -> int(ratio * D), W2: -> 1   (the gate)
    train: x + delta * g                            (soft gate)
    test:  x + delta * [g > threshold]              (hard gate; strictly greater)

at every token position. The output is not normalised (normalisation lives only in the loss).
B = 0 at init, so a fresh adaptor is the identity in both modes. Parameters live in a plain dict
(`lora_A` [r, D], `lora_B` [D, r], `gate_w1` [H, D], `gate_b1` [H], `gate_w2` [1, H], `gate_b2` [1]),
so many adaptors can be stacked along a leading case dimension (see rep.apply).

Differences from the reference (ElliottYan/RobustKeyEdit, aggregator.py) are flags, not silent:
- `eval_dropout=True` reproduces its test-time dropout (its nn.Dropout child never leaves training
  mode); the default is deterministic evaluation.
- Dropout masks come from an explicit torch.Generator; the global RNG is never used.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError

MODES = ("train", "test")
PROJ_KEYS = ("lora_A", "lora_B")
GATE_KEYS = ("gate_w1", "gate_b1", "gate_w2", "gate_b2")


@dataclass(frozen=True)
class AdaptorConfig:
    rank: int = 32  # LoRA rank r (reference)
    alpha: float = 32.0  # LoRA alpha; scaling alpha / r = 1 (reference)
    dropout: float = 0.1  # dropout on the input of A (reference lora_dropout)
    gate: bool = True  # release script agg_use_cls=True; False -> g = 1 everywhere
    gate_inner_ratio: float = 0.1  # gate hidden width int(ratio * D) (reference agg_gate_inner_dim_ratio)
    threshold: float = 0.9  # test-time gate opens iff g > threshold (release cls_threshold)
    eval_dropout: bool = False  # True = reference quirk: dropout stays active at test time

    def __post_init__(self):
        if self.rank < 1:
            raise ConfigError(f"rep.adaptor.rank={self.rank} must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"rep.adaptor.dropout={self.dropout} must be in [0, 1)")
        if not 0.0 < self.gate_inner_ratio <= 1.0:
            raise ConfigError(f"rep.adaptor.gate_inner_ratio={self.gate_inner_ratio} must be in (0, 1]")
        if not 0.0 <= self.threshold < 1.0:
            raise ConfigError(f"rep.adaptor.threshold={self.threshold} must be in [0, 1)")

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def gate_dim(self, key_dim: int) -> int:
        h = int(key_dim * self.gate_inner_ratio)  # int() floors, as the reference
        if h < 1:
            raise ConfigError(f"gate width int({key_dim} * {self.gate_inner_ratio}) = 0; raise gate_inner_ratio")
        return h

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AdaptorConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"rep.adaptor has unknown keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


def _linear_default_(weight: torch.Tensor, bias: torch.Tensor | None, gen: torch.Generator) -> None:
    """nn.Linear's default init: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)); bias U(+-1/sqrt(fan_in))."""
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=gen)
    if bias is not None:
        bound = 1.0 / math.sqrt(weight.shape[1])
        nn.init.uniform_(bias, -bound, bound, generator=gen)


def init_params(key_dim: int, cfg: AdaptorConfig, generator: torch.Generator,
                device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """Fresh adaptor parameters, drawn on the generator's device, then moved to `device`. A CPU
    generator (what fit.py passes) gives the same parameters whatever `device` is."""
    if generator is None:
        raise ConfigError("init_params needs an explicit torch.Generator")
    draw = generator.device  # a generator only fills tensors on its own device
    p = {"lora_A": torch.empty(cfg.rank, key_dim, device=draw), "lora_B": torch.zeros(key_dim, cfg.rank, device=draw)}
    _linear_default_(p["lora_A"], None, generator)
    if cfg.gate:
        h = cfg.gate_dim(key_dim)
        p.update(gate_w1=torch.empty(h, key_dim, device=draw), gate_b1=torch.empty(h, device=draw),
                 gate_w2=torch.empty(1, h, device=draw), gate_b2=torch.empty(1, device=draw))
        _linear_default_(p["gate_w1"], p["gate_b1"], generator)
        _linear_default_(p["gate_w2"], p["gate_b2"], generator)
    return {k: v.to(device=device, dtype=dtype) for k, v in p.items()}


def check_params(params: dict[str, torch.Tensor], cfg: AdaptorConfig, stacked: bool = False) -> int:
    """Validate names and shapes; return the key dimension D."""
    need = PROJ_KEYS + (GATE_KEYS if cfg.gate else ())
    missing, extra = set(need) - set(params), set(params) - set(need)
    if missing or extra:
        raise ConfigError(f"adaptor params: missing {sorted(missing)}, unexpected {sorted(extra)} (gate={cfg.gate})")
    lead = 1 if stacked else 0
    r, d = params["lora_A"].shape[lead:]
    if r != cfg.rank or tuple(params["lora_B"].shape[lead:]) != (d, r):
        raise ConfigError(f"adaptor lora_A {tuple(params['lora_A'].shape)} / lora_B {tuple(params['lora_B'].shape)} "
                          f"do not match rank {cfg.rank}")
    if cfg.gate and tuple(params["gate_w1"].shape[lead:]) != (cfg.gate_dim(d), d):
        raise ConfigError(f"adaptor gate_w1 {tuple(params['gate_w1'].shape)} does not match D={d}")
    return d


def dropout(x: torch.Tensor, p: float, generator: torch.Generator | None) -> torch.Tensor:
    """Inverted dropout with an explicit generator (mask drawn on the generator's device)."""
    if p == 0.0:
        return x
    if generator is None:
        raise ConfigError("dropout is active but no torch.Generator was given (the global RNG is never used)")
    keep = torch.empty(x.shape, dtype=x.dtype, device=generator.device).bernoulli_(1.0 - p, generator=generator)
    return x * keep.to(x.device) / (1.0 - p)


def gate_logits(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Pre-sigmoid gate, [..., 1]. GELU is the exact (erf) one, as nn.GELU()."""
    h = F.gelu(F.linear(x, params["gate_w1"], params["gate_b1"]))
    return F.linear(h, params["gate_w2"], params["gate_b2"])


def gate_values(params: dict[str, torch.Tensor], cfg: AdaptorConfig, x: torch.Tensor) -> torch.Tensor:
    """Soft gate g in (0, 1), shape [...] (ones when the gate is disabled)."""
    dtype = params["lora_A"].dtype
    if not cfg.gate:
        return torch.ones(x.shape[:-1], dtype=dtype, device=x.device)
    return torch.sigmoid(gate_logits(params, x.to(dtype))).squeeze(-1)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ConfigError(f"adaptor mode {mode!r}; use one of {MODES}")


def uses_dropout(cfg: AdaptorConfig, mode: str) -> bool:
    return cfg.dropout > 0 and (mode == "train" or cfg.eval_dropout)


def adaptor_forward(params: dict[str, torch.Tensor], cfg: AdaptorConfig, x: torch.Tensor, mode: str,
                    generator: torch.Generator | None = None, threshold: float | None = None) -> torch.Tensor:
    """Adapt keys x [..., D]. Computes in the parameters' dtype, returns x's dtype."""
    _check_mode(mode)
    xin = x.to(params["lora_A"].dtype)
    xd = dropout(xin, cfg.dropout, generator) if uses_dropout(cfg, mode) else xin
    delta = F.linear(F.linear(xd, params["lora_A"]), params["lora_B"]) * cfg.scaling
    if cfg.gate:
        g = torch.sigmoid(gate_logits(params, xin))  # the gate reads the un-dropped keys (reference)
        if mode == "test":
            g = (g > (cfg.threshold if threshold is None else threshold)).to(xin.dtype)
        delta = delta * g
    return (xin + delta).to(x.dtype)


class Adaptor(nn.Module):
    """Module wrapper around the functional adaptor; `forward(x, mode)` with mode "train" or "test"."""

    def __init__(self, params: dict[str, torch.Tensor], cfg: AdaptorConfig):
        super().__init__()
        self.cfg = cfg
        self.key_dim = check_params(params, cfg)
        self.params = nn.ParameterDict({k: nn.Parameter(v.detach().clone()) for k, v in params.items()})

    @classmethod
    def fresh(cls, key_dim: int, cfg: AdaptorConfig, generator: torch.Generator,
              device: torch.device | str = "cpu") -> "Adaptor":
        return cls(init_params(key_dim, cfg, generator, device), cfg)

    def tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.params.items())

    def forward(self, x: torch.Tensor, mode: str, generator: torch.Generator | None = None,
                threshold: float | None = None) -> torch.Tensor:
        return adaptor_forward(self.tensors(), self.cfg, x, mode, generator, threshold)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        return gate_values(self.tensors(), self.cfg, x)

    def state(self) -> dict:
        return adaptor_state(self.tensors(), self.cfg)

    @classmethod
    def from_state(cls, state: dict, device: torch.device | str = "cpu") -> "Adaptor":
        params, cfg = load_adaptor_state(state)
        return cls({k: v.to(device) for k, v in params.items()}, cfg)


def adaptor_state(params: dict[str, torch.Tensor], cfg: AdaptorConfig) -> dict:
    """Plain, `torch.load(weights_only=True)`-safe state: config as a dict, parameters as CPU tensors."""
    d = check_params(params, cfg)
    return {"format": "robustedit.rep.adaptor/1", "key_dim": d, "config": cfg.to_dict(),
            "params": {k: v.detach().to("cpu").clone() for k, v in params.items()}}


def load_adaptor_state(state: dict) -> tuple[dict[str, torch.Tensor], AdaptorConfig]:
    if not isinstance(state, dict) or state.get("format") != "robustedit.rep.adaptor/1":
        raise ConfigError("not a REP adaptor state (expected format 'robustedit.rep.adaptor/1')")
    cfg = AdaptorConfig.from_dict(state["config"])
    params = dict(state["params"])
    if check_params(params, cfg) != state["key_dim"]:
        raise ConfigError(f"adaptor state key_dim={state['key_dim']} does not match its parameters")
    return params, cfg
