"""MEMIT and AlphaEdit: many edits written into a range of layers (robustedit.memit.spread)."""
from .spread import (alphaedit_solver, block_outputs, check_layers, memit_keys, memit_solver, null_space_projector,
                     residual_targets, spread_update, template_weights)

__all__ = ["alphaedit_solver", "block_outputs", "check_layers", "memit_keys", "memit_solver", "null_space_projector",
           "residual_targets", "spread_update", "template_weights"]
