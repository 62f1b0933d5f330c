"""Seeded case-level bootstrap intervals for the tables' percentages, from saved per-item results.

A table cell aggregates item values (0/1 or a fraction) of many cases. The unit of resampling is the
case: a resample draws n_cases case indices with replacement and keeps every item of a drawn case, so a
case with many items weighs as much in a resample as in the estimate. Each resample is aggregated as the
cell is (robustedit.metrics: `micro` = Σ item values / Σ items × 100, `case_mean` = the mean over cases
with items of each case's item mean × 100), and the interval is the percentile interval of the
resampled values at `level`. A paired difference (method A − method B on the same cases) uses the same
resampled case indices for both methods, so it is tighter than the two intervals side by side.

    table = case_sums([(case_id, {"success": [1.0], "locality": [1.0, 0.5]}), ...], ["success", "locality"])
    bootstrap_interval(table, "micro")  # {"success": Interval(value, lo, hi), "locality": ...}
    paired_difference(rep_table, rome_table, "micro")  # the same, of REP − ROME

Resampling is vectorised: an index matrix [n_boot, n_cases] becomes a multiplicity matrix W (how often
each case is drawn in each resample), so every aggregation is W @ (per-case numerator) / W @ (denominator).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable, Mapping, Sequence

import numpy as np

from ..errors import ConfigError
from ..metrics import AGGREGATIONS
from ..seeding import derive_seed

# 2000 resamples: more than the 1000 Efron & Tibshirani advise for percentile intervals, so the end points
# move little between seeds; a table of 10 columns still takes a fraction of a second.
N_BOOT = 2000
LEVEL = 0.95  # the tables report 95% intervals
SEED = 0  # root seed of the resampling (fixed: a table is a function of its results files alone)
SEED_PURPOSE = "case_bootstrap"  # robustedit.seeding purpose string of the resampling generator

Derived = Mapping[str, Callable[[Mapping[str, np.ndarray]], np.ndarray]]


@dataclass(frozen=True)
class CaseSums:
    """Per case and column: the sum of its items' values and its item count (0 = no items there)."""

    case_ids: tuple
    columns: tuple[str, ...]
    sums: np.ndarray  # [n_cases, n_columns] float64
    counts: np.ndarray  # [n_cases, n_columns] float64

    def __len__(self) -> int:
        return len(self.case_ids)

    def restrict(self, case_ids: Sequence[Hashable]) -> "CaseSums":
        """The same table on `case_ids` only, in that order (each must be one of this table's)."""
        pos = {c: i for i, c in enumerate(self.case_ids)}
        missing = [c for c in case_ids if c not in pos]
        if missing:
            raise ConfigError(f"case_ids {missing} are not in the table")
        rows = [pos[c] for c in case_ids]
        return CaseSums(tuple(case_ids), self.columns, self.sums[rows], self.counts[rows])


@dataclass(frozen=True)
class Interval:
    value: float  # the estimate on all cases
    lo: float
    hi: float


def case_sums(cases: Sequence[tuple[Hashable, Mapping[str, Sequence[float]]]], columns: Sequence[str]) -> CaseSums:
    """`cases`: (case_id, {column: item values}) per case; a column a case lacks has no items there."""
    ids = [cid for cid, _ in cases]
    if len(set(ids)) != len(ids):
        dup = sorted({str(c) for c in ids if ids.count(c) > 1})
        raise ConfigError(f"case_ids {dup} appear more than once")
    sums = np.zeros((len(cases), len(columns)))
    counts = np.zeros((len(cases), len(columns)))
    for i, (_, values) in enumerate(cases):
        for j, col in enumerate(columns):
            vals = [float(v) for v in values.get(col, ())]
            sums[i, j], counts[i, j] = sum(vals), len(vals)
    return CaseSums(tuple(ids), tuple(columns), sums, counts)


