"""The layout of a predictor bundle: its file names, its manifest ``bundle.json``, and the checks that its parts fit.

A bundle is a folder that ``thinkctl train`` creates and ``thinkctl calibrate`` completes::

    bundle.json                      manifest (this module): model, trace store, split, layer, parts, calibration
    confidence_probe/                P(the answer forced now is right), on mid-thinking hidden states
    outlook_probe/                   P(the run's final answer will be right), same states (optional)
    difficulty_probe/                P(one sample solves the query), on the prompt's last state (optional)
    difficulty_lgbm/                 LightGBM on the query's features (reports only)
    train_report.json, layer_sweep.png
    calibration/confidence.json      calibrator of the confidence probe
    calibration/outlook.json         calibrator of the outlook probe
    calibration/difficulty.json      calibrator of the difficulty probe (written with the routing table)
    calibration/risk_control.json    the certified stop rule: score, threshold, check points
    calibration/confidence_oof.json  out-of-fold train logits the calibrators were fitted on
    calibration_report.json
    routing.json                     difficulty -> route table

Every module that reads or writes a bundle takes the names from here (:class:`BundleLayout`), so the format has one
owner. The manifest is written in the versioned envelope of :mod:`thinkctl.persistence` (family ``"bundle"``); a
manifest from before the envelope (a plain JSON object with ``"kind": "thinkctl-bundle"``) is still read.

Trace store path: the manifest stores it twice, ``trace_store`` relative to the bundle folder (absolute when no
relative path exists) and ``trace_store_absolute``, so that it resolves from any working directory. Resolution: the
relative path joined to the bundle folder (a bundle moved together with its traces), else the absolute path (a bundle
copied elsewhere alone). A manifest without the envelope stored the path relative to the folder the command ran in:
that is tried first, then the bundle folder.

Staleness: ``thinkctl train`` records a fingerprint (a content hash) of each probe it writes under ``parts``; the
calibration stages record the fingerprints of the probes they calibrated (``calibration.made_for`` and
``routing_made_for``). :meth:`BundleLayout.stale_parts` compares them with the probes now in the folder, so that a
bundle retrained without recalibration is refused instead of silently pairing a new probe with old calibrators.

This module is at the bottom of the package: it depends on :mod:`thinkctl.persistence` only, so that predictors,
calibration and the controller can all use it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from thinkctl.persistence import MissingArtefactError, envelope, open_envelope, read_json, write_json

__all__ = ["BundleLayout", "MANIFEST", "CONFIDENCE_PROBE", "OUTLOOK_PROBE", "DIFFICULTY_PROBE", "DIFFICULTY_LGBM",
           "CALIBRATION_DIR", "CONFIDENCE_CALIBRATOR", "OUTLOOK_CALIBRATOR", "DIFFICULTY_CALIBRATOR", "RISK_CONTROL",
           "CONFIDENCE_OOF", "CALIBRATION_REPORT", "TRAIN_REPORT", "LAYER_SWEEP_PLOT", "ROUTING", "PROBES",
           "MANIFEST_KIND", "LEGACY_MANIFEST_KIND", "fingerprint"]

#: The manifest.
MANIFEST = "bundle.json"
#: Probe folders (``HiddenStateProbe.save``).
CONFIDENCE_PROBE = "confidence_probe"
OUTLOOK_PROBE = "outlook_probe"
DIFFICULTY_PROBE = "difficulty_probe"
#: The probes whose fingerprints the manifest records.
PROBES = (CONFIDENCE_PROBE, OUTLOOK_PROBE, DIFFICULTY_PROBE)
#: LightGBM difficulty model folder (``DifficultyModel.save``).
DIFFICULTY_LGBM = "difficulty_lgbm"
#: Calibration artefacts.
CALIBRATION_DIR = "calibration"
CONFIDENCE_CALIBRATOR = f"{CALIBRATION_DIR}/confidence.json"
OUTLOOK_CALIBRATOR = f"{CALIBRATION_DIR}/outlook.json"
DIFFICULTY_CALIBRATOR = f"{CALIBRATION_DIR}/difficulty.json"
RISK_CONTROL = f"{CALIBRATION_DIR}/risk_control.json"
CONFIDENCE_OOF = f"{CALIBRATION_DIR}/confidence_oof.json"
#: Reports.
CALIBRATION_REPORT = "calibration_report.json"
TRAIN_REPORT = "train_report.json"
LAYER_SWEEP_PLOT = "layer_sweep.png"
#: The routing table (``RoutingTable.save``).
ROUTING = "routing.json"

FAMILY = "bundle"
#: Envelope kind of the manifest.
MANIFEST_KIND = "manifest"
#: ``kind`` of a manifest written before the envelope.
LEGACY_MANIFEST_KIND = "thinkctl-bundle"

_TRAIN_HINT = "create one with `thinkctl train --traces TRACES --out BUNDLE`"
_CALIBRATE_HINT = "run `thinkctl calibrate {root}`"


def fingerprint(path: str | os.PathLike[str]) -> str:
    """A content hash (SHA-256, hex) of a file or of every file in a folder (names and bytes, in sorted order)."""
    p = Path(path)
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    for f in files:
        h.update(f.relative_to(p).as_posix().encode() if f != p else b"")
        h.update(b"\0")
        h.update(f.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


@dataclass(frozen=True)
class BundleLayout:
    """Where each part of the bundle in folder ``root`` lives, and its manifest.

    Parameters
    ----------
    root : path-like
        The bundle folder.

    Examples
    --------
    >>> layout = BundleLayout("bundle")
    >>> layout.path("routing.json").as_posix()
    'bundle/routing.json'
    """

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root))

    def path(self, part: str) -> Path:
        """The path of ``part`` (one of this module's names, e.g. :data:`RISK_CONTROL`) inside the bundle."""
        return self.root / part

    def has(self, part: str) -> bool:
        """Whether ``part`` exists in the bundle."""
        return self.path(part).exists()

    # -- manifest ----------------------------------------------------------------------------------------------

    @property
    def manifest_path(self) -> Path:
        return self.path(MANIFEST)

    def is_bundle(self) -> bool:
        """Whether the folder holds a manifest."""
        return self.manifest_path.is_file()

    def read_manifest(self) -> dict[str, Any]:
        """The manifest's fields (model, task, trace_store, split, confidence_layer, collect, parts, calibration).

        Raises
        ------
        MissingArtefactError
            If the folder holds no ``bundle.json``.
        ValueError
            If the manifest was written by an incompatible thinkctl or is not a bundle manifest.
        """
        if not self.is_bundle():
            raise MissingArtefactError(f"{self.root} is not a bundle (no {MANIFEST}); {_TRAIN_HINT}")
        doc = read_json(self.manifest_path, "write the bundle again with `thinkctl train --traces TRACES --out "
                                            "BUNDLE` (then `thinkctl calibrate`)")
        source = str(self.manifest_path)
        if isinstance(doc, Mapping) and "format" not in doc:
            if doc.get("kind") != LEGACY_MANIFEST_KIND and "confidence_layer" not in doc:
                raise ValueError(f"{source} is not a thinkctl bundle manifest; {_TRAIN_HINT}")
            fields = dict(doc)
            fields["_legacy"] = True
            return fields
        env = open_envelope(doc, FAMILY, (MANIFEST_KIND,), source=source,
                            hint=f"{MANIFEST} must be the manifest that `thinkctl train` writes")
        return dict(env["state"])

    def write_manifest(self, fields: Mapping[str, Any]) -> Path:
        """Write the manifest ``fields`` in the versioned envelope (the model stamp goes into its metadata too)."""
        state = {k: v for k, v in fields.items() if not k.startswith("_")}
        if fields.get("_legacy") and "trace_store" in state:  # re-anchor a working-folder path to the bundle
            try:
                state.update(self.store_reference(self.trace_store_path(fields)))
            except MissingArtefactError:
                pass  # leave it as it was: loading will say where it was looked for
        model = state.get("model") or {}
        return write_json(self.manifest_path, envelope(FAMILY, MANIFEST_KIND, {}, state, {"model": model}))

    # -- other JSON parts --------------------------------------------------------------------------------------

    def write_document(self, part: str, kind: str, fields: Mapping[str, Any],
                       metadata: Mapping[str, Any] | None = None) -> Path:
        """Write the JSON part ``part`` (e.g. :data:`RISK_CONTROL`) in the versioned envelope, as ``kind``."""
        return write_json(self.path(part), envelope(FAMILY, kind, {}, fields, metadata))

    def read_document(self, part: str, kind: str) -> dict[str, Any]:
        """The fields of the JSON part ``part`` written by :meth:`write_document` as ``kind`` (a plain JSON object
        written before the envelope is returned as it is).

        Raises
        ------
        MissingArtefactError
            If the part is missing.
        ValueError
            If it is of another kind or from an incompatible thinkctl.
        """
        doc = read_json(self.path(part), f"{part} is written by `thinkctl calibrate`; run it again on {self.root}")
        if isinstance(doc, Mapping) and "format" not in doc:
            return dict(doc)
        env = open_envelope(doc, FAMILY, (kind,), source=str(self.path(part)),
                            hint=f"{part} is written by `thinkctl calibrate`; run it again on {self.root}")
        return dict(env["state"])

    # -- trace store -------------------------------------------------------------------------------------------

    def store_reference(self, store_path: str | os.PathLike[str]) -> dict[str, str]:
        """The manifest fields that record ``store_path``: ``trace_store`` relative to the bundle folder (absolute
        when no relative path exists) and ``trace_store_absolute``."""
        target = Path(store_path).resolve()
        try:
            rel = Path(os.path.relpath(target, self.root.resolve())).as_posix()
        except ValueError:  # another drive (Windows): no relative path exists
            rel = str(target)
        return {"trace_store": rel, "trace_store_absolute": str(target)}

    def trace_store_path(self, fields: Mapping[str, Any]) -> Path:
        """The trace store the manifest ``fields`` name, resolved (see the module docstring for the rule).

        Raises
        ------
        MissingArtefactError
            If the recorded path does not lead to an existing folder.
        """
        if "trace_store" not in fields:
            raise ValueError(f"{self.manifest_path} records no trace_store; {_TRAIN_HINT}")
        ref = Path(str(fields["trace_store"]))
        if ref.is_absolute():
            candidates = [ref]
        elif fields.get("_legacy"):
            candidates = [ref, self.root / ref]  # written relative to the working folder of `thinkctl train`
        else:
            candidates = [self.root / ref]
        if fields.get("trace_store_absolute"):
            candidates.append(Path(str(fields["trace_store_absolute"])))
        for c in candidates:
            if c.is_dir():
                return c
        raise MissingArtefactError(
            f"the trace store of bundle {self.root} is not at {' or '.join(map(str, candidates))}; move it back, or "
            "retrain the bundle from it: `thinkctl train --traces TRACES --out BUNDLE`")

    # -- parts and staleness -----------------------------------------------------------------------------------

    def probe_fingerprints(self) -> dict[str, str]:
        """Fingerprints of the probes present in the folder."""
        return {name: fingerprint(self.path(name)) for name in PROBES if self.path(name).is_dir()}

    def stale_parts(self, fields: Mapping[str, Any]) -> list[str]:
        """What in the bundle was made for other probes than the ones present, each as a sentence saying what to run.

        Compares the probes now in the folder with the fingerprints the calibration stages recorded. A manifest that
        records no fingerprints (written before they were) is not checked.
        """
        if "parts" not in fields:
            return []
        now = self.probe_fingerprints()
        problems = []
        hint = _CALIBRATE_HINT.format(root=self.root)
        calibration = fields.get("calibration") or {}
        made_for: Mapping[str, str] = calibration.get("made_for") or {}
        calibrated = self.has(CONFIDENCE_CALIBRATOR) or self.has(RISK_CONTROL)
        if calibrated and not made_for:
            problems.append(f"{self.path(CALIBRATION_DIR)} was made before the probes were last trained (the manifest "
                            f"records no calibration of them); {hint}")
        for name, fp in made_for.items():
            if now.get(name) != fp:
                problems.append(f"{self.path(CALIBRATION_DIR)} was calibrated for another {name} than the one in "
                                f"{self.root}; {hint}")
        routing_for: Mapping[str, str] = fields.get("routing_made_for") or {}
        if self.has(ROUTING) and routing_for and now.get(DIFFICULTY_PROBE) != routing_for.get(DIFFICULTY_PROBE):
            problems.append(f"{self.path(ROUTING)} was fitted for another {DIFFICULTY_PROBE} than the one in "
                            f"{self.root}; {hint}")
        elif self.has(ROUTING) and not routing_for and made_for and self.has(DIFFICULTY_PROBE):
            problems.append(f"{self.path(ROUTING)} records no {DIFFICULTY_PROBE} it was fitted for; {hint}")
        return problems
