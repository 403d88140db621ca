"""Post-hoc calibrators for binary scores: temperature, Platt, isotonic, histogram binning.

Every calibrator is a scikit-learn estimator that maps a 1-D array of raw scores (logits, probabilities or any
monotone confidence score) to calibrated probabilities of the positive class:

* ``fit(X, y)`` takes ``X`` of shape ``(n_samples,)`` (a column ``(n_samples, 1)`` is accepted) and labels ``y``
  in {0, 1} with both classes present, validates them and returns ``self``;
* ``predict_proba(X)`` returns an array of shape ``(n_samples,)``: the calibrated probability of the **positive**
  class (not scikit-learn's two-column layout; stack ``1 - p, p`` if you need it);
* ``predict(X)`` returns ``(predict_proba(X) >= 0.5).astype(int)``;
* fitted state ends in ``_``; calling ``predict*`` before ``fit`` raises ``sklearn.exceptions.NotFittedError``;
* ``to_dict()`` / ``from_dict()`` and ``save(path)`` / ``load(path)`` persist as JSON (no pickle), stamped with
  the thinkctl version and the calibrator kind, both checked on loading.

That shared contract is :class:`~thinkctl.calibration.base.BaseCalibrator`; this module holds the calibrators.

Examples
--------
>>> import numpy as np
>>> from thinkctl.calibration import TemperatureScaler
>>> rng = np.random.default_rng(0)
>>> z = rng.normal(scale=3.0, size=500)               # over-confident logits
>>> y = (rng.uniform(size=500) < 1 / (1 + np.exp(-z / 3.0))).astype(int)
>>> ts = TemperatureScaler().fit(z, y)
>>> 2.0 < ts.temperature_ < 4.5
True
>>> ts.predict_proba(z).shape
(500,)
"""

from __future__ import annotations

import logging
import os
from typing import Any, Literal, Mapping

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize
from scipy.special import expit, logit
from sklearn.isotonic import IsotonicRegression

from thinkctl.calibration._validation import check_n_bins, check_probabilities, check_scores, check_strategy
from thinkctl.calibration.base import CALIBRATORS, DECISION_THRESHOLD, BaseCalibrator, check_fit_data
from thinkctl.calibration.metrics import NLL_CLIP_EPS

__all__ = [
    "BaseCalibrator",
    "TemperatureScaler",
    "PlattScaler",
    "IsotonicCalibrator",
    "HistogramBinning",
    "CALIBRATORS",
    "make_calibrator",
    "load_calibrator",
    "DECISION_THRESHOLD",
    "INPUT_TYPES",
]

logger = logging.getLogger(__name__)

#: What the scores given to :class:`TemperatureScaler` and :class:`PlattScaler` are.
INPUT_TYPES = ("logit", "probability")
#: Search interval for log(T) in temperature scaling; the same +-10 as scikit-learn's
#: ``CalibratedClassifierCV(method="temperature")`` (it searches log(1/T) on [-10, 10]).
LOG_TEMPERATURE_BOUNDS = (-10.0, 10.0)
#: Absolute tolerance on log(T) for the bounded Brent search.
LOG_TEMPERATURE_XATOL = 1e-10
#: Platt's fit stops when the Newton decrement (half of g' H^-1 g, an estimate of the distance to the optimal mean
#: log-loss) falls below this; Newton converges quadratically, so this costs one or two extra steps.
PLATT_DECREMENT_TOL = 1e-20
#: Iteration cap of that fit (it only matters for separable data without Platt's target smoothing, where the
#: slope diverges).
PLATT_MAXITER = 100
#: Backtracking line search: required fraction of the predicted decrease (Armijo) and maximum number of halvings.
PLATT_ARMIJO = 0.25
PLATT_MAX_HALVINGS = 60
#: Ridge added to the Hessian so that constant scores (a singular Hessian) still give a Newton step.
PLATT_HESSIAN_JITTER = 1e-12
#: Default number of bins of :class:`HistogramBinning` (Zadrozny & Elkan 2001 use 10 equal-frequency bins).
HISTOGRAM_DEFAULT_BINS = 10

def _check_input_type(input_type: str) -> str:
    if input_type not in INPUT_TYPES:
        raise ValueError(f"input_type={input_type!r} is not known; use one of {', '.join(map(repr, INPUT_TYPES))}")
    return input_type


def _to_logit(x: NDArray[np.float64], input_type: str) -> NDArray[np.float64]:
    if input_type == "logit":
        return x
    return logit(np.clip(x, NLL_CLIP_EPS, 1.0 - NLL_CLIP_EPS))


