"""Input checks shared by the calibration metrics, calibrators, risk control and plots.

Every check raises a :class:`ValueError` that names the argument, says what was wrong with it and what to do.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "BIN_STRATEGIES",
    "as_1d",
    "check_binary_labels",
    "check_probabilities",
    "check_scores",
    "check_same_length",
    "check_binary_inputs",
    "check_n_bins",
    "check_strategy",
    "check_unit_interval",
]

#: How many offending label values an error message lists.
MAX_SHOWN_VALUES = 10
#: Ways to place the edges of calibration bins: equal width on [0, 1], or equal mass (quantiles of ``y_prob``).
BIN_STRATEGIES = ("uniform", "quantile")


def as_1d(x: ArrayLike, name: str) -> NDArray[Any]:
    """Convert ``x`` to a non-empty 1-D numeric array; a column of shape (n_samples, 1) is flattened."""
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:  # ragged nested sequences and the like
        raise ValueError(
            f"{name} could not be converted to an array ({exc}); pass a 1-D array-like of numbers"
        ) from exc
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be 1-D of shape (n_samples,), got shape {arr.shape}; "
            "for two-column probabilities pass the positive-class column (proba[:, 1])"
        )
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty; pass at least one sample")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be numeric (bool, int or float), got dtype {arr.dtype}")
    return arr


def _check_no_nan(arr: NDArray[Any], name: str) -> None:
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{name} contains {int(bad.sum())} NaN or infinite value(s) (first at index {first}: {arr[first]}); "
                "drop or impute those samples first"
            )


def check_binary_labels(y: ArrayLike, name: str = "y_true") -> NDArray[np.int64]:
    """Validate binary labels.

    Parameters
    ----------
    y : array-like of shape (n_samples,)
        Labels in {0, 1} (bool, int or float 0.0 / 1.0).
    name : str
        Argument name used in error messages.

    Returns
    -------
    ndarray of shape (n_samples,), dtype int64
    """
    arr = as_1d(y, name)
    _check_no_nan(arr, name)
    if arr.dtype.kind == "b":
        return arr.astype(np.int64)
    if not ((arr == 0) | (arr == 1)).all():
        values = np.unique(arr)
        shown = values[:MAX_SHOWN_VALUES]
        raise ValueError(
            f"{name} must contain only the binary labels 0 and 1, got values {shown.tolist()}"
            f"{' ...' if values.size > shown.size else ''}; "
            "map your labels first, e.g. (y == positive_label).astype(int)"
        )
    return arr.astype(np.int64)


def check_probabilities(p: ArrayLike, name: str = "y_prob") -> NDArray[np.float64]:
    """Validate probabilities of the positive class.

    Parameters
    ----------
    p : array-like of shape (n_samples,)
        Values in [0, 1].
    name : str
        Argument name used in error messages.

    Returns
    -------
    ndarray of shape (n_samples,), dtype float64
    """
    arr = as_1d(p, name).astype(np.float64)
    _check_no_nan(arr, name)
    outside = (arr < 0.0) | (arr > 1.0)
    if outside.any():
        raise ValueError(
            f"{name} must hold probabilities in [0, 1], but {int(outside.sum())} value(s) lie outside "
            f"(min={arr.min():.6g}, max={arr.max():.6g}); if these are logits or raw scores, "
            "map them with scipy.special.expit or fit a calibrator (e.g. PlattScaler) first"
        )
    return arr


def check_scores(x: ArrayLike, name: str = "X") -> NDArray[np.float64]:
    """Validate finite real-valued scores of shape (n_samples,) (or (n_samples, 1)); returns float64."""
    arr = as_1d(x, name).astype(np.float64)
    _check_no_nan(arr, name)
    return arr


def check_same_length(a: NDArray[Any], b: NDArray[Any], name_a: str, name_b: str) -> None:
    """Raise if two per-sample arrays are not aligned."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{name_a} has {a.shape[0]} samples but {name_b} has {b.shape[0]}; "
            "they must be aligned one entry per sample"
        )


def check_binary_inputs(y_true: ArrayLike, y_prob: ArrayLike) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Validate ``(y_true, y_prob)`` for a binary calibration metric; returns (int64 labels, float64 probabilities)."""
    y = check_binary_labels(y_true, "y_true")
    p = check_probabilities(y_prob, "y_prob")
    check_same_length(y, p, "y_true", "y_prob")
    return y, p


def check_n_bins(n_bins: int) -> int:
    """Validate a number of bins (an integer >= 1)."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins={n_bins!r} is invalid; use an integer >= 1 (15 is the usual choice for ECE)")
    return int(n_bins)


def check_strategy(strategy: str) -> str:
    """Validate a binning strategy name."""
    if strategy not in BIN_STRATEGIES:
        raise ValueError(f"strategy={strategy!r} is not known; use one of {', '.join(map(repr, BIN_STRATEGIES))}")
    return strategy


def check_unit_interval(value: float, name: str, *, closed_right: bool = False) -> float:
    """Validate a level such as ``epsilon``, ``delta`` or ``alpha`` in (0, 1) (or (0, 1] with ``closed_right``)."""
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}={value!r} is not a number; pass a float in (0, 1)") from exc
    upper_ok = v <= 1.0 if closed_right else v < 1.0
    if not (v > 0.0 and upper_ok):
        interval = "(0, 1]" if closed_right else "(0, 1)"
        raise ValueError(f"{name}={value!r} is out of range; pass a float in {interval}")
    return v
