"""Teacher-forced evaluation of edits on robustness cases (see suite.py for the entry points)."""
from .edit_batch import EditBatch, NoEdit, RankOneEditBatch
from .items import GROUPS, Item, build_items
from .scoring import encode_item, gathered_logits, score_items
from .suite import evaluate_cases, summarise

__all__ = ["EditBatch", "NoEdit", "RankOneEditBatch", "GROUPS", "Item", "build_items", "encode_item",
           "gathered_logits", "score_items", "evaluate_cases", "summarise"]
