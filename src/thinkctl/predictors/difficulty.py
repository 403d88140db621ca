"""Query difficulty before generation: LightGBM on :class:`~thinkctl.predictors.QueryFeatures`.

:class:`DifficultyModel` has two targets (``target=``, see :data:`TARGETS`):

* ``"solve"``: ``y`` is whether one sample of the model solved the query (0/1) or the fraction of its samples that
  did (in [0, 1]). Both are fitted with LightGBM's ``cross_entropy`` objective, whose labels may be any probability,
  so ``predict_proba`` is the probability that **one** sample solves the query. Weight fractional rows by the number
  of samples behind them with ``sample_weight``.
* ``"level"``: ``y`` is a difficulty level (e.g. MATH level 1..5), fitted as a multiclass problem.
  ``predict_level_proba`` gives the distribution over levels, ``predict_level`` its mean (the expected level) and
  ``predict_proba`` the probability that the level is at least ``level_threshold`` ("hard").

Optionally, ``fit(..., y_tokens=...)`` also fits a second head on ``log(tokens)`` (the tokens a successful sample
used), read with ``predict_tokens``. :meth:`DifficultyModel.predict_difficulty` is a "higher is harder" score for
both targets.

Models persist without pickle: ``save(directory)`` writes LightGBM text models and a JSON file with the feature
definitions, parameters, thinkctl version and the target they were trained for.

Examples
--------
>>> from thinkctl.predictors import DifficultyModel
>>> prompts = [f"What is {a} * {b}?" for a in (2, 7, 31, 467, 9021) for b in (3, 58, 604)] * 4
>>> hard = [int(len(p) > 17) for p in prompts]
>>> dm = DifficultyModel(target="solve", n_estimators=20, min_child_samples=5).fit(prompts, [1 - h for h in hard])
>>> p_easy, p_hard = dm.predict_proba(["What is 2 * 3?", "What is 9021 * 604?"])
>>> bool(p_easy > 0.8 and p_hard < 0.5)
True
"""

from __future__ import annotations

import logging
import numbers
import os
import re
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.base import BaseEstimator, clone
from sklearn.utils.validation import check_is_fitted

from thinkctl.predictors._persistence import envelope, open_envelope, read_json, write_json
from thinkctl.predictors.features import QueryFeatures

__all__ = [
    "DifficultyModel",
    "TARGETS",
    "TOKEN_STATISTICS",
    "MODEL_FILE",
    "DEFAULT_LEVEL_THRESHOLD",
]

logger = logging.getLogger(__name__)

#: What a DifficultyModel can be trained to predict (see the module docstring).
TARGETS = ("solve", "level")
#: What ``predict_tokens`` returns: the mean (Duan's smearing estimate) or the median (``exp`` of the mean log).
TOKEN_STATISTICS = ("mean", "median")
#: Name of the JSON file inside a saved model directory.
MODEL_FILE = "difficulty_model.json"
#: ``predict_proba`` of a level model is P(level >= this); 4 splits MATH into hard (4-5) and not-hard (1-3).
DEFAULT_LEVEL_THRESHOLD = 4
#: Boosting rounds. With learning_rate 0.05 this is the same total step as LightGBM's defaults (100 x 0.1).
DEFAULT_N_ESTIMATORS = 200
#: Shrinkage per round (half LightGBM's 0.1 default: smoother fits on a few thousand problems).
DEFAULT_LEARNING_RATE = 0.05
#: Leaves per tree (LightGBM's default is 31; fewer leaves for data sets of a few thousand problems).
DEFAULT_NUM_LEAVES = 15
#: Minimum samples per leaf (LightGBM's default).
DEFAULT_MIN_CHILD_SAMPLES = 20
#: Row subsampling per round (bagging); 1.0 switches it off.
DEFAULT_SUBSAMPLE = 0.8
#: Feature subsampling per tree; 1.0 switches it off.
DEFAULT_COLSAMPLE_BYTREE = 0.8
#: L2 regularisation of leaf values.
DEFAULT_REG_LAMBDA = 1.0
#: Threads LightGBM may use (1: reproducible and polite on shared machines).
DEFAULT_N_JOBS = 1
#: ``predict`` of a "solve" model returns 1 where ``predict_proba`` is at least this.
DECISION_THRESHOLD = 0.5

