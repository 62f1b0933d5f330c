"""WikiText text for the stages that draw from it: the statistics' rows, the cases stage's long contexts, REP's
gate negatives and the sequential protocol's perplexity lines."""
from __future__ import annotations

import random
from typing import Sequence

from ..data.perturb import long_context, wikitext_words
from ..errors import ConfigError
from ..manifest import DataStore


def stats_texts(cfg: dict) -> list[str]:
    """The rows the stats stage samples from (stats.source: vendored lines, or the hub's WikiText-103 train)."""
    st = cfg["stats"]
    if st["source"] == "local":
        store = DataStore(cfg["paths"]["data"])
        rows = [line for f in st["local_files"] for line in store.path(f).read_text().split("\n")]
    else:
        from datasets import load_dataset  # the hub's WikiText-103 train, only when configured

        rows = list(load_dataset(st["hub"]["path"], st["hub"]["name"], split=st["hub"]["split"])["text"])
    return [r for r in rows if r.strip()] if st["drop_empty"] else rows


def context_words(store: DataStore, lc_cfg: dict) -> list[str]:
    """The words of data.long_context's corpus (vendored files, or the hub's WikiText-103 train split)."""
    if lc_cfg["source"] == "local":
        return wikitext_words([store.path(f).read_text() for f in lc_cfg["local_files"]])
    from datasets import load_dataset  # hub source: only when configured

    hub = lc_cfg["hub"]
    return wikitext_words(load_dataset(hub["path"], hub["name"], split=hub["split"])["text"])


def snippets(words: Sequence[str], n: int, n_words: int, rng: random.Random) -> list[str]:
    """n random spans of n_words consecutive words: unrelated text (REP's gate learns to stay shut at every
    position of it). Same corpus as the evaluation's passages, but short and at other offsets; the
    evaluation's leak guard refuses one that would begin a passage the case is scored on."""
    if n < 0 or n_words < 1:
        raise ConfigError(f"rep.train gate_negative_snippets={n} must be >= 0 and gate_negative_words={n_words} >= 1")
    return [long_context(words, n_words, rng) for _ in range(n)]