def _newton_logistic(design: NDArray[np.float64], t: NDArray[np.float64]) -> NDArray[np.float64]:
    """Minimise the mean log-loss ``mean(log(1 + exp(u)) - t u)``, ``u = design @ w``, by damped Newton.

    ``design`` has shape (n_samples, 2) (score, 1); ``t`` holds targets in [0, 1]. Starts from the identity map
    ``w = (1, 0)``. The loss is convex, so a backtracking Newton method converges to the optimum.
    """
    n = design.shape[0]

    def loss(w: NDArray[np.float64]) -> float:
        u = design @ w
        return float(np.mean(np.logaddexp(0.0, u) - t * u))

    w = np.array([1.0, 0.0])
    current = loss(w)
    for _ in range(PLATT_MAXITER):
        q = expit(design @ w)
        grad = design.T @ (q - t) / n
        hess = (design * (q * (1.0 - q))[:, None]).T @ design / n + PLATT_HESSIAN_JITTER * np.eye(2)
        step = np.linalg.solve(hess, grad)
        decrement = float(grad @ step)
        if decrement / 2.0 <= PLATT_DECREMENT_TOL:
            return w
        scale = 1.0
        for _ in range(PLATT_MAX_HALVINGS):
            trial = w - scale * step
            value = loss(trial)
            if value <= current - PLATT_ARMIJO * scale * decrement:
                break
            scale /= 2.0
        else:
            # No decrease left within float precision: we are at the optimum up to round-off.
            return w
        w, current = trial, value
    logger.warning("Platt scaling did not converge in %d Newton steps (slope %.3g); with platt_targets=False this "
                   "happens when the scores separate the classes perfectly", PLATT_MAXITER, w[0])
    return w


