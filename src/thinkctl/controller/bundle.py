"""A bundle as the controller uses it: its probes, calibrators, certified stop rule and routing table, loaded,
checked against the model and against each other, and saved again.

The file layout and the manifest belong to :mod:`thinkctl.bundle`; this module turns the parts into the
controller's predictors (:class:`~thinkctl.controller.predictors.HiddenStatePredictor`,
:class:`~thinkctl.controller.predictors.Outlook`) and :class:`~thinkctl.controller.routing.RoutingTable`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thinkctl.bundle import (CONFIDENCE_CALIBRATOR, CONFIDENCE_PROBE, DIFFICULTY_CALIBRATOR, DIFFICULTY_PROBE,
                             OUTLOOK_CALIBRATOR, OUTLOOK_PROBE, RISK_CONTROL, ROUTING, BundleLayout)
from thinkctl.calibration.bundle import RISK_CONTROL_KIND
from thinkctl.calibration.calibrators import load_calibrator
from thinkctl.calibration.risk_control import STOP_SCORE_CONFIDENCE, STOP_SCORE_OUTLOOK
from thinkctl.controller.predictors import HiddenStatePredictor, Outlook
from thinkctl.controller.routing import RoutingTable
from thinkctl.models import RETRAIN_HINT, check_stamp, model_hidden_size

__all__ = ["Bundle", "load_bundle_predictors", "load_bundle_outlook"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Width:
    """The hidden size a bundle's probes must read: the model's (:meth:`Bundle.load`), or the one ``bundle.json``
    records (:meth:`Bundle.read`, no model at hand; None: unchecked)."""

    size: int | None
    model: bool


def _check_probe_for_model(probe: Any, hidden: _Width, what: str, source: Path) -> None:
    n = int(getattr(probe, "n_features_in_", -1))
    if hidden.size is None or n == int(hidden.size):
        return
    if hidden.model:
        raise ValueError(f"{what} in {source} reads hidden states of size {n}, but this model has hidden_size="
                         f"{hidden.size}: the bundle belongs to another model. {RETRAIN_HINT}")
    raise ValueError(f"{what} in {source} reads hidden states of size {n}, but bundle.json records hidden_size="
                     f"{hidden.size}; the bundle is damaged: retrain it with `thinkctl train` and `thinkctl calibrate`")


@dataclass(frozen=True)
class Bundle:
    """The parts of a bundle folder that the controller runs on.

    Attributes
    ----------
    layout : BundleLayout
        Where the parts live.
    manifest : dict
        The fields of ``bundle.json`` (model, trace store, split, confidence layer, calibration).
    confidence : HiddenStatePredictor
        The confidence probe at the bundle's ``confidence_layer`` with its calibrator and the certified stop
        threshold.
    difficulty : HiddenStatePredictor or None
        The difficulty probe on the prompt's last state, with its calibrator when one was fitted.
    outlook : Outlook or None
        The outlook probe and the stop score that uses it, when the threshold was certified on that score.
    routing : RoutingTable or None
        Difficulty -> route, when ``thinkctl calibrate`` fitted one.
    process : HiddenStatePredictor or None
        The calibrated outlook probe on its own (whatever the stop score), for the ``process-probe`` step scorer
        (:class:`thinkctl.process.probe.ProcessProbeScorer`); None when the bundle has no calibrated outlook probe.
    risk_control : dict
        The certified stop rule (``calibration/risk_control.json``); empty when the bundle was not calibrated.

    Examples
    --------
    >>> bundle = Bundle.load("bundle/", model)  # doctest: +SKIP
    >>> bundle.confidence.threshold, bundle.routing  # doctest: +SKIP
    """

    layout: BundleLayout
    manifest: dict[str, Any]
    confidence: HiddenStatePredictor
    difficulty: HiddenStatePredictor | None = None
    outlook: Outlook | None = None
    routing: RoutingTable | None = None
    risk_control: dict[str, Any] = field(default_factory=dict)
    process: HiddenStatePredictor | None = None

    @classmethod
    def load(cls, bundle_dir: str | os.PathLike[str], model: Any) -> "Bundle":
        """Load the bundle in ``bundle_dir`` for ``model``.

        The confidence predictor is the probe at the bundle's ``confidence_layer`` with ``calibration/confidence.json``
        and the Learn-then-Test stop threshold (the manifest's ``calibration.stop_threshold``, else
        ``calibration/risk_control.json``). The difficulty predictor is ``difficulty_probe/`` on the prompt's last
        hidden state (with ``calibration/difficulty.json`` when present). ``difficulty_lgbm/`` is not used: it needs
        the query features of a task, which live prompts do not carry.

        Raises
        ------
        FileNotFoundError
            If the folder is not a bundle.
        ValueError
            If the bundle was made for another model, or a calibration part was made for another probe than the
            one in the folder (the message says what to run).
        """
        layout, meta = _manifest(bundle_dir)
        check_stamp(meta.get("model") or {}, model, f"bundle {layout.root}")
        bundle = cls._parts(layout, meta, _Width(model_hidden_size(model), model=True))
        if bundle.routing is None and bundle.difficulty is not None:
            logger.warning("bundle %s has a difficulty probe but no %s: the controller routes on the placeholder "
                           "thresholds of ControllerConfig (easy_above, hard_below), which can spend many times the "
                           "tokens of a fitted table; run `thinkctl calibrate %s` to fit it", layout.root, ROUTING,
                           layout.root)
        return bundle

    @classmethod
    def read(cls, bundle_dir: str | os.PathLike[str]) -> "Bundle":
        """Load the bundle in ``bundle_dir`` without its model (e.g. to replay its stop rule on recorded hidden
        states): the same parts and checks as :meth:`load`, except that the probes are checked against the hidden
        size ``bundle.json`` records, and the model stamp (``manifest["model"]``) is left for the caller to compare.
        """
        layout, meta = _manifest(bundle_dir)
        return cls._parts(layout, meta, _Width((meta.get("model") or {}).get("hidden_size"), model=False))

    @classmethod
    def _parts(cls, layout: BundleLayout, meta: dict[str, Any], hidden: _Width) -> "Bundle":
        risk = layout.read_document(RISK_CONTROL, RISK_CONTROL_KIND) if layout.has(RISK_CONTROL) else {}
        confidence, difficulty = _predictors(layout, meta, risk, hidden)
        outlook = _outlook(layout, meta, risk, hidden)
        routing = RoutingTable.load(layout.path(ROUTING)) if layout.has(ROUTING) else None
        return cls(layout, meta, confidence, difficulty, outlook, routing, risk, _process(layout, meta, hidden))

    def save(self, bundle_dir: str | os.PathLike[str]) -> Path:
        """Write this bundle's parts into ``bundle_dir`` (probes, calibrators, stop rule, routing table, manifest).

        The trace store reference is rewritten so that it resolves from the new folder. Parts saved here are
        recorded as calibrated for the probes saved with them.

        Raises
        ------
        ValueError
            If a predictor's probe or calibrator cannot be saved (it has no ``save`` method).
        """
        out = BundleLayout(bundle_dir)
        out.root.mkdir(parents=True, exist_ok=True)
        meta = {k: v for k, v in self.manifest.items() if not k.startswith("_")}
        if "trace_store" in meta:
            meta.update(out.store_reference(self.layout.trace_store_path(self.manifest)))
        stamp = {"model": (meta.get("model") or {}).get("name"), "layer": meta.get("confidence_layer")}
        parts: list[tuple[str, str | None, HiddenStatePredictor]] = [
            (CONFIDENCE_PROBE, CONFIDENCE_CALIBRATOR, self.confidence)]
        if self.outlook is not None:
            parts.append((OUTLOOK_PROBE, OUTLOOK_CALIBRATOR, self.outlook.predictor))
        if self.difficulty is not None:
            parts.append((DIFFICULTY_PROBE, DIFFICULTY_CALIBRATOR, self.difficulty))
        for probe_part, cal_part, pred in parts:
            for obj, what in ((pred.probe, "probe"), (pred.calibrator, "calibrator")):
                if obj is not None and not hasattr(obj, "save"):
                    raise ValueError(f"the {what} of {probe_part} ({type(obj).__name__}) cannot be saved; give a "
                                     "HiddenStateProbe and a thinkctl calibrator")
            pred.probe.save(out.path(probe_part))
            if pred.calibrator is not None and cal_part is not None:
                pred.calibrator.save(out.path(cal_part), metadata=stamp)
        if self.risk_control:
            out.write_document(RISK_CONTROL, RISK_CONTROL_KIND, self.risk_control, metadata=stamp)
        if self.routing is not None:
            self.routing.save(out.path(ROUTING))
        fps = out.probe_fingerprints()
        meta["parts"] = fps
        meta.setdefault("calibration", {})
        meta["calibration"] = {**meta["calibration"],
                               "made_for": {k: v for k, v in fps.items() if k != DIFFICULTY_PROBE}}
        if self.routing is not None and DIFFICULTY_PROBE in fps:
            meta["routing_made_for"] = {DIFFICULTY_PROBE: fps[DIFFICULTY_PROBE]}
        return out.write_manifest(meta)


def _manifest(bundle_dir: str | os.PathLike[str]) -> tuple[BundleLayout, dict[str, Any]]:
    """The layout and manifest of a trained bundle whose calibration is not stale."""
    layout = BundleLayout(bundle_dir)
    meta = layout.read_manifest()
    if "confidence_layer" not in meta:
        raise ValueError(f"{layout.manifest_path} has no confidence_layer; it was not written by `thinkctl train`")
    stale = layout.stale_parts(meta)
    if stale:
        raise ValueError("; ".join(stale))
    return layout, meta


def _predictors(layout: BundleLayout, meta: dict[str, Any], risk: dict[str, Any], hidden: _Width
                ) -> tuple[HiddenStatePredictor, HiddenStatePredictor | None]:
    from thinkctl.predictors.probe import HiddenStateProbe

    layer = int(meta["confidence_layer"])
    probe = HiddenStateProbe.load(layout.path(CONFIDENCE_PROBE))
    _check_probe_for_model(probe, hidden, "the confidence probe", layout.path(CONFIDENCE_PROBE))
    probe.check_compatible(hidden_size=hidden.size, layer=layer)
    calibrator = None
    if layout.has(CONFIDENCE_CALIBRATOR):
        calibrator = load_calibrator(layout.path(CONFIDENCE_CALIBRATOR))
    else:
        logger.warning("bundle %s has no %s; confidences are the raw probe's (run `thinkctl calibrate %s`)",
                       layout.root, CONFIDENCE_CALIBRATOR, layout.root)
    threshold = (meta.get("calibration") or {}).get("stop_threshold")
    if threshold is None:
        threshold = risk.get("threshold")
    certified_at = tuple(int(b) for b in risk["check_points"]) if risk.get("check_points") else None
    if threshold is None:
        logger.warning("bundle %s has no risk-controlled stop threshold (none met the risk, or not calibrated); "
                       "the controller will not stop early on confidence", layout.root)
    confidence = HiddenStatePredictor(probe, layer, calibrator, None if threshold is None else float(threshold),
                                      certified_at)
    difficulty = None
    if layout.path(DIFFICULTY_PROBE).is_dir():
        dprobe = HiddenStateProbe.load(layout.path(DIFFICULTY_PROBE))
        _check_probe_for_model(dprobe, hidden, "the difficulty probe", layout.path(DIFFICULTY_PROBE))
        dcal = load_calibrator(layout.path(DIFFICULTY_CALIBRATOR)) if layout.has(DIFFICULTY_CALIBRATOR) else None
        dlayer = int(dprobe.layer) if dprobe.layer is not None else layer
        difficulty = HiddenStatePredictor(dprobe, dlayer, dcal)
    return confidence, difficulty


def _outlook(layout: BundleLayout, meta: dict[str, Any], risk: dict[str, Any], hidden: _Width) -> Outlook | None:
    from thinkctl.predictors.probe import HiddenStateProbe

    score = risk.get("score", STOP_SCORE_CONFIDENCE)
    if score == STOP_SCORE_CONFIDENCE:
        return None
    risk_path = layout.path(RISK_CONTROL)
    probe_dir, cal_path = layout.path(OUTLOOK_PROBE), layout.path(OUTLOOK_CALIBRATOR)
    if not probe_dir.is_dir() or not cal_path.is_file():
        raise ValueError(f"{risk_path} certifies a stop threshold on {score!r}, but {probe_dir} or "
                         f"{cal_path} is missing; rerun `thinkctl train` and `thinkctl calibrate` on the bundle")
    probe = HiddenStateProbe.load(probe_dir)
    _check_probe_for_model(probe, hidden, "the outlook probe", probe_dir)
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


def _process(layout: BundleLayout, meta: dict[str, Any], hidden: _Width) -> HiddenStatePredictor | None:
    from thinkctl.predictors.probe import HiddenStateProbe

    probe_dir, cal_path = layout.path(OUTLOOK_PROBE), layout.path(OUTLOOK_CALIBRATOR)
    if not probe_dir.is_dir() or not cal_path.is_file():
        return None
    probe = HiddenStateProbe.load(probe_dir)
    _check_probe_for_model(probe, hidden, "the outlook probe", probe_dir)
    layer = int(probe.layer) if probe.layer is not None else int(meta["confidence_layer"])
    return HiddenStatePredictor(probe, layer, load_calibrator(cal_path))


def load_bundle_predictors(bundle_dir: str | os.PathLike[str], model: Any
                           ) -> tuple[HiddenStatePredictor, HiddenStatePredictor | None, dict[str, Any]]:
    """The confidence and difficulty predictors of a bundle folder, checked against ``model``.

    Returns ``(confidence, difficulty or None, bundle manifest)``; see :meth:`Bundle.load`.
    """
    bundle = Bundle.load(bundle_dir, model)
    return bundle.confidence, bundle.difficulty, bundle.manifest


def load_bundle_outlook(bundle_dir: str | os.PathLike[str], model: Any) -> Outlook | None:
    """The bundle's :class:`~thinkctl.controller.predictors.Outlook` when its stop threshold was certified on the
    score that uses it, else None; see :meth:`Bundle.load`.

    Raises ValueError when ``calibration/risk_control.json`` says the threshold was certified with the outlook but
    the outlook probe or its calibrator is missing, or reads another layer than the confidence probe.
    """
    return Bundle.load(bundle_dir, model).outlook
