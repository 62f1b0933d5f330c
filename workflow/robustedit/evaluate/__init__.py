"""Teacher-forced evaluation of edits on robustness cases (see suite.py for the entry points)."""
from ..edits import EditBatch, NoEdit, RankOneEditBatch
from .encoding import EncodedItem, ItemScore, encode_item
from .items import GROUPS, Item, build_items
from .scoring import gathered_logits, score_items
from .suite import EVAL_PHASES, evaluate_cases, summarise

__all__ = ["EditBatch", "NoEdit", "RankOneEditBatch", "EncodedItem", "ItemScore", "GROUPS", "Item", "build_items",
           "encode_item", "gathered_logits", "score_items", "EVAL_PHASES", "evaluate_cases", "summarise"]
