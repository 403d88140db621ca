"""Calibration and discrimination metrics for binary probabilities, with bootstrap confidence intervals.

All metrics take ``y_true`` (labels in {0, 1}) and ``y_prob`` (the predicted probability of the *positive* class,
shape ``(n_samples,)``), like scikit-learn's ``brier_score_loss`` and torchmetrics' ``BinaryCalibrationError``.
They are not "top-label" metrics: a prediction of 0.1 is judged against the frequency of label 1 among samples
predicted near 0.1, not against the accuracy of predicting 0.

Binning convention
------------------
``strategy="uniform"`` uses the edges ``numpy.linspace(0, 1, n_bins + 1)``; ``strategy="quantile"`` uses
``numpy.percentile(y_prob, linspace(0, 100, n_bins + 1))`` (the same edges as scikit-learn's ``calibration_curve``).
Bins are closed on the left and open on the right, ``[b_k, b_{k+1})``, except the last, which is closed,
``[b_{n-1}, b_n]``. For every probability below 1 this is torchmetrics' convention (``torch.bucketize(...,
right=True)``), so the binned metrics equal ``BinaryCalibrationError`` with ``norm="l1" | "l2" | "max"``. Two known
differences, both only for values exactly on an edge:

* torchmetrics puts ``y_prob == 1.0`` into an extra, (n_bins + 1)-th bin of its own; here it belongs to the last bin,
  as in ``numpy.histogram`` and ``calibration_curve``.
* scikit-learn's ``calibration_curve`` closes bins on the right (``(b_k, b_{k+1}]``), so a value exactly on an
  interior edge lands one bin lower there. Away from edges the per-bin means agree.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Literal, Union

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, stats

from thinkctl.calibration._validation import (
    check_binary_inputs,
    check_binary_labels,
    check_n_bins,
    check_same_length,
    check_scores,
    check_strategy,
    check_unit_interval,
)
from thinkctl.registry import Registry
from thinkctl.stats import bootstrap_interval

__all__ = [
    "ReliabilityCurve",
    "reliability_curve",
    "expected_calibration_error",
    "maximum_calibration_error",
    "debiased_l2_calibration_error",
    "smooth_ece",
    "brier_score",
    "negative_log_likelihood",
    "auroc",
    "bootstrap_ci",
    "METRICS",
    "DEFAULT_N_BINS",
    "NLL_CLIP_EPS",
]

logger = logging.getLogger(__name__)

#: Default number of bins for binned calibration metrics (Guo et al. 2017, "On Calibration of Modern Neural
#: Networks", use 15; so do torchmetrics' examples).
DEFAULT_N_BINS = 15

#: Probabilities are clipped to ``[eps, 1 - eps]`` before taking logs, with ``eps`` the float64 machine epsilon,
#: exactly as scikit-learn's ``log_loss`` does, so that a confident mistake costs a large finite loss, not ``inf``.
NLL_CLIP_EPS = float(np.finfo(np.float64).eps)

#: Number of grid cells on [0, 1] on which smooth ECE is evaluated (Błasiok & Nakkiran 2023 evaluate the kernel
#: smoother on a grid as well). A power of two keeps the FFT fast. Against direct numerical integration the
#: grid value is within about 1e-4 for bandwidths >= 0.005 and 1e-6 for bandwidths >= 0.03 (see the tests).
SMOOTH_ECE_GRID = 1024

#: Relative tolerance of the bandwidth fixed point ``smECE_sigma == sigma`` (Brent's method).
SMOOTH_ECE_XTOL = 1e-10

Norm = Literal["l1", "l2", "max"]
Strategy = Literal["uniform", "quantile"]
MetricFn = Callable[[ArrayLike, ArrayLike], float]

_NORMS = ("l1", "l2", "max")


@dataclass(frozen=True)
class ReliabilityCurve:
    """Per-bin statistics of binary probabilities, the data behind a reliability diagram.

    Attributes
    ----------
    edges : ndarray of shape (n_bins + 1,)
        Bin edges; bin ``k`` is ``[edges[k], edges[k+1])``, the last bin is closed.
    counts : ndarray of shape (n_bins,)
        Number of samples per bin.
    mean_predicted : ndarray of shape (n_bins,)
        Mean ``y_prob`` per bin (NaN for empty bins).
    fraction_positive : ndarray of shape (n_bins,)
        Fraction of ``y_true == 1`` per bin (NaN for empty bins).
    n_samples : int
        Total number of samples.
    """

    edges: NDArray[np.float64]
    counts: NDArray[np.int64]
    mean_predicted: NDArray[np.float64]
    fraction_positive: NDArray[np.float64]
    n_samples: int

    @property
    def nonempty(self) -> NDArray[np.bool_]:
        """Boolean mask of shape (n_bins,) of bins that hold at least one sample."""
        return self.counts > 0

    @property
    def weights(self) -> NDArray[np.float64]:
        """Fraction of samples in each bin, shape (n_bins,)."""
        return self.counts / self.n_samples

    @property
    def gaps(self) -> NDArray[np.float64]:
        """``fraction_positive - mean_predicted`` per bin, shape (n_bins,) (NaN for empty bins)."""
        return self.fraction_positive - self.mean_predicted

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (empty bins carry ``None`` instead of NaN)."""

        def clean(a: NDArray[np.float64]) -> list[float | None]:
            return [float(v) if np.isfinite(v) else None for v in a]

        return {
            "edges": [float(e) for e in self.edges],
            "counts": [int(c) for c in self.counts],
            "mean_predicted": clean(self.mean_predicted),
            "fraction_positive": clean(self.fraction_positive),
            "n_samples": int(self.n_samples),
        }


