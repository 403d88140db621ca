"""Hidden-state predictors as the controller uses them: a probe at one layer, its calibrator, and a threshold."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thinkctl.models import RETRAIN_HINT, check_stamp, model_hidden_size, model_num_layers

__all__ = ["HiddenStatePredictor", "Outlook", "load_bundle_predictors", "load_bundle_outlook", "model_hidden_size",
           "model_num_layers"]

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


def _check_probe_for_model(probe: Any, hidden: int, what: str, source: Path) -> None:
    n = int(getattr(probe, "n_features_in_", -1))
    if n != hidden:
        raise ValueError(f"{what} in {source} reads hidden states of size {n}, but this model has hidden_size="
                         f"{hidden}: the bundle belongs to another model. {RETRAIN_HINT}")


def load_bundle_predictors(bundle_dir: str | os.PathLike[str], model: Any
                           ) -> tuple[HiddenStatePredictor, HiddenStatePredictor | None, dict[str, Any]]:
    """The confidence and difficulty predictors of a bundle folder, checked against ``model``.

    Returns ``(confidence, difficulty or None, bundle metadata)``. The confidence predictor is the probe at the
    bundle's ``confidence_layer`` with ``calibration/confidence.json`` and the Learn-then-Test stop threshold
    (``bundle.json`` ``calibration.stop_threshold``, else ``calibration/risk_control.json``). The difficulty
    predictor is ``difficulty_probe/`` on the prompt's last hidden state (``calibration/difficulty.json`` when
    present; otherwise the probe's own probability, which is only as calibrated as its training made it).
    ``difficulty_lgbm/`` is not used: it needs the query features of a task, which live prompts do not carry.
    """
    from thinkctl.calibration.calibrators import load_calibrator
    from thinkctl.predictors.probe import HiddenStateProbe

    bdir = Path(bundle_dir)
    meta_path = bdir / "bundle.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{bdir} is not a bundle (no bundle.json); create one with `thinkctl train` and "
                                "`thinkctl calibrate`")
    meta = json.loads(meta_path.read_text())
    if "confidence_layer" not in meta:
        raise ValueError(f"{meta_path} has no confidence_layer; it was not written by `thinkctl train`")
    hidden = model_hidden_size(model)
    check_stamp(meta.get("model") or {}, model, f"bundle {bdir}")
    layer = int(meta["confidence_layer"])
    probe = HiddenStateProbe.load(bdir / "confidence_probe")
    _check_probe_for_model(probe, hidden, "the confidence probe", bdir / "confidence_probe")
    probe.check_compatible(hidden_size=hidden, layer=layer)
    cal_path = bdir / "calibration" / "confidence.json"
    calibrator = None
    if cal_path.is_file():
        calibrator = load_calibrator(cal_path)
    else:
        logger.warning("bundle %s has no calibration/confidence.json; confidences are the raw probe's (run "
                       "`thinkctl calibrate`)", bdir)
    threshold = (meta.get("calibration") or {}).get("stop_threshold")
    risk_path = bdir / "calibration" / "risk_control.json"
    risk = json.loads(risk_path.read_text()) if risk_path.is_file() else {}
    if threshold is None:
        threshold = risk.get("threshold")
    certified_at = tuple(int(b) for b in risk["check_points"]) if risk.get("check_points") else None
    if threshold is None:
        logger.warning("bundle %s has no risk-controlled stop threshold (none met the risk, or not calibrated); "
                       "the controller will not stop early on confidence", bdir)
    confidence = HiddenStatePredictor(probe, layer, calibrator, None if threshold is None else float(threshold),
                                      certified_at)
    difficulty = None
    if (bdir / "difficulty_probe").is_dir():
        dprobe = HiddenStateProbe.load(bdir / "difficulty_probe")
        _check_probe_for_model(dprobe, hidden, "the difficulty probe", bdir / "difficulty_probe")
        dcal_path = bdir / "calibration" / "difficulty.json"
        dcal = load_calibrator(dcal_path) if dcal_path.is_file() else None
        dlayer = int(dprobe.layer) if dprobe.layer is not None else layer
        difficulty = HiddenStatePredictor(dprobe, dlayer, dcal)
    return confidence, difficulty, meta



def load_bundle_outlook(bundle_dir: str | os.PathLike[str], model: Any) -> Outlook | None:
    """The bundle's :class:`Outlook` (calibrated P(the run's final answer will be right), read mid-thinking, with the
    certified stop score's ``kappa``) when its stop threshold was certified on the score that uses it, else None.

    Raises ValueError when ``calibration/risk_control.json`` says the threshold was certified with the outlook but
    the outlook probe or its calibrator is missing, or reads another layer than the confidence probe: the threshold
    would then apply to a score it was not certified for.
    """
    from thinkctl.calibration.bundle import OUTLOOK_PROBE
    from thinkctl.calibration.calibrators import load_calibrator
    from thinkctl.calibration.risk_control import STOP_SCORE_CONFIDENCE, STOP_SCORE_OUTLOOK
    from thinkctl.predictors.probe import HiddenStateProbe

    bdir = Path(bundle_dir)
    risk_path = bdir / "calibration" / "risk_control.json"
    risk = json.loads(risk_path.read_text()) if risk_path.is_file() else {}
    score = risk.get("score", STOP_SCORE_CONFIDENCE)
    if score == STOP_SCORE_CONFIDENCE:
        return None
    probe_dir, cal_path = bdir / OUTLOOK_PROBE, bdir / "calibration" / "outlook.json"
    if not probe_dir.is_dir() or not cal_path.is_file():
        raise ValueError(f"{risk_path} certifies a stop threshold on {score!r}, but {probe_dir} or "
                         f"{cal_path} is missing; rerun `thinkctl train` and `thinkctl calibrate` on the bundle")
    meta = json.loads((bdir / "bundle.json").read_text())
    probe = HiddenStateProbe.load(probe_dir)
    _check_probe_for_model(probe, model_hidden_size(model), "the outlook probe", probe_dir)
    layer = int(meta["confidence_layer"])
    if probe.layer is not None and int(probe.layer) != layer:
        raise ValueError(f"{probe_dir} reads layer {probe.layer}, the confidence probe layer {layer}; the stop score "
                         "reads both from one state. Retrain the bundle with `thinkctl train`")
    kappa = risk.get("kappa")
    if score == STOP_SCORE_OUTLOOK and not isinstance(kappa, (int, float)):
        raise ValueError(f"{risk_path} certifies {STOP_SCORE_OUTLOOK!r} but records no kappa; rerun `thinkctl "
                         "calibrate` on the bundle")
    return Outlook(HiddenStatePredictor(probe, layer, load_calibrator(cal_path)), score,
                   float(kappa) if isinstance(kappa, (int, float)) else 1.0)
