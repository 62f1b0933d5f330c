"""ROME hyperparameters. Defaults are the REP release's ROME settings (ElliottYan/RobustKeyEdit,
`our_hparams/ROME/llama-7b.yaml`), i.e. EasyEdit's `hparams/ROME/llama-7b.yaml` (25 steps, lr 0.5,
weight decay 1e-3, clamp 4, KL 0.0625, 21 templates) with the release script's `mom2_adjustment: True`.
The edit layer is not here: it belongs to the model description.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ..errors import ConfigError
from ..tokens import TARGET_MODES


@dataclass(frozen=True)
class ROMEHyperParams:
    v_num_grad_steps: int = 25  # v* optimisation steps; the last one breaks before backward (<= steps-1 updates)
    v_lr: float = 0.5  # Adam learning rate for delta
    v_weight_decay: float = 1e-3  # weight of ||delta|| / ||v_init||^2 (norm, not squared, over squared norm)
    clamp_norm_factor: float = 4.0  # after each update, ||delta|| <= factor * ||v_init||
    kl_factor: float = 0.0625  # weight of KL(p_cur || p_init) at the subject's last token of "{subject} is a"
    # stop a case once its loss falls below this (kmeng01/rome and EasyEdit HEAD); None disables it, which
    # is what the REP fork's compute_v does (its early stop is commented out)
    early_stop_loss: float | None = 5e-2
    mom2_adjustment: bool = True  # u = C^-1 k̄ (REP script); EasyEdit's yamls say False, giving u = k̄/||k̄||
    # (max_out_len, n) pairs: n sampled prefixes whose length counts the prompt tokens; with "{}" -> 21 templates
    context_template_length_params: tuple = ((5, 10), (10, 10))
    template_prefixes: tuple = ("The", "Therefore", "Because", "I", "You")  # EasyEdit's generation seeds
    template_top_k: int = 5  # top-k sampling, as the reference's generate_fast
    kl_prompt: str = "{} is a"  # ROME's KL ("essence") prompt
    # clean: target tokens = tokens of prompt+" "+target after the prompt, teacher-forced by token concatenation;
    # easyedit: tok(" "+target) minus BOS and string-level re-tokenisation (the reference's "▁" label quirk)
    target_mode: str = "clean"
    batch_cases: int = 8  # cases optimised in one batched forward (speed only: equals one-at-a-time)
    key_batch_rows: int = 128  # prompts per forward when reading keys (speed only)
    reuse_lower_layers: bool = True  # run layers below the edit layer once, not every step (speed only; tested equal)
    row_groups: int = 4  # at most this many forwards per step, rows grouped by length to cut padding (speed only)
    cache_prefix: bool = True  # tokens before the δ position are δ-independent: cache their K/V once (speed only)

    def __post_init__(self):
        if self.target_mode not in TARGET_MODES:
            raise ConfigError(f"rome.target_mode={self.target_mode!r}; use one of {TARGET_MODES}")
        if self.v_num_grad_steps < 1:
            raise ConfigError(f"rome.v_num_grad_steps={self.v_num_grad_steps} must be >= 1")
        if min(self.batch_cases, self.key_batch_rows, self.row_groups) < 1:
            raise ConfigError("rome.batch_cases, rome.key_batch_rows and rome.row_groups must be >= 1")
        if "{}" not in self.kl_prompt:
            raise ConfigError(f"rome.kl_prompt={self.kl_prompt!r} needs a '{{}}' for the subject")
        for pair in self.context_template_length_params:
            if len(pair) != 2 or int(pair[1]) % len(self.template_prefixes) != 0:
                raise ConfigError(
                    f"rome template length params {pair!r}: each count must be a multiple of the "
                    f"{len(self.template_prefixes)} prefixes (the reference would silently floor it)"
                )
        object.__setattr__(self, "context_template_length_params",
                           tuple((int(a), int(b)) for a, b in self.context_template_length_params))
        object.__setattr__(self, "template_prefixes", tuple(self.template_prefixes))

    @property
    def n_templates(self) -> int:
        return 1 + sum(n for _, n in self.context_template_length_params)

    @classmethod
    def from_config(cls, cfg: dict) -> "ROMEHyperParams":
        """Build from the `rome` config group (conf/rome/default.yaml layout, nested `templates`)."""
        cfg = dict(cfg)
        tmpl = dict(cfg.pop("templates", None) or {})
        renames = {"length_params": "context_template_length_params", "prefixes": "template_prefixes",
                   "top_k": "template_top_k"}
        unknown_t = set(tmpl) - set(renames)
        if unknown_t:
            raise ConfigError(f"rome.templates has unknown keys {sorted(unknown_t)}; known: {sorted(renames)}")
        cfg.update({renames[k]: v for k, v in tmpl.items()})
        known = {f.name for f in fields(cls)}
        unknown = set(cfg) - known
        if unknown:
            raise ConfigError(f"rome config has unknown keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**cfg)

    def to_dict(self) -> dict:
        return asdict(self)

