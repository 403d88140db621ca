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

__all__ = ["HiddenStatePredictor", "load_bundle_predictors", "model_hidden_size", "model_num_layers"]

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

