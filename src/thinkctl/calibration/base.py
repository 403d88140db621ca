"""The contract every thinkctl calibrator follows: the :class:`BaseCalibrator` estimator and the registry of kinds.

:class:`BaseCalibrator` holds what all calibrators share (scikit-learn tags, ``predict_proba`` / ``predict`` with
the fitted check, JSON persistence stamped with the thinkctl version and the kind); the calibrators themselves are
in :mod:`thinkctl.calibration.calibrators`, which registers them in :data:`CALIBRATORS`.
"""

from __future__ import annotations

import os
from abc import ABCMeta, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Mapping, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from thinkctl.calibration._persistence import envelope, open_envelope, read_json, write_json
from thinkctl.calibration._validation import check_binary_labels, check_probabilities, check_same_length, check_scores
from thinkctl.registry import Registry

__all__ = ["BaseCalibrator", "CALIBRATORS", "DECISION_THRESHOLD", "check_fit_data"]

#: ``predict`` returns 1 where the calibrated probability is at least this.
DECISION_THRESHOLD = 0.5

C = TypeVar("C", bound="BaseCalibrator")

#: Registry of calibrator classes by name: "temperature", "platt", "isotonic", "histogram".
CALIBRATORS: Registry[type["BaseCalibrator"]] = Registry("calibrator")

def check_fit_data(
    X: ArrayLike, y: ArrayLike, *, probabilities: bool
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    x = check_probabilities(X, "X") if probabilities else check_scores(X, "X")
    labels = check_binary_labels(y, "y")
    check_same_length(x, labels, "X", "y")
    counts = np.bincount(labels, minlength=2)
    if counts.min() == 0:
        raise ValueError(
            f"y contains only class {int(np.argmax(counts))} ({labels.shape[0]} samples); a calibrator needs both "
            "positive and negative examples, so use a larger or stratified calibration split"
        )
    return x, labels


class BaseCalibrator(BaseEstimator, metaclass=ABCMeta):
    """Common contract and JSON persistence of thinkctl calibrators (see the module docstring)."""

    #: Registry name, also written as ``"kind"`` in saved files.
    kind: ClassVar[str] = ""

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.one_d_array = True
        tags.input_tags.two_d_array = False
        return tags

    @abstractmethod
    def fit(self: C, X: ArrayLike, y: ArrayLike) -> C:
        """Fit on scores ``X`` of shape (n_samples,) and binary labels ``y`` of shape (n_samples,)."""

    @abstractmethod
    def _proba(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """Calibrated probabilities for validated scores."""

    @abstractmethod
    def _state(self) -> dict[str, Any]:
        """Fitted attributes as JSON-ready values."""

    @abstractmethod
    def _set_state(self, state: Mapping[str, Any]) -> None:
        """Restore fitted attributes from :meth:`_state` output."""

    def _check_X(self, X: ArrayLike) -> NDArray[np.float64]:
        return check_scores(X, "X")

    def predict_proba(self, X: ArrayLike) -> NDArray[np.float64]:
        """Calibrated probability of the positive class.

        Parameters
        ----------
        X : array-like of shape (n_samples,)
            Scores of the same type as given to ``fit``.

        Returns
        -------
        ndarray of shape (n_samples,)
            Probabilities in [0, 1] of ``y == 1`` (one column, unlike scikit-learn's ``(n_samples, 2)``).
        """
        check_is_fitted(self)
        return self._proba(self._check_X(X))

    def predict(self, X: ArrayLike) -> NDArray[np.int64]:
        """Predicted labels, ``predict_proba(X) >= 0.5``.

        Parameters
        ----------
        X : array-like of shape (n_samples,)
            Scores.

        Returns
        -------
        ndarray of shape (n_samples,) with values in {0, 1}
        """
        return (self.predict_proba(X) >= DECISION_THRESHOLD).astype(np.int64)

    # ---------------------------------------------------------------- persistence
    def to_dict(self, *, metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """JSON-ready description of the fitted calibrator.

        Parameters
        ----------
        metadata : mapping, optional
            What the calibrator was fitted for (predictor, model name, hidden size, layer, ...); checked by
            ``from_dict(..., expected_metadata=...)``.

        Returns
        -------
        dict
            With keys ``format``, ``format_version``, ``thinkctl_version``, ``kind``, ``params``, ``state``,
            ``metadata``.
        """
        check_is_fitted(self)
        return envelope(self.kind, self.get_params(deep=False), self._state(), metadata)

    @classmethod
    def from_dict(cls: type[C], d: Mapping[str, Any], *,
                  expected_metadata: Mapping[str, Any] | None = None, source: str = "calibrator dict") -> C:
        """Rebuild a fitted calibrator from :meth:`to_dict` output.

        Called on :class:`BaseCalibrator` it dispatches on the saved kind; called on a subclass it accepts only
        that kind.

        Parameters
        ----------
        d : mapping
            Output of :meth:`to_dict` (e.g. parsed JSON).
        expected_metadata : mapping, optional
            Keys that must match the saved metadata.
        source : str
            Where ``d`` came from, for error messages.

        Returns
        -------
        BaseCalibrator

        Raises
        ------
        ValueError
            On a wrong format, incompatible thinkctl version, other kind, or metadata mismatch.
        """
        kinds = tuple(CALIBRATORS.names()) if cls is BaseCalibrator else (cls.kind,)
        doc = open_envelope(d, kinds, expected_metadata, source)
        target = CALIBRATORS.get(doc["kind"])
        unknown = sorted(set(doc["params"]) - set(target._get_param_names()))
        if unknown:
            raise ValueError(f"{source} has parameters {unknown} that {target.__name__} does not take; the file was "
                             "written by another thinkctl or edited by hand, refit and save it again")
        obj = target(**doc["params"])
        try:
            obj._set_state(doc["state"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"{source} has an incomplete {doc['kind']!r} state (missing {exc}); refit and save it "
                             "again") from exc
        return obj  # type: ignore[return-value]

    def save(self, path: str | os.PathLike[str], *, metadata: Mapping[str, Any] | None = None) -> Path:
        """Write :meth:`to_dict` as JSON to ``path`` (parent directories are created); returns the path."""
        return write_json(path, self.to_dict(metadata=metadata))

    @classmethod
    def load(cls: type[C], path: str | os.PathLike[str], *,
             expected_metadata: Mapping[str, Any] | None = None) -> C:
        """Read a calibrator written by :meth:`save` (see :meth:`from_dict` for the checks)."""
        return cls.from_dict(read_json(path), expected_metadata=expected_metadata, source=f"{str(path)!r}")