_BOOSTER_FILE = "booster.txt"
_TOKENS_BOOSTER_FILE = "tokens_booster.txt"


def _lgb() -> Any:
    import lightgbm

    return lightgbm


def _lgb_feature_names(names: list[str]) -> list[str]:
    """LightGBM-safe, unique column names (it rejects JSON punctuation and rewrites spaces)."""
    return [f"f{i:03d}_" + re.sub(r"[^0-9A-Za-z_]", "_", n) for i, n in enumerate(names)]


def _check_positive_int(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive integer")


def _check_fraction(value: Any, name: str, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and (
        (0.0 <= float(value) <= 1.0) if allow_zero else (0.0 < float(value) <= 1.0))
    if not ok:
        raise ValueError(f"{name}={value!r} must be in {'[0, 1]' if allow_zero else '(0, 1]'}")


def _as_1d_float(y: ArrayLike, name: str, n: int) -> NDArray[np.float64]:
    try:
        arr = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric, one value per sample ({exc})") from exc
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.shape != (n,):
        raise ValueError(f"{name} has shape {arr.shape} but X has {n} samples; pass one value per sample")
    return arr


class DifficultyModel(BaseEstimator):
    """LightGBM difficulty model on query features: P(one sample solves it), or the difficulty level.

    Parameters
    ----------
    target : {"solve", "level"}, default="solve"
        What ``y`` is (see the module docstring): solve indicator / solve fraction in [0, 1], or an integer level.
    level_threshold : int, default=4
        For ``target="level"``: ``predict_proba`` is P(level >= level_threshold). Must lie above the smallest and at
        most the largest level seen in ``fit``.
    features : QueryFeatures, optional
        Feature extractor (cloned at fit). ``None``: ``QueryFeatures()`` with every feature group.
    n_estimators, learning_rate, num_leaves, min_child_samples, subsample, colsample_bytree, reg_lambda
        LightGBM boosting parameters (rounds, shrinkage, leaves per tree, minimum samples per leaf, bagging fraction,
        feature fraction per tree, L2 on leaf values).
    n_jobs : int, default=1
        LightGBM threads.
    random_state : int, default=0
        Seed of LightGBM's bagging and feature sampling; fits are deterministic (``deterministic=True``).

    Attributes
    ----------
    features_ : QueryFeatures
        The fitted feature extractor.
    feature_names_ : list of str
        Column names the boosters were trained on.
    booster_ : lightgbm.Booster
        The solve / level model.
    classes_ : ndarray of shape (n_levels,)
        Sorted levels seen in fit (``target="level"``); ``[0, 1]`` for ``target="solve"``.
    tokens_booster_ : lightgbm.Booster or None
        The log-token regression head, None when fit got no ``y_tokens``.
    tokens_smearing_ : float or None
        Duan's smearing factor ``mean(exp(residual))`` of the token head on its training rows (an optimistic,
        in-sample estimate; it turns the median into the mean of a log-normal-like token count).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> digits = rng.integers(1, 6, size=300)
    >>> prompts = [f"Compute {10 ** (d - 1) + 7} * {10 ** (d - 1) + 3}." for d in digits]
    >>> dm = DifficultyModel(target="level", n_estimators=30).fit(prompts, digits)
    >>> dm.predict_level(["Compute 17 * 13.", "Compute 10007 * 10003."]).round().tolist()
    [2.0, 5.0]
    """

    def __init__(self, *, target: Literal["solve", "level"] = "solve",
                 level_threshold: int = DEFAULT_LEVEL_THRESHOLD, features: QueryFeatures | None = None,
                 n_estimators: int = DEFAULT_N_ESTIMATORS, learning_rate: float = DEFAULT_LEARNING_RATE,
                 num_leaves: int = DEFAULT_NUM_LEAVES, min_child_samples: int = DEFAULT_MIN_CHILD_SAMPLES,
                 subsample: float = DEFAULT_SUBSAMPLE, colsample_bytree: float = DEFAULT_COLSAMPLE_BYTREE,
                 reg_lambda: float = DEFAULT_REG_LAMBDA, n_jobs: int = DEFAULT_N_JOBS, random_state: int = 0) -> None:
        self.target = target
        self.level_threshold = level_threshold
        self.features = features
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.n_jobs = n_jobs
        self.random_state = random_state

    # -- fitting ----------------------------------------------------------------------------------------------

    def _check_params(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"target={self.target!r} is not known; use one of {', '.join(map(repr, TARGETS))}")
        for name in ("n_estimators", "num_leaves", "min_child_samples", "n_jobs"):
            _check_positive_int(getattr(self, name), name)
        if self.num_leaves < 2:
            raise ValueError(f"num_leaves={self.num_leaves} must be at least 2")
        if not isinstance(self.learning_rate, numbers.Real) or not self.learning_rate > 0:
            raise ValueError(f"learning_rate={self.learning_rate!r} must be a positive number (e.g. 0.05)")
        _check_fraction(self.subsample, "subsample")
        _check_fraction(self.colsample_bytree, "colsample_bytree")
        if not isinstance(self.reg_lambda, numbers.Real) or self.reg_lambda < 0:
            raise ValueError(f"reg_lambda={self.reg_lambda!r} must be a non-negative number")
        if isinstance(self.random_state, bool) or not isinstance(self.random_state, numbers.Integral):
            raise ValueError(f"random_state={self.random_state!r} must be an integer seed")
        if self.features is not None and not isinstance(self.features, QueryFeatures):
            raise ValueError(f"features={self.features!r} must be a QueryFeatures instance or None")

    def _lgb_params(self, objective: str, **extra: Any) -> dict[str, Any]:
        params: dict[str, Any] = {
            "objective": objective,
            "learning_rate": float(self.learning_rate),
            "num_leaves": int(self.num_leaves),
            "min_data_in_leaf": int(self.min_child_samples),
            "feature_fraction": float(self.colsample_bytree),
            "lambda_l2": float(self.reg_lambda),
            "num_threads": int(self.n_jobs),
            "seed": int(self.random_state),
            "deterministic": True,
            "force_col_wise": True,
            "verbose": -1,
        }
        if self.subsample < 1.0:
            params.update(bagging_fraction=float(self.subsample), bagging_freq=1)
        params.update(extra)
        return params

    def _train(self, params: dict[str, Any], X: NDArray[np.float64], label: NDArray[Any],
               weight: NDArray[np.float64] | None) -> Any:
        lgb = _lgb()
        data = lgb.Dataset(X, label=label, weight=weight, feature_name=_lgb_feature_names(self.feature_names_),
                           params={"verbose": -1})
        return lgb.train(params, data, num_boost_round=int(self.n_estimators))

    def fit(self, X: Any, y: ArrayLike, *, y_tokens: ArrayLike | None = None,
            sample_weight: ArrayLike | None = None) -> "DifficultyModel":
        """Fit the features and the booster(s).

        Parameters
        ----------
        X : sequence of length n_samples
            Prompts, Problem-like objects or dicts (see :class:`QueryFeatures`).
        y : array-like of shape (n_samples,)
            ``target="solve"``: solve indicator in {0, 1} or solve fraction in [0, 1].
            ``target="level"``: integer levels, at least two distinct.
        y_tokens : array-like of shape (n_samples,), optional
            Tokens a successful sample used per query (positive); NaN where unknown (e.g. never solved), those rows
            are left out of the token head. When given, :meth:`predict_tokens` becomes available.
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weights (e.g. samples behind a solve fraction).

        Returns
        -------
        self
        """
        self._check_params()
        features = clone(self.features) if self.features is not None else QueryFeatures()
        self.features_ = features.fit(X)
        Xf = self.features_.transform(X)  # (n_samples, n_features)
        n = Xf.shape[0]
        self.feature_names_ = [str(s) for s in self.features_.get_feature_names_out()]
        yy = _as_1d_float(y, "y", n)
        if not np.all(np.isfinite(yy)):
            raise ValueError(f"y contains {int((~np.isfinite(yy)).sum())} NaN or infinite values; drop those samples")
        weight = None
        if sample_weight is not None:
            weight = _as_1d_float(sample_weight, "sample_weight", n)
            if not np.all(np.isfinite(weight)) or (weight < 0).any() or weight.sum() <= 0:
                raise ValueError("sample_weight must be finite, non-negative and not all zero")
        if self.target == "solve":
            if (yy < 0).any() or (yy > 1).any():
                raise ValueError(f"target='solve' needs y in [0, 1] (solved or fraction solved); got values in "
                                 f"[{yy.min():g}, {yy.max():g}]. For difficulty levels use target='level'")
            if np.ptp(yy) == 0:
                raise ValueError(f"y is {yy[0]:g} for every sample; a solve model needs both solved and unsolved "
                                 "queries")
            self.classes_ = np.array([0, 1])
            self.booster_ = self._train(self._lgb_params("cross_entropy"), Xf, yy, weight)
        else:
            if not np.all(yy == np.round(yy)):
                raise ValueError("target='level' needs integer levels in y (e.g. MATH levels 1..5); for solve "
                                 "fractions use target='solve'")
            classes, encoded = np.unique(yy.astype(np.int64), return_inverse=True)
            if classes.shape[0] < 2:
                raise ValueError(f"y holds the single level {classes.tolist()}; a level model needs at least two")
            k = self.level_threshold
            if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not classes[0] < k <= classes[-1]:
                raise ValueError(f"level_threshold={k!r} must be an integer in ({classes[0]}, {classes[-1]}] for "
                                 f"levels {classes.tolist()}, so that P(level >= level_threshold) is not trivial")
            self.classes_ = classes
            self.booster_ = self._train(self._lgb_params("multiclass", num_class=int(classes.shape[0])), Xf,
                                        encoded, weight)
        self.tokens_booster_: Any = None  # lightgbm.Booster once the token head is fitted
        self.tokens_smearing_: float | None = None
        if y_tokens is not None:
            self._fit_tokens(Xf, _as_1d_float(y_tokens, "y_tokens", n), weight)
        logger.info("fitted DifficultyModel(target=%r) on %d queries x %d features", self.target, n, Xf.shape[1])
        return self

    def _fit_tokens(self, Xf: NDArray[np.float64], tokens: NDArray[np.float64],
                    weight: NDArray[np.float64] | None) -> None:
        known = ~np.isnan(tokens)
        if (tokens[known] <= 0).any() or not np.all(np.isfinite(tokens[known])):
            raise ValueError("y_tokens must be positive token counts (NaN where unknown)")
        if known.sum() < 2:
            raise ValueError(f"y_tokens has {int(known.sum())} known values; the token head needs at least 2")
        log_t = np.log(tokens[known])
        w = None if weight is None else weight[known]
        booster = self._train(self._lgb_params("regression"), Xf[known], log_t, w)
        self.tokens_booster_ = booster
        resid = log_t - booster.predict(Xf[known])
        self.tokens_smearing_ = float(np.mean(np.exp(resid)))

    # -- prediction -------------------------------------------------------------------------------------------

    def _transform(self, X: Any) -> NDArray[np.float64]:
        check_is_fitted(self, "booster_")
        return self.features_.transform(X)

    def _require_level(self, method: str) -> None:
        if self.target != "level":
            raise ValueError(f"{method} needs a model fitted with target='level'; this one has target={self.target!r}"
                             " (use predict_proba for the solve probability)")

    def predict_level_proba(self, X: Any) -> NDArray[np.float64]:
        """Distribution over levels, ndarray of shape (n_samples, n_levels), columns in the order of ``classes_``."""
        Xf = self._transform(X)
        self._require_level("predict_level_proba")
        return np.asarray(self.booster_.predict(Xf), dtype=np.float64).reshape(Xf.shape[0], -1)

    def predict_level(self, X: Any) -> NDArray[np.float64]:
        """Expected level, ndarray of shape (n_samples,): ``sum_k P(level = k) * k``."""
        return self.predict_level_proba(X) @ self.classes_.astype(np.float64)

    def predict_proba(self, X: Any) -> NDArray[np.float64]:
        """Positive-class probability, ndarray of shape (n_samples,).

        ``target="solve"``: probability that one sample solves the query. ``target="level"``: P(level >=
        ``level_threshold``), the probability that the query is hard.
        """
        Xf = self._transform(X)
        if self.target == "solve":
            return np.asarray(self.booster_.predict(Xf), dtype=np.float64)
        proba = np.asarray(self.booster_.predict(Xf), dtype=np.float64).reshape(Xf.shape[0], -1)
        return proba[:, self.classes_ >= self.level_threshold].sum(axis=1)

    def predict(self, X: Any) -> NDArray[np.int64]:
        """Solved or not (``predict_proba >= 0.5``) for "solve"; the most probable level for "level"."""
        check_is_fitted(self, "booster_")
        if self.target == "level":
            return self.classes_[self.predict_level_proba(X).argmax(axis=1)]
        return (self.predict_proba(X) >= DECISION_THRESHOLD).astype(np.int64)

    def predict_difficulty(self, X: Any) -> NDArray[np.float64]:
        """A "higher is harder" score, shape (n_samples,): ``1 - P(solve)`` or the expected level."""
        return self.predict_level(X) if self.target == "level" else 1.0 - self.predict_proba(X)

    def predict_tokens(self, X: Any, *, statistic: Literal["mean", "median"] = "mean") -> NDArray[np.float64]:
        """Tokens a successful sample is expected to need, ndarray of shape (n_samples,).

        Parameters
        ----------
        X : sequence of length n_samples
        statistic : {"mean", "median"}, default="mean"
            ``"median"``: ``exp`` of the predicted mean log token count; ``"mean"``: that times Duan's smearing
            factor ``tokens_smearing_``.
        """
        Xf = self._transform(X)
        if self.tokens_booster_ is None:
            raise ValueError("this DifficultyModel has no token head; pass y_tokens=... to fit to train one")
        if statistic not in TOKEN_STATISTICS:
            known = ", ".join(map(repr, TOKEN_STATISTICS))
            raise ValueError(f"statistic={statistic!r} is not known; use one of {known}")
        median = np.exp(np.asarray(self.tokens_booster_.predict(Xf), dtype=np.float64))
        return median * self.tokens_smearing_ if statistic == "mean" else median

    # -- persistence ------------------------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike[str], *, metadata: Mapping[str, Any] | None = None) -> Path:
        """Write the model to ``directory`` (created): LightGBM text model(s) plus ``difficulty_model.json``.

        Parameters
        ----------
        directory : path
        metadata : mapping, optional
            JSON-serialisable facts about what the model was trained for, e.g. ``{"model_name": "SmolLM2-135M",
            "dataset": "math"}``; the solve probability is specific to the model whose samples made ``y``.
            The target and level threshold are always recorded under ``"trained_for"``.

        Returns
        -------
        pathlib.Path of the JSON file.
        """
        check_is_fitted(self, "booster_")
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / _BOOSTER_FILE).write_text(self.booster_.model_to_string(), encoding="utf-8")
        if self.tokens_booster_ is not None:
            (d / _TOKENS_BOOSTER_FILE).write_text(self.tokens_booster_.model_to_string(), encoding="utf-8")
        params = {k: v for k, v in self.get_params(deep=False).items() if k != "features"}
        state = {
            "features": self.features_.to_dict(),
            "feature_names": list(self.feature_names_),
            "classes": [int(c) for c in self.classes_],
            "booster_file": _BOOSTER_FILE,
            "tokens_booster_file": _TOKENS_BOOSTER_FILE if self.tokens_booster_ is not None else None,
            "tokens_smearing": self.tokens_smearing_,
        }
        meta = dict(metadata or {})
        meta["trained_for"] = {"target": self.target,
                               "level_threshold": int(self.level_threshold) if self.target == "level" else None,
                               "predict_proba": ("P(one sample solves the query)" if self.target == "solve" else
                                                 f"P(level >= {int(self.level_threshold)})")}
        return write_json(d / MODEL_FILE, envelope(type(self).__name__, params, state, meta))

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, expected_target: str | None = None,
             expected_metadata: Mapping[str, Any] | None = None) -> "DifficultyModel":
        """Load a model written by :meth:`save`.

        Parameters
        ----------
        directory : path
        expected_target : {"solve", "level"}, optional
            Raise unless the model was trained for this target.
        expected_metadata : mapping, optional
            Raise unless every key has this value in the saved metadata (e.g. ``{"model_name": "SmolLM2-135M"}``).

        Raises
        ------
        ValueError
            When the file is not a DifficultyModel, comes from an incompatible thinkctl, disagrees with the expected
            target or metadata, or its feature names do not match the LightGBM models or this thinkctl's features.
        """
        d = Path(directory)
        source = str(d / MODEL_FILE)
        doc = open_envelope(read_json(d / MODEL_FILE), cls.__name__, source)
        params, state, meta = dict(doc["params"]), dict(doc["state"]), dict(doc["metadata"])
        target = params.get("target")
        if expected_target is not None and target != expected_target:
            raise ValueError(f"{source} was trained for target={target!r}, expected {expected_target!r}")
        wrong = {k: (meta.get(k), v) for k, v in (expected_metadata or {}).items() if meta.get(k) != v}
        if wrong:
            detail = "; ".join(f"{k}: saved {got!r}, expected {want!r}" for k, (got, want) in wrong.items())
            raise ValueError(f"{source} was trained for a different setup ({detail}); retrain it for this one")
        features = QueryFeatures.from_dict(state["features"])
        names = [str(n) for n in features.get_feature_names_out()]
        if names != list(state["feature_names"]):
            raise ValueError(f"{source}: its feature names disagree with its feature definitions; the file is damaged")
        lgb = _lgb()
        try:
            model = cls(**params, features=clone(features))
        except TypeError as exc:
            raise ValueError(
                f"{source} has parameters this thinkctl does not know ({exc}); refit and save again") from exc
        model.features_ = features
        model.feature_names_ = names
        model.classes_ = np.asarray(state["classes"], dtype=np.int64)
        model.booster_ = lgb.Booster(model_str=(d / state["booster_file"]).read_text(encoding="utf-8"))
        model.tokens_booster_ = None
        model.tokens_smearing_ = state.get("tokens_smearing")
        if state.get("tokens_booster_file"):
            model.tokens_booster_ = lgb.Booster(
                model_str=(d / state["tokens_booster_file"]).read_text(encoding="utf-8"))
        expected_lgb = _lgb_feature_names(names)
        for label, booster in (("booster", model.booster_), ("tokens booster", model.tokens_booster_)):
            if booster is not None and list(booster.feature_name()) != expected_lgb:
                got = list(booster.feature_name())
                diff = sorted(set(got) ^ set(expected_lgb))[:3]
                raise ValueError(f"{source}: the {label} was trained on {len(got)} features that differ from the "
                                 f"{len(expected_lgb)} the JSON describes (e.g. {diff}); the files do not belong "
                                 "together, save the model again")
        return model