def _bin_edges(y_prob: NDArray[np.float64], n_bins: int, strategy: str) -> NDArray[np.float64]:
    if strategy == "uniform":
        return np.linspace(0.0, 1.0, n_bins + 1)
    # Same call as scikit-learn's calibration_curve, so the quantile edges are bit-identical to its edges.
    return np.percentile(y_prob, np.linspace(0.0, 1.0, n_bins + 1) * 100)


def _bin_ids(y_prob: NDArray[np.float64], edges: NDArray[np.float64]) -> NDArray[np.intp]:
    n_bins = edges.shape[0] - 1
    # side="right": a value equal to edges[k] goes to bin k (left-closed bins, torchmetrics' convention);
    # the clip puts the right end of the range (1.0, or the maximum for quantile bins) in the last bin.
    ids = np.searchsorted(edges, y_prob, side="right") - 1
    return np.clip(ids, 0, n_bins - 1)


def _reliability(y: NDArray[np.int64], p: NDArray[np.float64], n_bins: int, strategy: str) -> ReliabilityCurve:
    edges = _bin_edges(p, n_bins, strategy)
    ids = _bin_ids(p, edges)
    counts = np.bincount(ids, minlength=n_bins)
    sum_p = np.bincount(ids, weights=p, minlength=n_bins)
    sum_y = np.bincount(ids, weights=y.astype(np.float64), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.where(counts > 0, sum_p / counts, np.nan)
        frac_y = np.where(counts > 0, sum_y / counts, np.nan)
    return ReliabilityCurve(edges=edges, counts=counts.astype(np.int64), mean_predicted=mean_p,
                            fraction_positive=frac_y, n_samples=int(p.shape[0]))


def reliability_curve(
    y_true: ArrayLike,
    y_prob: ArrayLike,
    n_bins: int = DEFAULT_N_BINS,
    strategy: Strategy = "uniform",
) -> ReliabilityCurve:
    """Bin predictions and compute per-bin mean prediction and observed frequency.

    The compute half of :func:`thinkctl.calibration.reliability_diagram` (compare scikit-learn's
    ``calibration_curve``, which returns ``fraction_positive`` and ``mean_predicted`` of the non-empty bins).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Binary labels in {0, 1}.
    y_prob : array-like of shape (n_samples,)
        Predicted probability of the positive class, in [0, 1].
    n_bins : int, default=15
        Number of bins.
    strategy : {"uniform", "quantile"}, default="uniform"
        Equal-width bins on [0, 1] or equal-mass bins (quantiles of ``y_prob``).

    Returns
    -------
    ReliabilityCurve

    Examples
    --------
    >>> curve = reliability_curve([0, 1, 1, 0], [0.1, 0.9, 0.8, 0.3], n_bins=2)
    >>> curve.counts.tolist(), curve.fraction_positive.tolist()
    ([2, 2], [0.0, 1.0])
    """
    y, p = check_binary_inputs(y_true, y_prob)
    return _reliability(y, p, check_n_bins(n_bins), check_strategy(strategy))


def expected_calibration_error(
    y_true: ArrayLike,
    y_prob: ArrayLike,
    n_bins: int = DEFAULT_N_BINS,
    strategy: Strategy = "uniform",
    norm: Norm = "l1",
) -> float:
    r"""Binned expected calibration error of positive-class probabilities.

    With bins :math:`B_k`, weights :math:`w_k = |B_k| / n`, mean prediction :math:`\bar p_k` and observed frequency
    :math:`\bar y_k`:

    * ``norm="l1"``: :math:`\sum_k w_k |\bar y_k - \bar p_k|` (the usual ECE, Naeini et al. 2015; Guo et al. 2017);
    * ``norm="l2"``: :math:`\sqrt{\sum_k w_k (\bar y_k - \bar p_k)^2}` (root-mean-square calibration error);
    * ``norm="max"``: :math:`\max_k |\bar y_k - \bar p_k|` over non-empty bins (same as
      :func:`maximum_calibration_error`).

    These equal torchmetrics' ``BinaryCalibrationError(n_bins, norm)`` for ``strategy="uniform"`` (see the module
    docstring for the edge convention).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Binary labels in {0, 1}.
    y_prob : array-like of shape (n_samples,)
        Predicted probability of the positive class, in [0, 1].
    n_bins : int, default=15
        Number of bins.
    strategy : {"uniform", "quantile"}, default="uniform"
        Equal-width or equal-mass bins.
    norm : {"l1", "l2", "max"}, default="l1"
        How per-bin gaps are combined.

    Returns
    -------
    float
        In [0, 1]; 0 means the binned frequencies match the binned predictions exactly.

    Examples
    --------
    >>> round(expected_calibration_error([0, 0, 1, 1, 1], [0.25, 0.25, 0.55, 0.75, 0.75], n_bins=2), 4)
    0.29
    """
    if norm not in _NORMS:
        raise ValueError(f"norm={norm!r} is not known; use one of {', '.join(map(repr, _NORMS))}")
    curve = reliability_curve(y_true, y_prob, n_bins, strategy)
    mask = curve.nonempty
    gaps = np.abs(curve.gaps[mask])
    w = curve.weights[mask]
    if norm == "l1":
        return float(np.sum(w * gaps))
    if norm == "l2":
        return float(np.sqrt(np.sum(w * gaps**2)))
    return float(np.max(gaps))


def maximum_calibration_error(
    y_true: ArrayLike,
    y_prob: ArrayLike,
    n_bins: int = DEFAULT_N_BINS,
    strategy: Strategy = "uniform",
) -> float:
    """Largest absolute gap between observed frequency and mean prediction over non-empty bins (MCE).

    Equal to torchmetrics' ``BinaryCalibrationError(n_bins, norm="max")`` for ``strategy="uniform"``.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Binary labels in {0, 1}.
    y_prob : array-like of shape (n_samples,)
        Predicted probability of the positive class, in [0, 1].
    n_bins : int, default=15
        Number of bins.
    strategy : {"uniform", "quantile"}, default="uniform"
        Equal-width or equal-mass bins.

    Returns
    -------
    float
    """
    return expected_calibration_error(y_true, y_prob, n_bins=n_bins, strategy=strategy, norm="max")


def debiased_l2_calibration_error(
    y_true: ArrayLike,
    y_prob: ArrayLike,
    n_bins: int = DEFAULT_N_BINS,
    strategy: Strategy = "uniform",
) -> float:
    r"""Debiased binned L2 calibration error (Kumar, Liang & Ma 2019, "Verified Uncertainty Calibration").

    The plug-in estimate :math:`\sum_k w_k (\bar y_k - \bar p_k)^2` overestimates the squared calibration error
    because :math:`\bar y_k` is noisy; its bias is estimated per bin by :math:`\bar y_k (1 - \bar y_k) / (n_k - 1)`
    and subtracted:

    .. math:: \widehat{CE}^2 = \sum_k w_k \Big[(\bar y_k - \bar p_k)^2 - \frac{\bar y_k(1-\bar y_k)}{n_k - 1}\Big],
              \qquad \text{result} = \sqrt{\max(\widehat{CE}^2, 0)}.

    Bins with a single sample get no correction (their :math:`\bar y_k (1 - \bar y_k)` is 0 anyway). This is the
    estimator torchmetrics implements internally as ``_ce_compute(..., norm="l2", debias=True)``. Kumar et al.
    recommend equal-mass bins (``strategy="quantile"``).

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Binary labels in {0, 1}.
    y_prob : array-like of shape (n_samples,)
        Predicted probability of the positive class, in [0, 1].
    n_bins : int, default=15
        Number of bins.
    strategy : {"uniform", "quantile"}, default="uniform"
        Equal-width or equal-mass bins.

    Returns
    -------
    float
        Estimated L2 calibration error, comparable with ``expected_calibration_error(..., norm="l2")``.
    """
    curve = reliability_curve(y_true, y_prob, n_bins, strategy)
    mask = curve.nonempty
    n_k = curve.counts[mask].astype(np.float64)
    y_k = curve.fraction_positive[mask]
    w = curve.weights[mask]
    plugin = np.sum(w * curve.gaps[mask] ** 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        bias = np.where(n_k > 1, y_k * (1.0 - y_k) / (n_k - 1.0), 0.0)
    estimate = plugin - np.sum(w * bias)
    return float(np.sqrt(estimate)) if estimate > 0 else 0.0


def _smooth_ece_spectrum(y: NDArray[np.int64], p: NDArray[np.float64]) -> NDArray[np.complex128]:
    """FFT of the residual mass ``(y - p) / n`` on a grid, reflected about 0 and 1 (period 2)."""
    grid = SMOOTH_ECE_GRID
    mass = np.zeros(grid)
    # Linear deposit onto cell centres (j + 0.5) / grid. Index -1 and `grid` are the reflections of cells 0 and
    # grid-1 about the boundaries, so clipping them is exactly the reflection.
    u = p * grid - 0.5
    j0 = np.floor(u)
    frac = u - j0
    j0 = j0.astype(np.int64)
    r = (y - p) / p.shape[0]
    mass += np.bincount(np.clip(j0, 0, grid - 1), weights=r * (1.0 - frac), minlength=grid)
    mass += np.bincount(np.clip(j0 + 1, 0, grid - 1), weights=r * frac, minlength=grid)
    # Even extension: a reflected kernel on [0, 1] is a periodic (period 2) convolution of the mirrored signal.
    return np.fft.rfft(np.concatenate([mass, mass[::-1]]))


def _smooth_ece_at(spectrum: NDArray[np.complex128], sigma: float) -> float:
    grid = SMOOTH_ECE_GRID
    period = 2 * grid
    k = np.arange(spectrum.shape[0])
    # Fourier coefficients of a Gaussian of std sigma (in [0, 1] units, sigma * grid cells) periodised with period 2.
    kernel = np.exp(-2.0 * (np.pi * sigma * grid * k / period) ** 2)
    smoothed = np.fft.irfft(spectrum * kernel, n=period)[:grid]
    return float(np.sum(np.abs(smoothed)))


def smooth_ece(
    y_true: ArrayLike,
    y_prob: ArrayLike,
    bandwidth: float | None = None,
    *,
    return_bandwidth: bool = False,
) -> Union[float, tuple[float, float]]:
    r"""Smooth expected calibration error (Błasiok & Nakkiran 2023, "Smooth ECE: Principled Reliability Diagrams
    via Kernel Smoothing").

    The residuals :math:`r_i = y_i - p_i` are smoothed over the prediction axis with a Gaussian kernel of width
    :math:`\sigma` reflected at 0 and 1, and

    .. math:: \mathrm{smECE}_\sigma = \int_0^1 \Big| \frac1n \sum_i K_\sigma(t, p_i)\, r_i \Big| \, dt .

    Without ``bandwidth`` the width is the unique fixed point :math:`\sigma^*` with
    :math:`\mathrm{smECE}_{\sigma^*} = \sigma^*`, as in the paper, so no bin count has to be chosen. The integral
    is evaluated on a grid of ``SMOOTH_ECE_GRID`` cells (linear deposit, FFT convolution), within about 1e-4
    of the exact integral for bandwidths of at least 0.005.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Binary labels in {0, 1}.
    y_prob : array-like of shape (n_samples,)
        Predicted probability of the positive class, in [0, 1].
    bandwidth : float, optional
        Fixed kernel width :math:`\sigma` in (0, 1]; default: the fixed point.
    return_bandwidth : bool, default=False
        Also return the bandwidth used.

    Returns
    -------
    float or (float, float)
        smECE, or ``(smECE, sigma)`` when ``return_bandwidth``.
    """
    y, p = check_binary_inputs(y_true, y_prob)
    spectrum = _smooth_ece_spectrum(y, p)
    if bandwidth is not None:
        sigma = check_unit_interval(bandwidth, "bandwidth", closed_right=True)
        value = _smooth_ece_at(spectrum, sigma)
        return (value, sigma) if return_bandwidth else value
    lo, hi = 1.0 / SMOOTH_ECE_GRID, 1.0

    def excess(sigma: float) -> float:
        return _smooth_ece_at(spectrum, sigma) - sigma

    if excess(lo) <= 0.0:
        # Calibrated to within the grid resolution.
        sigma = lo
    elif excess(hi) >= 0.0:  # only when every residual is +-1 with one sign
        sigma = hi
    else:
        sigma = float(optimize.brentq(excess, lo, hi, xtol=SMOOTH_ECE_XTOL))
    value = _smooth_ece_at(spectrum, sigma)
    return (value, sigma) if return_bandwidth else value


def brier_score(y_true: ArrayLike, y_prob: ArrayLike) -> float:
    """Mean squared difference between the positive-class probability and the label.

    Equal to scikit-learn's ``brier_score_loss(y_true, y_prob)``.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Binary labels in {0, 1}.
    y_prob : array-like of shape (n_samples,)
        Predicted probability of the positive class, in [0, 1].

    Returns
    -------
    float
        In [0, 1]; lower is better.
    """
    y, p = check_binary_inputs(y_true, y_prob)
    return float(np.mean((p - y) ** 2))


def negative_log_likelihood(y_true: ArrayLike, y_prob: ArrayLike) -> float:
    """Mean binary cross-entropy (log loss) in nats.

    Probabilities are clipped to ``[NLL_CLIP_EPS, 1 - NLL_CLIP_EPS]`` first, so the value equals scikit-learn's
    ``log_loss(y_true, y_prob)``.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Binary labels in {0, 1}.
    y_prob : array-like of shape (n_samples,)
        Predicted probability of the positive class, in [0, 1].

    Returns
    -------
    float
        Non-negative; lower is better.
    """
    y, p = check_binary_inputs(y_true, y_prob)
    p = np.clip(p, NLL_CLIP_EPS, 1.0 - NLL_CLIP_EPS)
    return float(-np.mean(np.where(y == 1, np.log(p), np.log1p(-p))))


def auroc(y_true: ArrayLike, y_prob: ArrayLike) -> float:
    """Area under the ROC curve, from the Mann-Whitney U statistic (ties count one half).

    Equal to scikit-learn's ``roc_auc_score(y_true, y_prob)``. Any real-valued score works, not only
    probabilities in [0, 1], as long as it is finite.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Binary labels in {0, 1}; both classes must be present.
    y_prob : array-like of shape (n_samples,)
        Scores, higher meaning "more likely positive".

    Returns
    -------
    float
        In [0, 1]; 0.5 is chance.
    """
    y = check_binary_labels(y_true, "y_true")
    s = check_scores(y_prob, "y_prob")
    check_same_length(y, s, "y_true", "y_prob")
    n_pos = int(y.sum())
    n_neg = y.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        present = 1 if n_pos else 0
        raise ValueError(
            f"y_true contains only class {present}; AUROC is undefined without both classes. "
            "Evaluate on a set with positives and negatives (bootstrap_ci resamples within classes by default)"
        )
    ranks = stats.rankdata(s)  # average ranks for ties
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


#: Named metrics, for :func:`bootstrap_ci` and reports. Each maps ``(y_true, y_prob) -> float``.
METRICS: Registry[MetricFn] = Registry("metric")
METRICS.add("ece", expected_calibration_error)
METRICS.add("mce", maximum_calibration_error)
METRICS.add("debiased_l2_ce", debiased_l2_calibration_error)
METRICS.add("smooth_ece", smooth_ece)  # type: ignore[arg-type]
METRICS.add("brier", brier_score)
METRICS.add("nll", negative_log_likelihood)
METRICS.add("auroc", auroc)


def bootstrap_ci(
    metric: Union[str, MetricFn],
    y_true: ArrayLike,
    y_prob: ArrayLike,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    *,
    stratify: bool = True,
) -> tuple[float, float, float]:
    """Point estimate and percentile-bootstrap confidence interval of a metric.

    Parameters
    ----------
    metric : str or callable
        A function ``metric(y_true, y_prob) -> float`` (any of this module's metrics, or a
        ``functools.partial`` of one with options set), or a name from :data:`METRICS`
        (``"ece"``, ``"mce"``, ``"debiased_l2_ce"``, ``"smooth_ece"``, ``"brier"``, ``"nll"``, ``"auroc"``).
    y_true : array-like of shape (n_samples,)
        Binary labels in {0, 1}.
    y_prob : array-like of shape (n_samples,)
        Predicted probability of the positive class (any finite score for ``auroc``).
    n_boot : int, default=1000
        Number of bootstrap resamples.
    alpha : float, default=0.05
        The interval covers ``1 - alpha`` (0.05 -> 95 % interval).
    seed : int, default=0
        Seed of the ``numpy.random.default_rng`` that draws the resamples.
    stratify : bool, default=True
        Resample positives and negatives separately, keeping the class counts fixed (as pROC does by default).
        This keeps both classes in every resample, which AUROC needs; with ``False`` every resample is a plain
        i.i.d. draw of ``n_samples`` rows.

    Returns
    -------
    (point, lo, hi) : tuple of float
        The metric on the full data and the ``alpha / 2`` and ``1 - alpha / 2`` percentiles over resamples.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> p = rng.uniform(size=200); y = (rng.uniform(size=200) < p).astype(int)
    >>> point, lo, hi = bootstrap_ci("brier", y, p, n_boot=200)
    >>> lo <= point <= hi
    True
    """
    fn: MetricFn = METRICS.get(metric) if isinstance(metric, str) else metric
    if not callable(fn):
        raise ValueError(f"metric must be a callable or one of {METRICS.names()}, got {metric!r}")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot={n_boot!r} is invalid; use a positive integer (1000 is typical)")
    alpha = check_unit_interval(alpha, "alpha")
    y = check_binary_labels(y_true, "y_true")
    p = check_scores(y_prob, "y_prob")
    check_same_length(y, p, "y_true", "y_prob")
    point = float(fn(y, p))
    strata = [np.flatnonzero(y == c) for c in (0, 1)] if stratify else [np.arange(y.shape[0])]
    try:
        lo, hi, _ = bootstrap_interval(fn, [y, p], n_resamples=n_boot, rng=seed, alpha=alpha,
                                       strata=[g for g in strata if g.size])
    except ValueError as exc:
        raise ValueError(f"{exc}; with stratify=False a resample can lose a class, so use stratify=True") from exc
    logger.debug("bootstrap_ci(%s): point=%.6g, [%.6g, %.6g] over %d resamples", metric, point, lo, hi, n_boot)
    return point, float(lo), float(hi)
