"""Budget doubling: when the model ends its thinking itself but its calibrated confidence there is low, write "Wait"
in place of the end of thinking and let it think again, up to as many tokens as it has spent (s1's budget forcing,
Muennighoff et al. 2025, arXiv:2501.19393, applied per query where the answer is in doubt).

"Wait" is not free and not always good: on the embedded model's gym it fixes some arith answers and breaks modeq
ones (a search that re-checks talks itself out of a right answer). So whether the serial route doubles at all, and
below which confidence, is decided per bundle from its calibration problems
(:func:`thinkctl.eval.serial_decisions.fit_bundle_doubling`): each
problem whose greedy thinking ended by itself is continued after "Wait" exactly as the live route would continue it,
and doubling is kept only when the one-sided lower confidence bound of its accuracy gain over not doubling is above
zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Doubling", "fit_doubling", "WAIT_TEXT"]

#: The continuation written in place of the end of thinking (s1's "Wait").
WAIT_TEXT = "Wait"
#: Candidate thresholds: these quantiles of the end-of-thinking confidence of the problems that could double.
DOUBLING_QUANTILES = tuple(round(q, 2) for q in np.arange(0.1, 1.0001, 0.1))


@dataclass(frozen=True)
class Doubling:
    """Double the thinking of a serial answer whose model ended its thinking itself with calibrated confidence below
    ``below``. ``meta`` records the evidence it was fitted on."""

    below: float
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.below, (int, float)) and 0.0 <= float(self.below) <= 1.0 + 1e-9):
            raise ValueError(f"doubling threshold below={self.below!r} must be a probability in [0, 1]")

    def doubles(self, confidence: float) -> bool:
        return not (confidence >= self.below)  # a NaN confidence (never read) doubles

    def to_dict(self) -> dict[str, Any]:
        return {"below": float(self.below), "meta": self.meta}

    @classmethod
    def from_dict(cls, doc: Any, where: str) -> "Doubling":
        below = doc.get("below") if isinstance(doc, dict) else None
        if not isinstance(below, (int, float)) or not math.isfinite(float(below)):
            raise ValueError(f"{where}: 'doubling' must be an object with a finite 'below'; fit it again with "
                             "`thinkctl calibrate`")
        return cls(float(below), dict(doc.get("meta") or {}))


def fit_doubling(confidence: np.ndarray, eligible: np.ndarray, serial_correct: np.ndarray,
                 doubled_correct: np.ndarray, extra_tokens: np.ndarray, *, confidence_level: float = 0.95,
                 n_boot: int = 2000, seed: int = 0) -> Doubling:
    """The threshold chosen and tested by :func:`~thinkctl.controller.escalation.select_and_test` over quantiles of
    the eligible problems' confidence: the best gain on half the problems (the cheapest within a quarter point of
    the best), kept (``meta["kept"]``) only when the one-sided lower bound of its gain on the other half is above
    zero. Arrays have one entry per calibration problem; a problem that is not ``eligible`` (its thinking did not
    end by itself) never doubles. ``meta["curve"]`` gives every candidate's effect on all the problems."""
    from thinkctl.controller.escalation import candidate_thresholds, detectable_gain, select_and_test

    n = len(confidence)
    pool = confidence[eligible]
    if pool.size == 0:
        return Doubling(0.0, {"kept": False, "n_problems": n, "eligible": 0,
                              "reason": "no calibration problem ended its thinking by itself"})
    thresholds = candidate_thresholds(pool, DOUBLING_QUANTILES)
    ons = [eligible & (confidence < t) for t in thresholds]
    gains = [np.where(on, doubled_correct - serial_correct, 0.0) for on in ons]
    costs = [np.where(on, extra_tokens, 0.0) for on in ons]
    curve = [{"below": t, "doubled_share": float(on.mean()), "fixed": int((g > 0).sum()), "broken": int((g < 0).sum()),
              "gain": float(g.mean()), "extra_tokens_mean": float(c.mean())}
             for t, on, g, c in zip(thresholds, ons, gains, costs)]
    pick, test = select_and_test(gains, costs, token_budget=math.inf, confidence=confidence_level, n_boot=n_boot,
                                 seed=seed)
    j = pick if pick is not None else 0
    meta = {"n_problems": n, "eligible": int(eligible.sum()), **curve[j],
            "serial_accuracy": float(serial_correct.mean()),
            "expected_accuracy": float(serial_correct.mean() + gains[j].mean()), **test,
            # the noise scale of the gain is that of doubling every eligible problem (the chosen threshold may
            # double too few to show any)
            "detectable_gain": detectable_gain(float(gains[-1].std(ddof=1)) if n > 1 else math.inf,
                                               test["n_test"], confidence_level),
            "kept": bool(test.get("kept")), "curve": curve,
            "note": "chosen on half the problems, its gain tested on the other half"}
    return Doubling(float(thresholds[j]), meta)
