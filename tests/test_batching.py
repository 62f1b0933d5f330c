"""The one right-padding helper every batched forward uses."""
import torch

from robustedit.batching import right_pad


def test_right_pad_puts_tokens_left_and_masks_the_rest():
    ids, mask = right_pad([[5, 6, 7], [8]], pad_id=9)
    assert ids.tolist() == [[5, 6, 7], [8, 9, 9]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert ids.dtype == mask.dtype == torch.long
