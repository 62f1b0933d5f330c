"""Metrics on hand-made logits and masks, checked against values worked out by hand."""
import math

import pytest
import torch

from robustedit.errors import ConfigError
from robustedit.metrics import METRICS, TokenScores, aggregate, case_mean, get_metric, micro

V = 5  # vocabulary of the hand-made logits


def one_hot_logits(argmax_rows, width):
    """Logits [N, width, V] whose argmax is given per position (2.0 on the argmax, 0 elsewhere)."""
    logits = torch.zeros(len(argmax_rows), width, V)
    for i, row in enumerate(argmax_rows):
        for t, a in enumerate(row):
            logits[i, t, a] = 2.0
    return logits


def scores_for(argmax_rows, target_rows):
    width = max(len(t) for t in target_rows)
    target = torch.zeros(len(target_rows), width, dtype=torch.long)
    mask = torch.zeros(len(target_rows), width, dtype=torch.bool)
    for i, row in enumerate(target_rows):
        target[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = True
    padded_argmax = [row + [4] * (width - len(row)) for row in argmax_rows]  # padding predicts token 4
    return TokenScores.from_logits(one_hot_logits(padded_argmax, width), target, mask)


def test_exact_match_and_token_mean_acc_differ_on_partial_hits():
    # item 0: 2/2 right; item 1: 1/3 right (EM 0, token acc 1/3); item 2: 1 token, wrong (padding is wrong
    # everywhere: token 4 never matches target 0, so a metric that read padding would fail item 0)
    s = scores_for(argmax_rows=[[1, 2], [3, 0, 0], [2]], target_rows=[[1, 2], [3, 1, 1], [0]])
    assert METRICS["exact_match@1"](s).tolist() == [1.0, 0.0, 0.0]
    assert METRICS["token_mean_acc@1"](s).tolist() == pytest.approx([1.0, 1 / 3, 0.0])


def test_from_logits_log_probs_are_log_softmax_of_the_target():
    s = scores_for(argmax_rows=[[1, 2]], target_rows=[[1, 3]])
    e = math.exp(2.0)
    assert s.logprobs[0, 0].item() == pytest.approx(math.log(e / (e + 4)))  # target is the argmax
    assert s.logprobs[0, 1].item() == pytest.approx(math.log(1 / (e + 4)))  # target is not
    assert s.mean_logprob().item() == pytest.approx((math.log(e / (e + 4)) + math.log(1 / (e + 4))) / 2)


def test_from_lists_pads_and_masks():
    s = TokenScores.from_lists([[5, 6], [7]], [[5, 0], [7]], [[-0.1, -2.0], [-0.3]])
    assert s.mask.tolist() == [[True, True], [True, False]]
    assert METRICS["exact_match@1"](s).tolist() == [0.0, 1.0]
    assert s.mean_logprob().tolist() == pytest.approx([-1.05, -0.3])


def test_prob_compare_uses_mean_nll_and_its_direction():
    # target: 2 tokens of log-prob -1 (mean -1, sum -2); alternative: 1 token of -1.5 (mean -1.5, sum -1.5)
    target = TokenScores.from_lists([[1, 2]], [[0, 0]], [[-1.0, -1.0]])
    alternative = TokenScores.from_lists([[3]], [[0]], [[-1.5]])
    pc = METRICS["prob_compare@1"]
    assert pc(target, alternative=alternative).tolist() == [1.0]  # mean NLL 1.0 < 1.5 (a sum would say 2 > 1.5)
    assert pc(alternative, alternative=target).tolist() == [0.0]  # swapped: a sign error fails one of these
    assert pc(target, alternative=target).tolist() == [0.0]  # ties fail, as ROME's strict `nll_true > nll_new`


def test_prob_compare_needs_the_alternative():
    s = TokenScores.from_lists([[1]], [[1]], [[-0.5]])
    with pytest.raises(ValueError, match="alternative"):
        METRICS["prob_compare@1"](s)


def test_locality_agreement_against_reference_argmax():
    # post-edit argmax vs the unedited model's argmax on the ground-truth tokens (not vs the targets)
    s = scores_for(argmax_rows=[[1, 2, 3], [0, 0]], target_rows=[[4, 4, 4], [1, 1]])
    reference = torch.tensor([[1, 0, 3], [0, 9, 4]])  # row 1 position 2 is padding: ignored (though equal)
    assert METRICS["locality_agreement@1"](s, reference_argmax=reference).tolist() == pytest.approx([2 / 3, 1 / 2])
    with pytest.raises(ValueError, match="reference_argmax"):
        METRICS["locality_agreement@1"](s)


def test_micro_and_case_mean_on_unbalanced_cases():
    per_case = [[1.0], [0.0, 0.0, 0.0]]  # one case with 1 success, one with 3 failures
    assert micro(per_case) == pytest.approx(25.0)  # 1 / 4 items
    assert case_mean(per_case) == pytest.approx(50.0)  # mean(1.0, 0.0)
    assert aggregate([[], [0.5, 1.0]], "case_mean") == pytest.approx(75.0)  # empty cases are skipped
    assert micro([[], []]) is None
    with pytest.raises(ConfigError, match="unknown aggregation"):
        aggregate(per_case, "macro")


def test_registry_names_are_versioned_and_unambiguous():
    assert set(METRICS) == {"exact_match@1", "token_mean_acc@1", "prob_compare@1", "locality_agreement@1",
                            "generation_match@1", "generation_span@1", "generation_unchanged@1"}
    assert get_metric("exact_match") is METRICS["exact_match@1"]
    assert get_metric("exact_match@1").key == "exact_match@1"
    with pytest.raises(ConfigError, match="unknown metric"):
        get_metric("accuracy")


def test_scores_reject_empty_items_and_shape_mismatch():
    with pytest.raises(ValueError, match="at least one target token"):
        TokenScores(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2),
                    torch.zeros(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="shape"):
        TokenScores(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 2),
                    torch.ones(1, 2, dtype=torch.bool))
