"""Percentile-bootstrap confidence intervals for held-out predictor metrics (AUROC, Spearman), by sample or by group.

When a test set holds several samples per problem, samples of one problem are not independent; resampling whole
groups (a cluster bootstrap) gives honest intervals. Resamples on which the statistic is undefined (an AUROC
resample with a single class, a Spearman resample with a constant input) are dropped and counted.

Examples
--------
>>> import numpy as np
>>> from thinkctl.predictors.bootstrap import auroc_ci
>>> rng = np.random.default_rng(0)
>>> y = rng.integers(0, 2, size=300); score = y + rng.normal(size=300)
>>> r = auroc_ci(y, score, n_bootstrap=200, seed=0)
>>> r["ci95"][0] < r["value"] < r["ci95"][1]
True
"""

from __future__ import annotations

import logging
import numbers
from typing import Any, Callable

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from thinkctl.stats import bootstrap_interval

__all__ = ["bootstrap_ci", "auroc_ci", "spearman_ci", "DEFAULT_N_BOOTSTRAP", "DEFAULT_CONFIDENCE"]

logger = logging.getLogger(__name__)

#: Number of bootstrap resamples (Efron & Tibshirani 1993 recommend 1000 or more for percentile intervals).
DEFAULT_N_BOOTSTRAP = 1000
#: Coverage of the reported intervals.
DEFAULT_CONFIDENCE = 0.95
#: Fewer valid resamples than this fraction of ``n_bootstrap`` makes the interval unreliable (logged as a warning).
MIN_VALID_FRACTION = 0.9


def _check_bootstrap_args(n_bootstrap: int, confidence: float) -> None:
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, numbers.Integral) or n_bootstrap < 1:
        raise ValueError(f"n_bootstrap={n_bootstrap!r} must be a positive integer (1000 is typical)")
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real) or not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence!r} must be strictly between 0 and 1 (e.g. 0.95)")


def bootstrap_ci(
    statistic: Callable[..., float],
    *arrays: ArrayLike,
    groups: ArrayLike | None = None,
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float, float, int]:
    """Point estimate and percentile-bootstrap interval of ``statistic(*arrays)``.

    Parameters
    ----------
    statistic : callable
        ``statistic(*arrays) -> float``; may raise ``ValueError`` or return NaN on degenerate resamples, which are
        then dropped.
    *arrays : array-like of shape (n_samples, ...)
        Arrays resampled together, row by row.
    groups : array-like of shape (n_samples,), optional
        Group of every row; whole groups are resampled (cluster bootstrap). ``None``: every row is its own group.
    n_bootstrap : int, default=1000
        Number of resamples.
    confidence : float, default=0.95
        Coverage of the interval.
    seed : int, default=0
        Seed of the ``numpy.random.default_rng`` drawing the resamples.

    Returns
    -------
    (value, lo, hi, n_valid) : tuple
        The statistic on the full data, the interval bounds, and the number of valid resamples.
    """
    _check_bootstrap_args(n_bootstrap, confidence)
    arrs = [np.asarray(a) for a in arrays]
    if not arrs:
        raise ValueError("pass at least one array to resample")
    n = arrs[0].shape[0]
    if any(a.shape[0] != n for a in arrs):
        raise ValueError(f"arrays have different numbers of rows {[a.shape[0] for a in arrs]}; pass aligned arrays")
    value = float(statistic(*arrs))
    members: list[NDArray[np.intp]] | None = None
    if groups is not None:
        g = np.asarray(groups)
        if g.shape != (n,):
            raise ValueError(f"groups has shape {g.shape} but the arrays have {n} rows; pass one group per row")
        _, inv = np.unique(g, return_inverse=True)
        order = np.argsort(inv, kind="stable")
        members = np.split(order, np.cumsum(np.bincount(inv))[:-1])
    ci = bootstrap_interval(statistic, arrs, n_resamples=n_bootstrap, rng=seed, alpha=1.0 - confidence,
                            clusters=members, on_error="skip", drop="nonfinite")
    if ci.n_valid < MIN_VALID_FRACTION * n_bootstrap:
        logger.warning("only %d of %d bootstrap resamples gave a defined statistic; the interval is unreliable",
                       ci.n_valid, n_bootstrap)
    return value, ci.low, ci.high, ci.n_valid


def _auroc(y: NDArray[Any], s: NDArray[Any]) -> float:
    if np.unique(y).shape[0] < 2:
        return float("nan")
    return float(roc_auc_score(y, s))


def _spearman(a: NDArray[Any], b: NDArray[Any]) -> float:
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def auroc_ci(y_true: ArrayLike, y_score: ArrayLike, *, groups: ArrayLike | None = None,
             n_bootstrap: int = DEFAULT_N_BOOTSTRAP, confidence: float = DEFAULT_CONFIDENCE,
             seed: int = 0) -> dict[str, Any]:
    """AUROC of ``y_score`` for binary ``y_true`` with a bootstrap interval.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Binary labels; both classes must be present.
    y_score : array-like of shape (n_samples,)
        Scores, higher meaning "more likely positive".
    groups, n_bootstrap, confidence, seed
        As in :func:`bootstrap_ci`.

    Returns
    -------
    dict
        ``{"value": float, "ci95": [lo, hi], "n": int, "n_bootstrap_valid": int}`` (the key says ``ci95`` whatever
        ``confidence`` is; ``"confidence"`` records it).
    """
    y = np.asarray(y_true)
    if np.unique(y).shape[0] != 2:
        raise ValueError(f"y_true must hold exactly two classes for an AUROC, got {np.unique(y).tolist()[:5]}")
    value, lo, hi, n_valid = bootstrap_ci(_auroc, y, np.asarray(y_score, dtype=float), groups=groups,
                                          n_bootstrap=n_bootstrap, confidence=confidence, seed=seed)
    return {"value": value, "ci95": [lo, hi], "confidence": confidence, "n": int(y.shape[0]),
            "n_bootstrap_valid": n_valid}


def spearman_ci(a: ArrayLike, b: ArrayLike, *, groups: ArrayLike | None = None,
                n_bootstrap: int = DEFAULT_N_BOOTSTRAP, confidence: float = DEFAULT_CONFIDENCE,
                seed: int = 0) -> dict[str, Any]:
    """Spearman rank correlation of ``a`` and ``b`` with a bootstrap interval, laid out as :func:`auroc_ci` returns."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    value, lo, hi, n_valid = bootstrap_ci(_spearman, x, y, groups=groups, n_bootstrap=n_bootstrap,
                                          confidence=confidence, seed=seed)
    return {"value": value, "ci95": [lo, hi], "confidence": confidence, "n": int(x.shape[0]),
            "n_bootstrap_valid": n_valid}
