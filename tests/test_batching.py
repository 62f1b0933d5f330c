"""The one right-padding helper every batched forward uses."""
import torch

from robustedit.batching import right_pad


def test_right_pad_puts_tokens_left_and_masks_the_rest():
    ids, mask = right_pad([[5, 6, 7], [8]], pad_id=9)
    assert ids.tolist() == [[5, 6, 7], [8, 9, 9]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert ids.dtype == mask.dtype == torch.long


def test_length_batches_cap_rows_and_split_where_padding_would_exceed_half():
    from robustedit.evaluate.scoring import length_batches

    lengths = [5, 400, 9, 410, 6, 7, 8, 200, 199]
    batches = length_batches(lengths, batch_size=3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # every row exactly once
    assert batches == [[3, 1], [7, 8], [2, 6, 5], [4, 0]]  # longest first; 200 < 410/2 opens a batch
    for b in batches:
        assert len(b) <= 3 and all(2 * lengths[i] >= lengths[b[0]] for i in b)
