"""The rephrase cache under concurrent writers (e.g. the cases jobs of two splits at once): each writer
re-reads, merges and rewrites the file under a lock, so both writers' entries survive; files written
before the lock existed stay readable (same format)."""
from __future__ import annotations

import json
import multiprocessing

from robustedit.data.rephrase import PAPER_PROMPT, RephraseCache, generate_rephrases
from robustedit.io import atomic_path
from test_rephrase import StubBackend


def write_entries(cache_dir, entities, barrier):
    """One writer of the rephrase cache: it has loaded the (empty) cache before either writer stores."""

    class Waiting(StubBackend):
        def complete(self, prompts):
            barrier.wait(timeout=60)  # both have loaded the cache: the old code kept only the last store
            return super().complete(prompts)

    generate_rephrases(entities, Waiting(), RephraseCache(cache_dir), batch_size=len(entities))


def test_concurrent_rephrase_writers_keep_both_entries(tmp_path):
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=write_entries, args=(tmp_path, ents, barrier)) for ents in (["A", "B"], ["C"])]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    key = RephraseCache.make_key(StubBackend(), PAPER_PROMPT, 10)
    assert sorted(RephraseCache(tmp_path).load(key)) == ["A", "B", "C"]


def test_rephrase_cache_of_the_old_writer_stays_readable(tmp_path):
    """Same file format: an entry file written before the lock existed is read and extended."""
    cache, key = RephraseCache(tmp_path), RephraseCache.make_key(StubBackend(), PAPER_PROMPT, 10)
    with atomic_path(cache.path(key)) as tmp:  # as the old RephraseCache.store wrote it
        tmp.write_text('{"format": 1, "key": %s, "entries": {"A": {"raw": "1. a", "rephrases": ["a"]}}}'
                       % json.dumps(key))
    run = generate_rephrases(["A", "B"], StubBackend(), cache)
    assert run.rephrases["A"] == ["a"] and (run.hits, run.misses) == (1, 1)
    assert sorted(cache.load(key)) == ["A", "B"]