@CALIBRATORS.register("temperature")
class TemperatureScaler(BaseCalibrator):
    """Temperature scaling (Guo et al. 2017): ``p = sigmoid(z / T)`` with one temperature ``T > 0``.

    ``T`` minimises the negative log-likelihood on the calibration data (bounded Brent search on ``log T``).
    ``T > 1`` softens over-confident scores, ``T < 1`` sharpens under-confident ones; the ranking, hence AUROC,
    is unchanged.

    Parameters
    ----------
    input_type : {"logit", "probability"}, default="logit"
        ``"logit"``: ``X`` are real-valued logits ``z``. ``"probability"``: ``X`` are probabilities in [0, 1],
        turned into ``z = logit(X)`` (clipped at machine epsilon).

    Attributes
    ----------
    temperature_ : float
        Fitted temperature.
    """

    kind = "temperature"

    def __init__(self, *, input_type: Literal["logit", "probability"] = "logit") -> None:
        self.input_type = input_type

    def _check_X(self, X: ArrayLike) -> NDArray[np.float64]:
        return check_probabilities(X, "X") if self.input_type == "probability" else check_scores(X, "X")

    def fit(self, X: ArrayLike, y: ArrayLike) -> "TemperatureScaler":
        """Fit the temperature.

        Parameters
        ----------
        X : array-like of shape (n_samples,)
            Logits or probabilities, per ``input_type``.
        y : array-like of shape (n_samples,)
            Labels in {0, 1}; both classes must occur.

        Returns
        -------
        self
        """
        _check_input_type(self.input_type)
        x, labels = check_fit_data(X, y, probabilities=self.input_type == "probability")
        z = _to_logit(x, self.input_type)
        sign = 2.0 * labels - 1.0

        def nll(log_t: float) -> float:
            return float(np.mean(np.logaddexp(0.0, -sign * z * np.exp(-log_t))))

        res = optimize.minimize_scalar(nll, bounds=LOG_TEMPERATURE_BOUNDS, method="bounded",
                                       options={"xatol": LOG_TEMPERATURE_XATOL})
        log_t = float(res.x)
        if min(abs(log_t - b) for b in LOG_TEMPERATURE_BOUNDS) < np.sqrt(LOG_TEMPERATURE_XATOL):
            logger.warning("temperature scaling stopped at the search bound T=%.3g (data nearly separable or "
                           "scores constant); the calibrated probabilities will be close to 0/1 or 0.5", np.exp(log_t))
        self.temperature_ = float(np.exp(log_t))
        return self

    def _proba(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        return expit(_to_logit(x, self.input_type) / self.temperature_)

    def _state(self) -> dict[str, Any]:
        return {"temperature": self.temperature_}

    def _set_state(self, state: Mapping[str, Any]) -> None:
        self.temperature_ = float(state["temperature"])


@CALIBRATORS.register("platt")
class PlattScaler(BaseCalibrator):
    """Platt scaling (Platt 1999): logistic regression on the logit, ``p = sigmoid(a * z + b)``.

    Fitted by a damped Newton method on the unpenalised log-likelihood (convex in ``a, b``).

    Parameters
    ----------
    input_type : {"logit", "probability"}, default="logit"
        What ``X`` holds (see :class:`TemperatureScaler`).
    platt_targets : bool, default=True
        Replace the 0/1 targets by Platt's ``1 / (N_- + 2)`` and ``(N_+ + 1) / (N_+ + 2)``, which keeps the fit
        finite on separable data (as scikit-learn's ``CalibratedClassifierCV(method="sigmoid")`` does). With
        ``False`` the fit is plain maximum-likelihood logistic regression on ``z``.

    Attributes
    ----------
    slope_ : float
        ``a``.
    intercept_ : float
        ``b``.
    """

    kind = "platt"

    def __init__(self, *, input_type: Literal["logit", "probability"] = "logit", platt_targets: bool = True) -> None:
        self.input_type = input_type
        self.platt_targets = platt_targets

    def _check_X(self, X: ArrayLike) -> NDArray[np.float64]:
        return check_probabilities(X, "X") if self.input_type == "probability" else check_scores(X, "X")

    def fit(self, X: ArrayLike, y: ArrayLike) -> "PlattScaler":
        """Fit slope and intercept.

        Parameters
        ----------
        X : array-like of shape (n_samples,)
            Logits or probabilities, per ``input_type``.
        y : array-like of shape (n_samples,)
            Labels in {0, 1}; both classes must occur.

        Returns
        -------
        self
        """
        _check_input_type(self.input_type)
        if not isinstance(self.platt_targets, (bool, np.bool_)):
            raise ValueError(f"platt_targets={self.platt_targets!r} must be True or False")
        x, labels = check_fit_data(X, y, probabilities=self.input_type == "probability")
        z = _to_logit(x, self.input_type)
        t = labels.astype(np.float64)
        if self.platt_targets:
            n_pos = float(labels.sum())
            n_neg = labels.shape[0] - n_pos
            t = np.where(labels == 1, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
        design = np.stack([z, np.ones_like(z)], axis=1)  # (n, 2)
        w = _newton_logistic(design, t)
        self.slope_, self.intercept_ = float(w[0]), float(w[1])
        return self

    def _proba(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        return expit(self.slope_ * _to_logit(x, self.input_type) + self.intercept_)

    def _state(self) -> dict[str, Any]:
        return {"slope": self.slope_, "intercept": self.intercept_}

    def _set_state(self, state: Mapping[str, Any]) -> None:
        self.slope_ = float(state["slope"])
        self.intercept_ = float(state["intercept"])


@CALIBRATORS.register("isotonic")
class IsotonicCalibrator(BaseCalibrator):
    """Isotonic regression (Zadrozny & Elkan 2002): the best monotone step function from scores to frequencies.

    Fitted with scikit-learn's ``IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip")``; predictions
    interpolate linearly between its thresholds and are constant outside the fitted range, exactly as
    ``IsotonicRegression.predict``. Works on any monotone score (logits or probabilities alike).

    Parameters
    ----------
    increasing : bool, default=True
        Whether a higher score means a higher probability.

    Attributes
    ----------
    X_thresholds_ : ndarray of shape (n_thresholds,)
        Score knots (increasing).
    y_thresholds_ : ndarray of shape (n_thresholds,)
        Calibrated probability at each knot.
    """

    kind = "isotonic"

    def __init__(self, *, increasing: bool = True) -> None:
        self.increasing = increasing

    def fit(self, X: ArrayLike, y: ArrayLike) -> "IsotonicCalibrator":
        """Fit the monotone map.

        Parameters
        ----------
        X : array-like of shape (n_samples,)
            Scores.
        y : array-like of shape (n_samples,)
            Labels in {0, 1}; both classes must occur.

        Returns
        -------
        self
        """
        if not isinstance(self.increasing, (bool, np.bool_)):
            raise ValueError(f"increasing={self.increasing!r} must be True or False")
        x, labels = check_fit_data(X, y, probabilities=False)
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=bool(self.increasing), out_of_bounds="clip")
        iso.fit(x, labels.astype(np.float64))
        self.X_thresholds_ = np.asarray(iso.X_thresholds_, dtype=np.float64)
        self.y_thresholds_ = np.asarray(iso.y_thresholds_, dtype=np.float64)
        return self

    def _proba(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.interp(x, self.X_thresholds_, self.y_thresholds_)

    def _state(self) -> dict[str, Any]:
        return {"X_thresholds": self.X_thresholds_.tolist(), "y_thresholds": self.y_thresholds_.tolist()}

    def _set_state(self, state: Mapping[str, Any]) -> None:
        self.X_thresholds_ = np.asarray(state["X_thresholds"], dtype=np.float64)
        self.y_thresholds_ = np.asarray(state["y_thresholds"], dtype=np.float64)
        if self.X_thresholds_.shape != self.y_thresholds_.shape or self.X_thresholds_.size == 0:
            raise ValueError("isotonic state has mismatched or empty thresholds; the file is damaged, refit it")


@CALIBRATORS.register("histogram")
class HistogramBinning(BaseCalibrator):
    """Histogram binning (Zadrozny & Elkan 2001): the calibrated probability is the positive rate of the score's bin.

    Bins are built on the calibration scores; the outer bins extend to -inf and +inf, so any score can be mapped.
    A bin that received no calibration sample (possible with ``strategy="uniform"``) takes the value linearly
    interpolated, by bin index, between its nearest non-empty neighbours. Bins are closed on the left.

    Parameters
    ----------
    n_bins : int, default=10
        Number of bins (fewer if quantile edges coincide because of tied scores).
    strategy : {"quantile", "uniform"}, default="quantile"
        Equal-mass bins (quantiles of the calibration scores) or equal-width bins between their min and max.

    Attributes
    ----------
    edges_ : ndarray of shape (n_bins_ - 1,)
        Interior bin edges (increasing).
    bin_values_ : ndarray of shape (n_bins_,)
        Calibrated probability of each bin.
    bin_counts_ : ndarray of shape (n_bins_,)
        Number of calibration samples per bin.
    """

    kind = "histogram"

    def __init__(self, *, n_bins: int = HISTOGRAM_DEFAULT_BINS,
                 strategy: Literal["quantile", "uniform"] = "quantile") -> None:
        self.n_bins = n_bins
        self.strategy = strategy

    def fit(self, X: ArrayLike, y: ArrayLike) -> "HistogramBinning":
        """Fit bin edges and per-bin frequencies.

        Parameters
        ----------
        X : array-like of shape (n_samples,)
            Scores.
        y : array-like of shape (n_samples,)
            Labels in {0, 1}; both classes must occur.

        Returns
        -------
        self
        """
        n_bins = check_n_bins(self.n_bins)
        check_strategy(self.strategy)
        x, labels = check_fit_data(X, y, probabilities=False)
        if self.strategy == "quantile":
            edges = np.quantile(x, np.linspace(0.0, 1.0, n_bins + 1))[1:-1]
        else:
            edges = np.linspace(x.min(), x.max(), n_bins + 1)[1:-1]
        edges = np.unique(edges)
        if edges.size < n_bins - 1:
            logger.info("histogram binning: %d of %d bins remain after merging tied edges", edges.size + 1, n_bins)
        ids = np.searchsorted(edges, x, side="right")
        k = edges.size + 1
        counts = np.bincount(ids, minlength=k)
        sums = np.bincount(ids, weights=labels.astype(np.float64), minlength=k)
        filled = counts > 0
        values = np.zeros(k)
        values[filled] = sums[filled] / counts[filled]
        index = np.arange(k)
        values[~filled] = np.interp(index[~filled], index[filled], values[filled])
        self.edges_ = edges
        self.bin_values_ = values
        self.bin_counts_ = counts.astype(np.int64)
        return self

    def _proba(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        return self.bin_values_[np.searchsorted(self.edges_, x, side="right")]

    def _state(self) -> dict[str, Any]:
        return {"edges": self.edges_.tolist(), "bin_values": self.bin_values_.tolist(),
                "bin_counts": self.bin_counts_.tolist()}

    def _set_state(self, state: Mapping[str, Any]) -> None:
        self.edges_ = np.asarray(state["edges"], dtype=np.float64)
        self.bin_values_ = np.asarray(state["bin_values"], dtype=np.float64)
        self.bin_counts_ = np.asarray(state["bin_counts"], dtype=np.int64)
        if self.bin_values_.shape[0] != self.edges_.shape[0] + 1:
            raise ValueError("histogram state needs one more bin value than interior edges; the file is damaged, "
                             "refit it")


def make_calibrator(name: str, **kwargs: Any) -> BaseCalibrator:
    """Build an unfitted calibrator by registry name.

    Parameters
    ----------
    name : {"temperature", "platt", "isotonic", "histogram"}
        Registry name; an unknown name raises an error listing the known ones.
    **kwargs
        Constructor parameters of that calibrator.

    Returns
    -------
    BaseCalibrator

    Examples
    --------
    >>> make_calibrator("histogram", n_bins=5)
    HistogramBinning(n_bins=5)
    """
    cls = CALIBRATORS.get(name)
    allowed = cls._get_param_names()
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"calibrator {name!r} has no parameter(s) {unknown}; its parameters are {allowed}")
    return cls(**kwargs)


def load_calibrator(path: str | os.PathLike[str], *,
                    expected_metadata: Mapping[str, Any] | None = None) -> BaseCalibrator:
    """Load any calibrator saved with ``save(path)``, dispatching on its recorded kind."""
    return BaseCalibrator.load(path, expected_metadata=expected_metadata)