def resample_indices(n_cases: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """[n_boot, n_cases] case indices drawn uniformly with replacement."""
    return rng.integers(0, n_cases, size=(n_boot, n_cases))


def case_weights(idx: np.ndarray, n_cases: int) -> np.ndarray:
    """[n_boot, n_cases] multiplicity of each case in each resample of the index matrix `idx`."""
    n_boot = idx.shape[0]
    flat = (idx + n_cases * np.arange(n_boot)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * n_cases).reshape(n_boot, n_cases).astype(np.float64)


def _num_den(table: CaseSums, aggregation: str) -> tuple[np.ndarray, np.ndarray]:
    if aggregation == "micro":
        return table.sums, table.counts
    if aggregation == "case_mean":
        has = table.counts > 0
        return np.where(has, table.sums / np.where(has, table.counts, 1.0), 0.0), has.astype(np.float64)
    raise ConfigError(f"unknown aggregation {aggregation!r}; use one of {sorted(AGGREGATIONS)}")


def column_values(table: CaseSums, aggregation: str, weights: np.ndarray) -> np.ndarray:
    """[n_weights, n_columns] percentages of each weighting of the cases (NaN: no items drawn)."""
    num, den = _num_den(table, aggregation)
    top, bottom = weights @ num, weights @ den
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(bottom > 0, 100.0 * top / np.where(bottom > 0, bottom, 1.0), np.nan)


def _statistics(table: CaseSums, aggregation: str, weights: np.ndarray, derived: Derived | None) -> dict:
    values = column_values(table, aggregation, weights)
    stats = {c: values[:, j] for j, c in enumerate(table.columns)}
    for name, fn in (derived or {}).items():
        stats[name] = np.asarray(fn(stats), dtype=np.float64)
    return stats


def percentile_interval(value: float, samples: np.ndarray, level: float = LEVEL) -> Interval | None:
    """Percentile interval of the finite `samples` around `value`; None when `value` is undefined.
    Resamples without items in the column (possible for a column few cases have) are left out."""
    if not 0 < level < 1:
        raise ConfigError(f"level={level} must be in (0, 1)")
    finite = samples[np.isfinite(samples)]
    if not np.isfinite(value) or finite.size == 0:
        return None
    lo, hi = np.percentile(finite, [50 * (1 - level), 50 * (1 + level)])
    return Interval(float(value), float(lo), float(hi))


def _weights(n_cases: int, n_boot: int, seed: int, rng: np.random.Generator | None) -> np.ndarray:
    if n_boot < 1:
        raise ConfigError(f"n_boot={n_boot} must be >= 1")
    rng = rng if rng is not None else np.random.default_rng(derive_seed(seed, SEED_PURPOSE))
    return case_weights(resample_indices(n_cases, n_boot, rng), n_cases)


def _intervals(point: dict, boot: dict, level: float) -> dict[str, Interval | None]:
    return {k: percentile_interval(float(point[k][0]), boot[k], level) for k in point}


def bootstrap_interval(table: CaseSums, aggregation: str = "micro", *, n_boot: int = N_BOOT, level: float = LEVEL,
                       seed: int = SEED, rng: np.random.Generator | None = None,
                       derived: Derived | None = None) -> dict[str, Interval | None]:
    """{column: Interval or None (no items)} of `table`; `derived` adds named statistics computed from the
    columns' values of each resample (e.g. {"EQ": harmonic mean of ES and BP}). `rng` overrides `seed`."""
    if len(table) == 0:
        return {c: None for c in (*table.columns, *(derived or {}))}
    point = _statistics(table, aggregation, np.ones((1, len(table))), derived)
    boot = _statistics(table, aggregation, _weights(len(table), n_boot, seed, rng), derived)
    return _intervals(point, boot, level)


def paired_difference(a: CaseSums, b: CaseSums, aggregation: str = "micro", *, n_boot: int = N_BOOT,
                      level: float = LEVEL, seed: int = SEED, rng: np.random.Generator | None = None,
                      derived: Derived | None = None) -> dict[str, Interval | None]:
    """{column: Interval of a − b} on the same cases (matched by case_id, resampled together); None where
    either table has no items. Raises when the two tables' case sets differ, naming the unmatched ids."""
    only_a = [c for c in a.case_ids if c not in set(b.case_ids)]
    only_b = [c for c in b.case_ids if c not in set(a.case_ids)]
    if only_a or only_b:
        raise ConfigError(f"a paired difference needs the same cases: case_ids {only_a} only in the first, "
                          f"{only_b} only in the second")
    if a.columns != b.columns:
        raise ConfigError(f"a paired difference needs the same columns: {a.columns} vs {b.columns}")
    if len(a) == 0:
        return {c: None for c in (*a.columns, *(derived or {}))}
    b = b.restrict(a.case_ids)
    ones, w = np.ones((1, len(a))), _weights(len(a), n_boot, seed, rng)
    pa, pb = _statistics(a, aggregation, ones, derived), _statistics(b, aggregation, ones, derived)
    ba, bb = _statistics(a, aggregation, w, derived), _statistics(b, aggregation, w, derived)
    return _intervals({k: pa[k] - pb[k] for k in pa}, {k: ba[k] - bb[k] for k in ba}, level)
