"""thinkctl.stats: the Wilson interval against its closed form, and the shared percentile bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from thinkctl.stats import bootstrap_interval, wilson_interval

Z95 = 1.959963984540054


def _wilson_closed_form(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson (1927) score interval written out, as a reference for scipy's binomtest."""
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


@pytest.mark.parametrize("n", [1, 2, 7, 20, 114, 500, 2000])
def test_wilson_matches_the_closed_form(n: int) -> None:
    for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
        assert wilson_interval(k, n) == pytest.approx(_wilson_closed_form(k, n), abs=1e-12)


def test_wilson_other_levels_and_empty() -> None:
    z90 = 1.6448536269514722
    assert wilson_interval(30, 50, confidence=0.9) == pytest.approx(_wilson_closed_form(30, 50, z90), abs=1e-12)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_vectorized_bootstrap_is_the_percentile_interval_of_one_index_draw() -> None:
    x = np.random.default_rng(1).normal(size=40)
    ci = bootstrap_interval(lambda a: a.mean(axis=1), [x], n_resamples=300, rng=7, vectorized=True)
    idx = np.random.default_rng(7).integers(0, 40, size=(300, 40))
    lo, hi = np.quantile(x[idx].mean(axis=1), [0.025, 0.975])
    assert (ci.low, ci.high, ci.n_valid) == (lo, hi, 300)


def test_generator_is_used_as_is_so_successive_calls_continue_its_stream() -> None:
    x = np.arange(10.0)
    rng = np.random.default_rng(3)
    first = bootstrap_interval(lambda a: a.mean(axis=1), [x], n_resamples=50, rng=rng, vectorized=True)
    second = bootstrap_interval(lambda a: a.mean(axis=1), [x], n_resamples=50, rng=rng, vectorized=True)
    assert first != second
    assert first == bootstrap_interval(lambda a: a.mean(axis=1), [x], n_resamples=50, rng=3, vectorized=True)


def test_strata_keep_their_sizes_and_clusters_stay_whole() -> None:
    y = np.array([0] * 5 + [1] * 3)
    seen: list[tuple[int, int]] = []

    def count(yb: np.ndarray) -> float:
        seen.append((int((yb == 0).sum()), int((yb == 1).sum())))
        return float(yb.mean())

    bootstrap_interval(count, [y], n_resamples=20, rng=0, strata=[np.flatnonzero(y == 0), np.flatnonzero(y == 1)])
    assert set(seen) == {(5, 3)}
    groups = np.array([0, 0, 1, 1, 1, 2, 2, 2])
    clusters = [np.flatnonzero(groups == g) for g in range(3)]
    sizes: list[int] = []
    bootstrap_interval(lambda g: sizes.append(len(g)) or 0.0, [groups], n_resamples=30, rng=0, clusters=clusters)
    assert all(s in {6, 7, 8, 9} for s in sizes) and len(set(sizes)) > 1


def test_errors_raise_or_are_skipped_and_dropped() -> None:
    x = np.arange(6.0)

    def fails_on_small(a: np.ndarray) -> float:
        if a.mean() < 2.5:
            raise ValueError("undefined")
        return float(a.mean())

    with pytest.raises(ValueError, match="bootstrap resample"):
        bootstrap_interval(fails_on_small, [x], n_resamples=200, rng=0)
    ci = bootstrap_interval(fails_on_small, [x], n_resamples=200, rng=0, on_error="skip", drop="nonfinite")
    assert 0 < ci.n_valid < 200 and 2.5 <= ci.low <= ci.high
    assert math.isnan(bootstrap_interval(np.mean, [np.array([])], n_resamples=10, rng=0).low)
    with pytest.raises(ValueError, match="vectorized"):
        bootstrap_interval(np.mean, [x], n_resamples=10, rng=0, vectorized=True, strata=[np.arange(6)])
