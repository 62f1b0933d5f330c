"""The case-level bootstrap (robustedit.analysis.bootstrap) against a loop written from its definition."""
import numpy as np
import pytest

from robustedit.analysis.bootstrap import (
    Interval, bootstrap_interval, case_sums, paired_difference, resample_indices,
)
from robustedit.errors import ConfigError
from robustedit.metrics import aggregate


def cases_of(values_per_case, column="success"):
    """[(case_id, {column: item values})] with case ids 0, 1, ..."""
    return [(i, {column: vals}) for i, vals in enumerate(values_per_case)]


def reference(values_per_case, aggregation, n_boot, seed, level=0.95):
    """Loop over resamples: draw case indices, gather the drawn cases' item lists, aggregate as metrics does."""
    idx = resample_indices(len(values_per_case), n_boot, np.random.default_rng(seed))
    stats = []
    for row in idx:
        v = aggregate([values_per_case[i] for i in row], aggregation)
        if v is not None:
            stats.append(v)
    lo, hi = np.percentile(stats, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return aggregate(values_per_case, aggregation), lo, hi


RAGGED = [[1, 0, 1], [0], [1, 1], [0, 0, 0, 1], [1], [0.5, 1], [0, 1, 1, 1, 0], [1, 1, 1]]


@pytest.mark.parametrize("aggregation", ["micro", "case_mean"])
def test_matches_the_loop_over_resamples(aggregation):
    table = case_sums(cases_of(RAGGED), ["success"])
    got = bootstrap_interval(table, aggregation, n_boot=500, rng=np.random.default_rng(7))["success"]
    value, lo, hi = reference(RAGGED, aggregation, 500, 7)
    assert got.value == pytest.approx(value) and got.lo == pytest.approx(lo) and got.hi == pytest.approx(hi)
    assert got.lo <= got.value <= got.hi  # a typical case: the interval holds the estimate


def test_seeded_and_deterministic():
    table = case_sums(cases_of(RAGGED), ["success"])
    assert bootstrap_interval(table) == bootstrap_interval(table)
    assert bootstrap_interval(table, seed=1) != bootstrap_interval(table, seed=2)


def test_more_cases_give_a_narrower_interval():
    rng = np.random.default_rng(0)
    width = {}
    for n in (20, 500):
        vals = [[float(x)] for x in rng.random(n) < 0.6]
        iv = bootstrap_interval(case_sums(cases_of(vals), ["success"]))["success"]
        width[n] = iv.hi - iv.lo
    assert width[500] < width[20] / 3  # about 1/sqrt(25) = 1/5


def test_items_stay_with_their_case():
    # one case of 100 successful items among 9 one-item failures: micro = 100/109. Resampling cases, the
    # heavy case is drawn 0, 1, 2... times, so micro swings from 0 to near 100; resampling items would not.
    vals = [[1.0] * 100] + [[0.0]] * 9
    iv = bootstrap_interval(case_sums(cases_of(vals), ["success"]))["success"]
    assert iv.value == pytest.approx(100 * 100 / 109)
    assert iv.lo == 0.0 and iv.hi > 95.0  # some resamples miss the heavy case, some draw it twice or more
    cm = bootstrap_interval(case_sums(cases_of(vals), ["success"]), "case_mean")["success"]
    assert cm.value == pytest.approx(10.0)  # case_mean: every case counts once
    assert cm.hi < 50.0


def test_identical_methods_differ_by_exactly_zero():
    table = case_sums(cases_of(RAGGED), ["success"])
    for agg in ("micro", "case_mean"):
        assert paired_difference(table, table, agg)["success"] == Interval(0.0, 0.0, 0.0)


def test_better_on_every_case_is_above_zero_and_order_does_not_matter():
    worse = [[0, 0, 1], [0], [0, 1], [0, 0, 0, 0], [0], [0, 0.5], [0, 0, 1, 1, 0], [1, 0, 1]]
    a, b = case_sums(cases_of(RAGGED), ["success"]), case_sums(cases_of(worse), ["success"])
    diff = paired_difference(a, b)["success"]
    assert 0 < diff.lo <= diff.value <= diff.hi
    shuffled = case_sums(list(reversed(cases_of(worse))), ["success"])  # matched by case_id, not by position
    assert paired_difference(a, shuffled)["success"] == diff
    # paired: the same resampled cases for both, so the difference is tighter than the intervals side by side
    ia, ib = bootstrap_interval(a)["success"], bootstrap_interval(b)["success"]
    assert diff.hi - diff.lo < (ia.hi - ia.lo) + (ib.hi - ib.lo)


def test_mismatched_case_ids_are_named():
    a = case_sums(cases_of(RAGGED), ["success"])
    b = case_sums([(cid, v) for cid, v in cases_of(RAGGED) if cid != 3] + [(99, {"success": [1]})], ["success"])
    with pytest.raises(ConfigError, match=r"case_ids \[3\] only in the first, \[99\] only in the second"):
        paired_difference(a, b)
    assert len(a.restrict([0, 1, 2])) == 3  # the caller pairs on an intersection explicitly


def test_empty_columns_and_tables_are_none():
    table = case_sums([(0, {"success": [1.0]}), (1, {"success": [0.0]})], ["success", "shuffle_ood"])
    got = bootstrap_interval(table)
    assert got["shuffle_ood"] is None and got["success"].lo <= got["success"].hi
    assert paired_difference(table, table)["shuffle_ood"] is None
    assert bootstrap_interval(case_sums([], ["success"])) == {"success": None}


def test_a_rare_column_ignores_resamples_without_its_items():
    # only case 0 has a long_id item: resamples that miss it have no long_id value and are left out
    cases = [(0, {"success": [1], "long_id": [1.0]})] + [(i, {"success": [0]}) for i in range(1, 6)]
    got = bootstrap_interval(case_sums(cases, ["success", "long_id"]))["long_id"]
    assert got == Interval(100.0, 100.0, 100.0)


def test_derived_statistics_are_resampled_from_the_columns():
    cases = [(i, {"ES": [float(i % 2)], "BP": [1.0, float(i % 3 > 0)]}) for i in range(30)]
    table = case_sums(cases, ["ES", "BP"])
    hm = {"EQ": lambda v: 2 * v["ES"] * v["BP"] / (v["ES"] + v["BP"])}
    got = bootstrap_interval(table, derived=hm)
    es, bp = got["ES"].value, got["BP"].value
    assert got["EQ"].value == pytest.approx(2 * es * bp / (es + bp))
    assert got["EQ"].lo <= got["EQ"].value <= got["EQ"].hi
    assert paired_difference(table, table, derived=hm)["EQ"] == Interval(0.0, 0.0, 0.0)


def test_duplicate_case_ids_and_bad_arguments_are_refused():
    with pytest.raises(ConfigError, match=r"case_ids \['1'\] appear more than once"):
        case_sums([(1, {}), (1, {})], ["success"])
    table = case_sums(cases_of(RAGGED), ["success"])
    with pytest.raises(ConfigError, match="unknown aggregation"):
        bootstrap_interval(table, "median")
    with pytest.raises(ConfigError, match="level"):
        bootstrap_interval(table, level=95)
