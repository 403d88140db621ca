"""Hidden-state predictors as the controller uses them: a probe at one layer, its calibrator, and a threshold."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from thinkctl.models import model_hidden_size, model_num_layers

__all__ = ["HiddenStatePredictor", "Outlook", "model_hidden_size", "model_num_layers"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HiddenStatePredictor:
    """A probability read off the hidden state of decoder layer ``layer`` at the newest position.

    Parameters
    ----------
    probe : callable or HiddenStateProbe
        With a ``calibrator``: an object with ``decision_function(X)`` (logits of an ndarray ``(B, hidden)``).
        Without: a callable ``probe(h)`` on a torch tensor ``(B, hidden)`` returning probabilities ``(B,)``.
    layer : int
        Decoder layer (0-based; negative counts from the end), i.e. ``hidden_states[layer + 1]`` of a forward
        pass with ``output_hidden_states=True`` -- the convention of trace collection and ``HiddenStateTap``.
    calibrator : object with ``predict_proba(logits)``, optional
        Maps the probe's logits to calibrated probabilities.
    threshold : float or None
        Decision threshold (the confidence predictor's Learn-then-Test stop threshold); None: never decide.
    certified_at : tuple of int or None
        Thinking budgets at which ``threshold`` was certified (``risk_control.json`` ``check_points``); None: not
        recorded. Reading the confidence elsewhere is outside the guarantee, and the controller warns.
    """

    probe: Any
    layer: int
    calibrator: Any = None
    threshold: float | None = None
    certified_at: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold={self.threshold!r} must lie in [0, 1] or be None (never stop on it)")
        if self.calibrator is not None and not hasattr(self.probe, "decision_function"):
            raise ValueError("a calibrator maps logits, so the probe must have decision_function(X); pass "
                             "calibrator=None to use a probe that returns calibrated probabilities itself")

    def hidden_index(self, n_layers: int) -> int:
        """Index into ``output_hidden_states`` (whose entry 0 is the embeddings)."""
        if not -n_layers <= self.layer < n_layers:
            raise ValueError(f"layer={self.layer} is out of range for a model with {n_layers} layers; use "
                             f"0..{n_layers - 1} or negative indices")
        return self.layer % n_layers + 1

    def __call__(self, hidden: torch.Tensor) -> np.ndarray:
        """Probabilities in [0, 1], ndarray of shape (B,), for hidden states of shape (B, hidden)."""
        if self.calibrator is not None:
            logits = np.asarray(self.probe.decision_function(hidden.detach().float().cpu().numpy()), dtype=float)
            p = np.asarray(self.calibrator.predict_proba(logits), dtype=float)
        else:
            out = self.probe(hidden.detach().float())
            p = (out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)).astype(float)
        p = p.reshape(-1)
        if not np.all(np.isfinite(p)):
            raise ValueError("the predictor returned non-finite probabilities; check the probe and the tapped layer")
        return np.clip(p, 0.0, 1.0)


@dataclass(frozen=True)
class Outlook:
    """Calibrated P(the run's own final answer will be right), read mid-thinking, and the stop score that uses it,
    ``"1 - outlook"`` or ``"max(confidence, 1 - kappa * outlook)"`` with its ``kappa``
    (:func:`thinkctl.calibration.risk_control.stop_score`), as the bundle certified them."""

    predictor: HiddenStatePredictor
    score: str = "max(confidence, 1 - kappa * outlook)"
    kappa: float = 1.0

    def __post_init__(self) -> None:
        from thinkctl.calibration.risk_control import STOP_SCORE_CONFIDENCE, STOP_SCORES

        if self.score not in STOP_SCORES or self.score == STOP_SCORE_CONFIDENCE:
            others = [s for s in STOP_SCORES if s != STOP_SCORE_CONFIDENCE]
            raise ValueError(f"score={self.score!r} must be one of {others}"
                             " (a confidence-only rule has no outlook: pass outlook=None)")
        if not (isinstance(self.kappa, (int, float)) and self.kappa > 0 and np.isfinite(self.kappa)):
            raise ValueError(f"kappa={self.kappa!r} must be a finite positive number")

    def __call__(self, hidden: torch.Tensor) -> np.ndarray:
        return self.predictor(hidden)
