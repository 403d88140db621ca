"""Risk-controlled thresholds by Learn then Test (Angelopoulos, Bates, Candès, Jordan & Lei 2021).

Setting
-------
A decision (for thinkctl: *stop thinking now*) is taken at threshold ``λ`` and costs each example a loss in
[0, 1]. The risk of ``λ`` is the expected loss ``R(λ) = E[loss(λ)]``. Given ``n`` i.i.d. calibration examples,
Learn then Test returns a set of thresholds such that, with probability at least ``1 - delta`` over the draw of the
calibration set, **every** returned threshold has ``R(λ) <= epsilon``:

1. for each candidate ``λ_j`` compute the empirical risk ``R̂_j`` (mean loss over the ``n`` calibration examples)
   and a p-value for the null hypothesis ``H_j: R(λ_j) > epsilon``;
2. test the hypotheses by *fixed-sequence testing*: go through the thresholds from the most to the least
   conservative, declaring each valid while its p-value is ``<= delta``, and stop at the first that is not. This
   controls the family-wise error rate at ``delta`` without a multiplicity correction, whatever the shape of the
   risk curve (a non-monotone risk only costs power). The grid of thresholds must be fixed before looking at the
   calibration data.

``chosen`` is the last (least conservative) valid threshold, or ``None`` with a ``reason`` when none is valid.

p-values
--------
* ``method="binomial"`` (losses must be 0 or 1): the exact binomial tail ``P(Binom(n, epsilon) <= n R̂)``.
* ``method="hoeffding-bentkus"`` (any loss in [0, 1]): ``min(exp(-n h(min(R̂, epsilon), epsilon)),
  e * P(Binom(n, epsilon) <= ceil(n R̂)))`` with ``h(a, b) = a log(a/b) + (1-a) log((1-a)/(1-b))``
  (LTT, Proposition 3 / Bates et al. 2021, "Distribution-free, risk-controlling prediction sets").

With zero observed losses both p-values equal ``(1 - epsilon)^n``, so no threshold can be certified unless
``n >= log(delta) / log(1 - epsilon)`` (45 for ``epsilon = 0.05, delta = 0.1``; 59 for ``epsilon = delta = 0.05``;
see :func:`min_calibration_size`).

How losses are given
--------------------
``losses`` may be

* an array of shape ``(n_samples, n_thresholds)``: ``losses[i, j]`` is example ``i``'s loss when the rule uses
  ``thresholds[j]`` (the general form: the loss can depend on ``λ`` in any way; ``scores`` is then not used);
* an array of shape ``(n_samples,)`` together with ``scores`` of shape ``(n_samples,)``: the rule is "take the
  decision when ``scores[i] >= λ``", and ``losses[i]`` is what taking it costs example ``i`` (not taking it costs
  nothing), i.e. ``loss_i(λ) = losses[i] * (scores[i] >= λ)``;
* a callable ``losses(scores, threshold) -> array of shape (n_samples,)``, evaluated once per threshold.

First use: early stopping
-------------------------
Stop thinking early only when the probability that stopping turns a right final answer into a wrong one is at most
``epsilon``, with confidence ``1 - delta``. With checkpoints ``k = 1..K`` during generation, confidence ``c_ik``
and answer correctness ``a_ik`` at each, and correctness ``f_i`` of the full run,
``loss_i(λ) = 1`` if the first checkpoint with ``c_ik >= λ`` exists, its answer is wrong (``a_ik = 0``) and the
full run is right (``f_i = 1``), else 0. :func:`early_stopping_losses` builds this ``(n_samples, n_thresholds)``
matrix; larger ``λ`` stops later, so it is the more conservative end.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> conf = rng.uniform(size=2000)                        # confidence when the decision would be taken
>>> wrong = rng.uniform(size=2000) < 0.5 * (1 - conf)    # stopping is harmful more often at low confidence
>>> res = learn_then_test(conf, wrong.astype(float), np.linspace(0, 1, 21), epsilon=0.1, delta=0.1)
>>> res.chosen is not None and bool(res.risks[res.thresholds == res.chosen][0] <= 0.1)
True
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, Union

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from thinkctl.calibration._persistence import envelope, open_envelope, read_json, write_json
from thinkctl.calibration._validation import as_1d, check_unit_interval

__all__ = [
    "LTTResult",
    "learn_then_test",
    "RiskControlledThreshold",
    "early_stopping_losses",
    "stop_score",
    "STOP_SCORE_OUTLOOK",
    "STOP_SCORE_CONFIDENCE",
    "STOP_SCORE_OUTLOOK_ONLY",
    "STOP_SCORES",
    "min_calibration_size",
    "LTT_METHODS",
    "DEFAULT_THRESHOLDS",
]

logger = logging.getLogger(__name__)

#: p-value methods of :func:`learn_then_test`.
LTT_METHODS = ("binomial", "hoeffding-bentkus")
#: Candidate thresholds of :class:`RiskControlledThreshold` when none are given: 0, 0.01, ..., 1, suited to
#: calibrated probabilities. They do not depend on the calibration data, as LTT requires.
DEFAULT_THRESHOLDS = np.linspace(0.0, 1.0, 101)
#: Losses within this distance of 0 or 1 count as binary for ``method="binomial"`` (float round-off).
BINARY_LOSS_ATOL = 1e-12

LossSpec = Union[ArrayLike, Callable[[Any, float], ArrayLike]]
Method = Literal["binomial", "hoeffding-bentkus"]


def min_calibration_size(epsilon: float, delta: float) -> int:
    """Smallest calibration set on which Learn then Test can certify any threshold at all.

    With zero observed losses the p-value is ``(1 - epsilon)^n`` for both methods, which must be ``<= delta``.

    Parameters
    ----------
    epsilon : float
        Target risk in (0, 1).
    delta : float
        Allowed failure probability in (0, 1).

    Returns
    -------
    int
        ``ceil(log(delta) / log(1 - epsilon))``.

    Examples
    --------
    >>> min_calibration_size(0.05, 0.1)
    45
    """
    epsilon = check_unit_interval(epsilon, "epsilon")
    delta = check_unit_interval(delta, "delta")
    n = math.ceil(math.log(delta) / math.log1p(-epsilon))
    # guard the float ceil: make sure (1 - eps)^n <= delta
    while (1.0 - epsilon) ** n > delta:
        n += 1
    return n


def _h1(a: NDArray[np.float64], b: float) -> NDArray[np.float64]:
    """Bernoulli KL divergence ``a log(a/b) + (1-a) log((1-a)/(1-b))`` for ``a`` in [0, b], ``b`` in (0, 1)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        first = np.where(a > 0, a * np.log(a / b), 0.0)
    return first + (1.0 - a) * np.log((1.0 - a) / (1.0 - b))


