"""The sequential protocol's perplexity probe: which WikiText lines it may use, and the per-line losses
against one plain forward per line."""
import math

import pytest
import torch

from robustedit.errors import ConfigError
from robustedit.sequential.probe import held_out_lines, line_losses
from test_evaluate import arch_for

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split()


def line(k: int, n: int = 12) -> str:
    return " " + " ".join(f"{WORDS[(k + i) % len(WORDS)]}{k}" for i in range(n)) + " "


def test_held_out_lines_skip_what_the_statistics_and_the_long_contexts_used():
    texts = [line(k) for k in range(40)]
    texts += [texts[3], " = A heading of many words , one two three four five six seven = ", " too short "]
    passage = "intro " + " ".join(texts[7].split()[2:10]) + " outro"  # 8 words of line 7
    passage_7 = [passage]
    used = {3, 5}
    got = held_out_lines(texts, used, passage_7, n_lines=30, min_words=10, seed=0)
    assert len(got) == len(set(got)) == 30
    assert texts[3].strip() not in got and texts[5].strip() not in got  # sampled by stats (and its duplicate)
    assert texts[7].strip() not in got  # shares an 8-word run with a passage
    assert not any(g.startswith("=") or len(g.split()) < 10 for g in got)
    assert got == [t.strip() for t in texts if t.strip() in set(got)]  # corpus order
    assert got == held_out_lines(texts, used, passage_7, 30, 10, seed=0)
    assert got != held_out_lines(texts, used, passage_7, 30, 10, seed=1)
    seven_words = "intro " + " ".join(texts[9].split()[2:9]) + " outro"  # 7 shared words do not exclude
    assert texts[9].strip() in held_out_lines(texts, used, [seven_words], 37, 10, seed=0)
    with pytest.raises(ConfigError, match="n_lines=38: only 37"):
        held_out_lines(texts, used, passage_7, 38, 10, seed=0)


@pytest.mark.parametrize("family,tok_name", [("llama", "llama_tok"), ("gemma3", "gemma_tok")])
def test_line_losses_equal_one_plain_forward_per_line(request, family, tok_name):
    tok = request.getfixturevalue(tok_name)
    model = request.getfixturevalue(f"tiny_{'llama' if family == 'llama' else 'gemma'}_model")
    lines = ["The quick brown fox jumps over the lazy dog.", "Paris is the capital of France",
             "A much longer line of text that goes on and on about rivers, mountains and the sea."]
    got = line_losses(model, tok, arch_for(family), lines, batch_size=2, device="cpu")
    for text, (nll, n) in zip(lines, got):
        ids = torch.tensor([tok(text)["input_ids"]])
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
        want = -logp[:-1].gather(-1, ids[0, 1:, None]).sum().item()
        assert n == ids.shape[1] - 1 and nll == pytest.approx(want, rel=1e-5)
    alone = line_losses(model, tok, arch_for(family), lines, batch_size=1, device="cpu")
    assert [n for _, n in alone] == [n for _, n in got]
    assert [x for x, _ in alone] == pytest.approx([x for x, _ in got], rel=1e-5)
    cut = line_losses(model, tok, arch_for(family), lines, batch_size=3, device="cpu", max_length=5)
    assert [n for _, n in cut] == [4, 4, 4] and all(math.isfinite(x) for x, _ in cut)
