"""Confidence intervals shared by every report: Wilson intervals for proportions and one percentile bootstrap.

This is a bottom-layer module: it imports only numpy and scipy, so every other part of thinkctl can use it.

Examples
--------
>>> import numpy as np
>>> from thinkctl.stats import bootstrap_interval, wilson_interval
>>> lo, hi = wilson_interval(7, 10)
>>> round(lo, 3), round(hi, 3)
(0.397, 0.892)
>>> x = np.random.default_rng(0).normal(size=50)
>>> ci = bootstrap_interval(lambda a: a.mean(axis=-1), [x], n_resamples=500, rng=0, vectorized=True)
>>> bool(ci.low < x.mean() < ci.high)
True
"""

from __future__ import annotations

from typing import Any, Callable, Literal, NamedTuple, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import binomtest

__all__ = ["wilson_interval", "bootstrap_interval", "BootstrapInterval"]

#: Default miss rate of an interval: 0.05 gives a 95 % interval.
DEFAULT_ALPHA = 0.05


def wilson_interval(successes: int, n: int, confidence: float = 1.0 - DEFAULT_ALPHA) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95 % by default).

    Parameters
    ----------
    successes : int
        Number of successes, ``0 <= successes <= n``.
    n : int
        Number of trials.
    confidence : float, default=0.95
        Coverage of the interval.

    Returns
    -------
    (lo, hi) : tuple of float
        The interval from ``scipy.stats.binomtest(successes, n).proportion_ci(method="wilson")``; ``(0, 1)`` when
        ``n == 0`` (nothing observed, nothing excluded).
    """
    if n <= 0:
        return (0.0, 1.0)
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(ci.low), float(ci.high))


class BootstrapInterval(NamedTuple):
    """Percentile-bootstrap interval: the bounds and the number of resamples whose statistic was kept."""

    low: float
    high: float
    n_valid: int


def _draw_indices(rng: np.random.Generator, strata: Sequence[NDArray[np.intp]] | None,
                  clusters: Sequence[NDArray[np.intp]] | None, n: int) -> NDArray[np.intp]:
    """Row indices of one resample: each stratum resampled on its own, or whole clusters, or plain rows."""
    if clusters is not None:
        pick = rng.integers(0, len(clusters), size=len(clusters))
        return np.concatenate([clusters[i] for i in pick])
    groups = strata if strata is not None else [np.arange(n)]
    return np.concatenate([g[rng.integers(0, g.size, size=g.size)] for g in groups])


def bootstrap_interval(
    statistic: Callable[..., Any],
    arrays: Sequence[ArrayLike],
    *,
    n_resamples: int,
    rng: np.random.Generator | int | Sequence[int] | np.random.SeedSequence | None,
    alpha: float = DEFAULT_ALPHA,
    vectorized: bool = False,
    strata: Sequence[NDArray[np.intp]] | None = None,
    clusters: Sequence[NDArray[np.intp]] | None = None,
    on_error: Literal["raise", "skip"] = "raise",
    drop: Literal["none", "nan", "nonfinite"] = "none",
) -> BootstrapInterval:
    """Percentile-bootstrap interval of ``statistic(*arrays)``, resampling the rows of all arrays together (paired).

    ``scipy.stats.bootstrap`` is not used because thinkctl's reported intervals need what it does not offer with
    identical numbers: resampling within strata (both classes in every AUROC resample) or whole clusters (a
    problem's samples together), resamples whose statistic is undefined skipped or dropped rather than failing the
    whole interval, the percentile levels ``alpha / 2`` and ``1 - alpha / 2`` computed from ``alpha`` (scipy works
    from ``confidence_level``, whose ``(1 - 0.95) / 2`` differs from 0.025 in the last bit), and a draw from the
    caller's ``numpy`` generator in a fixed order, so that a seed gives the same interval as in the published
    figures.

    Parameters
    ----------
    statistic : callable
        ``statistic(*resampled_arrays)``. With ``vectorized=True`` it receives arrays with a leading resample axis,
        shape ``(n_resamples, n_samples, ...)``, and returns shape ``(n_resamples,)``; otherwise it receives one
        resample, shape ``(n_samples, ...)``, and returns a float.
    arrays : sequence of array-like, each of shape (n_samples, ...)
        Data whose rows are resampled with one set of indices.
    n_resamples : int
        Number of bootstrap resamples.
    rng : numpy Generator or seed
        The generator drawing the resamples (used as is, so successive calls continue its stream), or a seed for
        ``numpy.random.default_rng``.
    alpha : float, default=0.05
        The interval covers ``1 - alpha``; its bounds are the ``alpha / 2`` and ``1 - alpha / 2`` quantiles (linear
        interpolation) of the resampled statistics.
    vectorized : bool, default=False
        Draw all indices at once, shape ``(n_resamples, n_samples)``, and call ``statistic`` once. Not combinable
        with ``strata`` or ``clusters``.
    strata : sequence of index arrays, optional
        Row indices of each stratum; every stratum is resampled separately, keeping its size. Default: one stratum
        holding every row.
    clusters : sequence of index arrays, optional
        Row indices of each cluster; whole clusters are resampled (a cluster bootstrap).
    on_error : {"raise", "skip"}, default="raise"
        What a ``ValueError`` from ``statistic`` on a resample does: propagate (naming the resample) or give a NaN
        statistic for that resample.
    drop : {"none", "nan", "nonfinite"}, default="none"
        Resampled statistics left out before taking quantiles: none, NaN only, or every non-finite value.

    Returns
    -------
    BootstrapInterval
        ``(low, high, n_valid)``; both bounds are NaN when no resample is kept or there are no rows.
    """
    if vectorized and (strata is not None or clusters is not None):
        raise ValueError("vectorized=True draws plain rows; pass vectorized=False to resample strata or clusters")
    if strata is not None and clusters is not None:
        raise ValueError("pass strata or clusters, not both")
    arrs = [np.asarray(a) for a in arrays]
    n = arrs[0].shape[0] if arrs else 0
    if n == 0:
        return BootstrapInterval(float("nan"), float("nan"), 0)
    gen = np.random.default_rng(rng)
    if vectorized:
        idx = gen.integers(0, n, size=(n_resamples, n))  # (B, N)
        values = np.asarray(statistic(*(a[idx] for a in arrs)), dtype=float)
    else:
        values = np.full(n_resamples, np.nan)
        for b in range(n_resamples):
            rows = _draw_indices(gen, strata, clusters, n)
            try:
                values[b] = float(statistic(*(a[rows] for a in arrs)))
            except ValueError as exc:
                if on_error == "raise":
                    raise ValueError(f"statistic failed on bootstrap resample {b} ({exc})") from exc
    if drop == "nan":
        values = values[~np.isnan(values)]
    elif drop == "nonfinite":
        values = values[np.isfinite(values)]
    if values.size == 0:
        return BootstrapInterval(float("nan"), float("nan"), 0)
    lo, hi = np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0])
    return BootstrapInterval(float(lo), float(hi), int(values.size))