def _p_values(total_loss: NDArray[np.float64], n: int, epsilon: float, method: str) -> NDArray[np.float64]:
    """p-values of ``H: R > epsilon`` from the total loss per threshold, shape (n_thresholds,)."""
    if method == "binomial":
        return stats.binom.cdf(np.rint(total_loss), n, epsilon)
    risk = total_loss / n
    hoeffding = np.exp(-n * _h1(np.minimum(risk, epsilon), epsilon))
    bentkus = math.e * stats.binom.cdf(np.ceil(total_loss - BINARY_LOSS_ATOL), n, epsilon)
    return np.minimum(np.minimum(hoeffding, bentkus), 1.0)


@dataclass(frozen=True)
class LTTResult:
    """Outcome of :func:`learn_then_test`.

    Attributes
    ----------
    thresholds : ndarray of shape (n_thresholds,)
        Candidates in testing order, most conservative first.
    risks : ndarray of shape (n_thresholds,)
        Empirical risk (mean calibration loss) of each threshold.
    p_values : ndarray of shape (n_thresholds,)
        p-value of ``R(λ) > epsilon`` for each threshold.
    valid_thresholds : ndarray of shape (n_valid,)
        Thresholds certified by fixed-sequence testing (a prefix of ``thresholds``).
    chosen : float or None
        The least conservative valid threshold; ``None`` when no threshold is valid.
    reason : str or None
        Why ``chosen`` is ``None``; ``None`` otherwise.
    epsilon, delta : float
        Target risk and failure probability.
    n : int
        Number of calibration examples.
    method : str
        p-value method.
    higher_is_conservative : bool
        Whether larger thresholds were treated as more conservative.
    """

    thresholds: NDArray[np.float64]
    risks: NDArray[np.float64]
    p_values: NDArray[np.float64]
    valid_thresholds: NDArray[np.float64]
    chosen: float | None
    reason: str | None
    epsilon: float
    delta: float
    n: int
    method: str
    higher_is_conservative: bool = True
    min_n: int = field(default=0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of all fields."""
        return {
            "thresholds": self.thresholds.tolist(), "risks": self.risks.tolist(), "p_values": self.p_values.tolist(),
            "valid_thresholds": self.valid_thresholds.tolist(), "chosen": self.chosen, "reason": self.reason,
            "epsilon": self.epsilon, "delta": self.delta, "n": self.n, "method": self.method,
            "higher_is_conservative": self.higher_is_conservative, "min_n": self.min_n,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LTTResult":
        """Inverse of :meth:`to_dict`."""
        return cls(
            thresholds=np.asarray(d["thresholds"], dtype=np.float64), risks=np.asarray(d["risks"], dtype=np.float64),
            p_values=np.asarray(d["p_values"], dtype=np.float64),
            valid_thresholds=np.asarray(d["valid_thresholds"], dtype=np.float64),
            chosen=None if d["chosen"] is None else float(d["chosen"]), reason=d["reason"],
            epsilon=float(d["epsilon"]), delta=float(d["delta"]), n=int(d["n"]), method=str(d["method"]),
            higher_is_conservative=bool(d["higher_is_conservative"]), min_n=int(d.get("min_n", 0)),
        )


def _loss_matrix(scores: Any, losses: LossSpec, thresholds: NDArray[np.float64]) -> NDArray[np.float64]:
    """Losses as an (n_samples, n_thresholds) matrix in the caller's threshold order."""
    if callable(losses):
        if scores is None:
            raise ValueError("losses is a callable losses(scores, threshold), so scores must be given")
        columns = [np.asarray(losses(scores, float(t)), dtype=np.float64) for t in thresholds]
        shapes = {c.shape for c in columns}
        if len(shapes) != 1 or len(next(iter(shapes))) != 1:
            raise ValueError(f"losses(scores, threshold) must return one array of shape (n_samples,) per threshold, "
                             f"got shapes {sorted(shapes)}")
        return np.stack(columns, axis=1)
    arr = np.asarray(losses, dtype=np.float64)
    if arr.ndim == 2:
        if arr.shape[1] != thresholds.shape[0]:
            raise ValueError(f"losses has shape {arr.shape} but there are {thresholds.shape[0]} thresholds; "
                             "pass one column per threshold, in the order of `thresholds`")
        if scores is not None and np.shape(scores)[0] != arr.shape[0]:
            raise ValueError(f"scores has {np.shape(scores)[0]} samples but losses has {arr.shape[0]}; "
                             "with a 2-D loss matrix scores can also be None")
        return arr
    if arr.ndim == 1:
        if scores is None:
            raise ValueError("1-D losses mean 'loss if the decision is taken', which needs scores of shape "
                             "(n_samples,) to decide (scores >= threshold); pass scores, or a 2-D loss matrix")
        s = as_1d(scores, "scores").astype(np.float64)
        if s.shape[0] != arr.shape[0]:
            raise ValueError(f"scores has {s.shape[0]} samples but losses has {arr.shape[0]}; "
                             "they must be aligned one entry per calibration example")
        if np.isnan(s).any():
            raise ValueError("scores contains NaN; drop those calibration examples first")
        return arr[:, None] * (s[:, None] >= thresholds[None, :])
    raise ValueError(f"losses must have shape (n_samples,) or (n_samples, n_thresholds), got {arr.shape}")


def learn_then_test(
    scores: Any,
    losses: LossSpec,
    thresholds: ArrayLike,
    epsilon: float,
    delta: float,
    method: Method = "binomial",
    *,
    higher_is_conservative: bool = True,
) -> LTTResult:
    """Thresholds whose risk is at most ``epsilon`` with probability ``1 - delta`` (Learn then Test, fixed sequence).

    See the module docstring for the procedure, the p-values and the loss conventions.

    Parameters
    ----------
    scores : array-like of shape (n_samples,) or (n_samples, ...), or None
        Calibration scores. Needed for 1-D ``losses`` (decision "score >= λ") and passed to a callable
        ``losses``; ignored (may be ``None``) for a 2-D loss matrix.
    losses : array-like of shape (n_samples,) or (n_samples, n_thresholds), or callable
        Losses in [0, 1] (see the module docstring).
    thresholds : array-like of shape (n_thresholds,)
        Distinct finite candidate thresholds fixed before seeing the calibration data, in any order; they are
        tested from the most to the least conservative end.
    epsilon : float
        Target risk in (0, 1).
    delta : float
        Allowed probability in (0, 1) that a returned threshold has risk above ``epsilon``.
    method : {"binomial", "hoeffding-bentkus"}, default="binomial"
        Exact binomial tail (binary losses only) or Hoeffding-Bentkus (bounded losses).
    higher_is_conservative : bool, default=True
        Whether a larger threshold takes the decision less often (true for "decide when score >= λ").

    Returns
    -------
    LTTResult

    Raises
    ------
    ValueError
        On losses outside [0, 1] or non-binary losses with ``method="binomial"``, misaligned shapes, NaN, an
        unknown method, or levels outside (0, 1).
    """
    epsilon = check_unit_interval(epsilon, "epsilon")
    delta = check_unit_interval(delta, "delta")
    if method not in LTT_METHODS:
        raise ValueError(f"method={method!r} is not known; use one of {', '.join(map(repr, LTT_METHODS))}")
    lam = as_1d(thresholds, "thresholds").astype(np.float64)
    if not np.all(np.isfinite(lam)):
        raise ValueError("thresholds must be finite; to include 'never decide', use a value above every score")
    if np.unique(lam).size != lam.size:
        raise ValueError("thresholds contains duplicates; pass distinct candidate values")

    loss = _loss_matrix(scores, losses, lam)  # (n, T) in the caller's order
    if loss.shape[0] == 0:
        raise ValueError("the calibration set is empty; pass at least one calibration example")
    if not np.all(np.isfinite(loss)):
        raise ValueError("losses contain NaN or infinite values; every calibration example needs a loss in [0, 1]")
    if loss.min() < 0.0 or loss.max() > 1.0:
        raise ValueError(f"losses must lie in [0, 1] (got min={loss.min():.6g}, max={loss.max():.6g}); "
                         "rescale a bounded loss by its maximum first")
    if method == "binomial":
        binary = (np.abs(loss) <= BINARY_LOSS_ATOL) | (np.abs(loss - 1.0) <= BINARY_LOSS_ATOL)
        if not binary.all():
            raise ValueError("method='binomial' needs losses that are 0 or 1; for losses in [0, 1] use "
                             "method='hoeffding-bentkus'")

    order = np.argsort(-lam if higher_is_conservative else lam, kind="stable")
    lam = lam[order]
    loss = loss[:, order]
    n = loss.shape[0]
    total = loss.sum(axis=0)
    risks = total / n
    p = _p_values(total, n, epsilon, method)

    failed = np.flatnonzero(p > delta)
    n_valid = int(failed[0]) if failed.size else lam.size
    valid = lam[:n_valid]
    min_n = min_calibration_size(epsilon, delta)
    reason: str | None = None
    chosen: float | None = float(valid[-1]) if n_valid else None
    if chosen is None:
        best_p = (1.0 - epsilon) ** n
        if best_p > delta:
            reason = (f"calibration set of n={n} is too small: even zero observed losses give "
                      f"p={best_p:.3g} > delta={delta:g}; need n >= {min_n} for epsilon={epsilon:g}")
        else:
            reason = (f"the most conservative threshold {lam[0]:g} already fails: empirical risk {risks[0]:.3g} "
                      f"gives p={p[0]:.3g} > delta={delta:g}; add a more conservative threshold, collect more "
                      f"calibration data or raise epsilon")
        logger.info("learn_then_test: no valid threshold (%s)", reason)
    else:
        logger.debug("learn_then_test: %d of %d thresholds valid, chosen %g", n_valid, lam.size, chosen)
    return LTTResult(thresholds=lam, risks=risks, p_values=p, valid_thresholds=valid, chosen=chosen, reason=reason,
                     epsilon=epsilon, delta=delta, n=n, method=method,
                     higher_is_conservative=bool(higher_is_conservative), min_n=min_n)


#: ``risk_control.json`` ``score`` values (``thinkctl calibrate``): what the certified rule compares with its threshold.
STOP_SCORE_OUTLOOK = "max(confidence, 1 - kappa * outlook)"
STOP_SCORE_OUTLOOK_ONLY = "1 - outlook"
STOP_SCORE_CONFIDENCE = "confidence"
STOP_SCORES = (STOP_SCORE_CONFIDENCE, STOP_SCORE_OUTLOOK, STOP_SCORE_OUTLOOK_ONLY)


def stop_score(confidence: ArrayLike, outlook: ArrayLike | None, score: str = STOP_SCORE_OUTLOOK,
               kappa: float = 1.0) -> NDArray[np.float64]:
    """The score a serial stop rule compares with its threshold λ ("stop once the score >= λ").

    ``confidence`` is the calibrated P(the answer forced now is right), ``outlook`` the calibrated P(the run's own
    final answer will be right). Stopping loses nothing when the answer is already there (high confidence) or when
    the final answer would be wrong anyway (low outlook: thinking that cannot help). The scores:

    * ``"confidence"``: the confidence alone (stop when it is high);
    * ``"1 - outlook"``: the outlook alone (stop thinking that cannot help);
    * ``"max(confidence, 1 - kappa * outlook)"``: both; the rule stops when ``confidence >= λ`` or
      ``outlook <= (1 - λ) / kappa``, one threshold moving both sides at the exchange rate ``kappa``.

    The score and ``kappa`` are chosen on the train split, before the calibration problems are seen, and
    Learn-then-Test certifies λ on those for the rule actually run.
    """
    if score not in STOP_SCORES:
        raise ValueError(f"score={score!r} is not one of {STOP_SCORES}")
    conf = np.asarray(confidence, dtype=float)
    if score == STOP_SCORE_CONFIDENCE:
        return conf
    if outlook is None:
        raise ValueError(f"score={score!r} needs the outlook (P(the final answer will be right))")
    out = np.asarray(outlook, dtype=float)
    if score == STOP_SCORE_OUTLOOK_ONLY:
        return 1.0 - out
    return np.maximum(conf, 1.0 - kappa * out)


def early_stopping_losses(
    confidences: ArrayLike,
    checkpoint_correct: ArrayLike,
    final_correct: ArrayLike,
    thresholds: ArrayLike,
) -> NDArray[np.float64]:
    """Loss matrix of the rule "stop at the first checkpoint whose confidence is >= λ".

    ``loss[i, j] = 1`` if example ``i`` reaches a checkpoint with confidence ``>= thresholds[j]``, the answer at
    the first such checkpoint is wrong, and the full (unstopped) run is right; otherwise 0. Never reaching the
    threshold means running to the end, which costs nothing.

    Parameters
    ----------
    confidences : array-like of shape (n_samples, n_checkpoints)
        Confidence at each checkpoint, in generation order; NaN marks checkpoints a shorter generation never
        reached.
    checkpoint_correct : array-like of shape (n_samples, n_checkpoints)
        Whether the answer extracted at each checkpoint is right.
    final_correct : array-like of shape (n_samples,)
        Whether the full run's answer is right.
    thresholds : array-like of shape (n_thresholds,)
        Candidate thresholds.

    Returns
    -------
    ndarray of shape (n_samples, n_thresholds)
        0/1 losses, to pass to :func:`learn_then_test` with the same ``thresholds``.
    """
    conf = np.asarray(confidences, dtype=np.float64)
    ok = np.asarray(checkpoint_correct).astype(bool)
    final = as_1d(final_correct, "final_correct").astype(bool)
    lam = as_1d(thresholds, "thresholds").astype(np.float64)
    if conf.ndim != 2 or conf.shape[1] == 0:
        raise ValueError(f"confidences must have shape (n_samples, n_checkpoints), got {conf.shape}")
    if ok.shape != conf.shape:
        raise ValueError(f"checkpoint_correct has shape {ok.shape} but confidences has {conf.shape}; "
                         "give one correctness flag per checkpoint")
    if final.shape[0] != conf.shape[0]:
        raise ValueError(f"final_correct has {final.shape[0]} samples but confidences has {conf.shape[0]}")
    reached = conf[:, :, None] >= lam[None, None, :]  # (n, K, T); NaN never reaches
    stops = reached.any(axis=1)  # (n, T)
    first = reached.argmax(axis=1)  # (n, T) index of the first checkpoint at or above λ
    right_at_stop = np.take_along_axis(ok, first, axis=1)  # (n, T)
    return (stops & ~right_at_stop & final[:, None]).astype(np.float64)


class RiskControlledThreshold:
    """A decision threshold calibrated by Learn then Test, in the style of MAPIE's risk controllers.

    Parameters
    ----------
    epsilon : float, default=0.1
        Target risk.
    delta : float, default=0.1
        Allowed probability that the calibrated threshold's risk exceeds ``epsilon``.
    method : {"binomial", "hoeffding-bentkus"}, default="binomial"
        p-value method (see :func:`learn_then_test`).
    thresholds : array-like of shape (n_thresholds,), optional
        Candidates; default :data:`DEFAULT_THRESHOLDS` (0, 0.01, ..., 1).
    higher_is_conservative : bool, default=True
        Whether a larger threshold takes the decision less often.

    Attributes
    ----------
    result_ : LTTResult
        The full Learn-then-Test outcome.
    threshold_ : float or None
        The chosen threshold; ``None`` when the risk cannot be controlled (see ``result_.reason``).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> conf = rng.uniform(size=1000)
    >>> harmful = (rng.uniform(size=1000) < 0.4 * (1 - conf)).astype(float)
    >>> rct = RiskControlledThreshold(epsilon=0.1, delta=0.1).calibrate(conf, harmful)
    >>> rct.threshold_ is not None
    True
    >>> rct.decide(np.array([0.0, 1.0])).tolist()
    [False, True]
    """

    kind = "risk_controlled_threshold"

    def __init__(self, epsilon: float = 0.1, delta: float = 0.1, method: Method = "binomial",
                 thresholds: ArrayLike | None = None, *, higher_is_conservative: bool = True) -> None:
        self.epsilon = epsilon
        self.delta = delta
        self.method = method
        self.thresholds = thresholds
        self.higher_is_conservative = higher_is_conservative

    def __repr__(self) -> str:
        return (f"RiskControlledThreshold(epsilon={self.epsilon!r}, delta={self.delta!r}, method={self.method!r}, "
                f"higher_is_conservative={self.higher_is_conservative!r})")

    def calibrate(self, scores_calib: Any, losses_calib: LossSpec) -> "RiskControlledThreshold":
        """Run Learn then Test on calibration data.

        Parameters
        ----------
        scores_calib : array-like of shape (n_samples,), or None
            Calibration scores (see :func:`learn_then_test`).
        losses_calib : array-like of shape (n_samples,) or (n_samples, n_thresholds), or callable
            Calibration losses in [0, 1].

        Returns
        -------
        self
        """
        lam = DEFAULT_THRESHOLDS if self.thresholds is None else self.thresholds
        self.result_ = learn_then_test(scores_calib, losses_calib, lam, self.epsilon, self.delta, self.method,
                                       higher_is_conservative=self.higher_is_conservative)
        self.threshold_ = self.result_.chosen
        if self.threshold_ is None:
            logger.warning("RiskControlledThreshold: risk epsilon=%g cannot be guaranteed (%s); decide() will "
                           "never take the decision", self.epsilon, self.result_.reason)
        return self

    def _check_calibrated(self) -> None:
        if not hasattr(self, "result_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("this RiskControlledThreshold is not calibrated yet; call calibrate(scores, "
                                 "losses) first")

    def decide(self, scores: ArrayLike) -> NDArray[np.bool_]:
        """Whether to take the decision for each score.

        ``scores >= threshold_`` (``<=`` when ``higher_is_conservative=False``); all ``False`` when no threshold
        controls the risk, i.e. never take the risky decision.

        Parameters
        ----------
        scores : array-like of shape (n_samples,)

        Returns
        -------
        ndarray of shape (n_samples,), dtype bool
        """
        self._check_calibrated()
        s = as_1d(scores, "scores").astype(np.float64)
        if self.threshold_ is None:
            return np.zeros(s.shape, dtype=bool)
        return s >= self.threshold_ if self.higher_is_conservative else s <= self.threshold_

    def to_dict(self, *, metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """JSON-ready dict (parameters, the full LTT result, version stamps, optional metadata)."""
        self._check_calibrated()
        params = {"epsilon": float(self.epsilon), "delta": float(self.delta), "method": self.method,
                  "thresholds": None if self.thresholds is None else np.asarray(self.thresholds, float).tolist(),
                  "higher_is_conservative": bool(self.higher_is_conservative)}
        return envelope(self.kind, params, {"result": self.result_.to_dict()}, metadata)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, expected_metadata: Mapping[str, Any] | None = None,
                  source: str = "dict") -> "RiskControlledThreshold":
        """Inverse of :meth:`to_dict`; checks format, thinkctl version, kind and metadata."""
        doc = open_envelope(d, (cls.kind,), expected_metadata, source)
        obj = cls(**doc["params"])
        obj.result_ = LTTResult.from_dict(doc["state"]["result"])
        obj.threshold_ = obj.result_.chosen
        return obj

    def save(self, path: str | os.PathLike[str], *, metadata: Mapping[str, Any] | None = None) -> Path:
        """Write :meth:`to_dict` as JSON."""
        return write_json(path, self.to_dict(metadata=metadata))

    @classmethod
    def load(cls, path: str | os.PathLike[str], *,
             expected_metadata: Mapping[str, Any] | None = None) -> "RiskControlledThreshold":
        """Read a file written by :meth:`save`."""
        return cls.from_dict(read_json(path), expected_metadata=expected_metadata, source=repr(str(path)))
