"""Calibration artefacts use the shared JSON envelope of :mod:`thinkctl.persistence` (family ``"calibration"``)."""

from __future__ import annotations

from typing import Any, Mapping

from thinkctl.persistence import FORMAT_VERSION, installed_version, read_json, write_json
from thinkctl.persistence import envelope as _envelope
from thinkctl.persistence import open_envelope as _open_envelope

__all__ = ["FORMAT", "FORMAT_VERSION", "envelope", "open_envelope", "write_json", "read_json", "installed_version"]

FAMILY = "calibration"
#: Value of the ``"format"`` field of every calibration JSON file.
FORMAT = f"thinkctl.{FAMILY}"


def envelope(kind: str, params: Mapping[str, Any], state: Mapping[str, Any],
             metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return _envelope(FAMILY, kind, params, state, metadata)


def open_envelope(d: Mapping[str, Any], expected_kinds: tuple[str, ...],
                  expected_metadata: Mapping[str, Any] | None = None, source: str = "dict") -> Mapping[str, Any]:
    return _open_envelope(d, FAMILY, expected_kinds, expected_metadata=expected_metadata, source=source,
                          hint="load it with the matching class (or thinkctl.calibration.load_calibrator)")
