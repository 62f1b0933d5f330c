"""Statistics checkpoints bounded in time: at most one per `checkpoint_seconds` (each is the full fp64
D x D sum), none after the last chunk, the result unchanged and resumption from any of them exact;
`stats.checkpoint_minutes` is configured but, being speed only, not part of the stats hash."""
from __future__ import annotations


import pytest
import torch

from conftest import REPO, tiny_llama
from robustedit.models.arch import Architecture
from robustedit.pipeline.config import compose
from robustedit.rome import compute_second_moment
from robustedit.hashing import stage_hash


LAYER = 1
ARCH = Architecture("llama", 4)


class Clock:
    """A fake wall clock that advances `step` seconds per reading."""

    def __init__(self, step):
        self.t, self.step = 0.0, step

    def __call__(self):
        self.t += self.step
        return self.t


@pytest.fixture(scope="module")
def stats_setup(llama_tok):
    texts = (REPO / "resources" / "data" / "wikitext" / "wiki.valid.raw").read_text(encoding="utf-8").split("\n")[:40]
    return tiny_llama(len(llama_tok), seed=1).double(), llama_tok, [t for t in texts if t.strip()]


def test_stats_checkpoints_respect_the_time_bound_and_resume_exactly(stats_setup):
    model, tok, texts = stats_setup
    kw = dict(n_samples=20, max_length=40, batch_tokens=64, checkpoint_every=2)  # 10 chunks
    full = compute_second_moment(model, tok, ARCH, LAYER, texts, **kw).accumulator.sum
    every = []
    compute_second_moment(model, tok, ARCH, LAYER, texts, on_checkpoint=every.append, checkpoint_seconds=0, **kw)
    assert [s["n_docs_done"] for s in every] == list(range(2, 20, 2))  # every chunk but the last
    bounded = []
    clock = Clock(step=1.0)  # one reading per chunk: 1 s per chunk
    compute_second_moment(model, tok, ARCH, LAYER, texts, on_checkpoint=bounded.append, checkpoint_seconds=3.0,
                          clock=clock, **kw)
    assert len(bounded) <= clock.t / 3.0 and len(bounded) <= 9
    assert [s["n_docs_done"] for s in bounded] == [6, 12, 18]
    for state in (bounded[0], bounded[-1]):
        resumed = compute_second_moment(model, tok, ARCH, LAYER, texts, state=state, **kw)
        assert torch.equal(resumed.accumulator.sum, full)  # same chunks in the same order: bit-identical
    none = []
    compute_second_moment(model, tok, ARCH, LAYER, texts, on_checkpoint=none.append, checkpoint_seconds=3600, **kw)
    assert none == []  # a run shorter than the interval writes no checkpoint at all


def test_checkpoint_minutes_is_configured_but_not_hashed():
    cfg = compose([])
    assert cfg["stats"]["checkpoint_minutes"] == 10
    other = compose(["stats.checkpoint_minutes=0.5"])
    assert stage_hash(cfg, "stats") == stage_hash(other, "stats")
