"""Predictor artefacts use the shared JSON envelope of :mod:`thinkctl.persistence` (family ``"predictors"``).

A saved predictor is a directory holding this JSON document plus its weights (LightGBM text models or a safetensors
file); no code is ever stored, so loading cannot execute anything.
"""

from __future__ import annotations

from typing import Any, Mapping

from thinkctl.persistence import FORMAT_VERSION, installed_version, read_json, write_json
from thinkctl.persistence import envelope as _envelope
from thinkctl.persistence import open_envelope as _open_envelope

__all__ = ["FORMAT", "FORMAT_VERSION", "envelope", "open_envelope", "write_json", "read_json", "installed_version"]

FAMILY = "predictors"
#: Value of the ``"format"`` field of every predictor JSON file.
FORMAT = f"thinkctl.{FAMILY}"


def envelope(kind: str, params: Mapping[str, Any], state: Mapping[str, Any],
             metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return _envelope(FAMILY, kind, params, state, metadata)


def open_envelope(d: Any, expected_kind: str, source: str) -> Mapping[str, Any]:
    kind = d.get("kind") if isinstance(d, Mapping) else "?"
    doc = _open_envelope(d, FAMILY, (expected_kind,), source=source,
                         hint=f"load it with thinkctl.predictors.{kind}.load")
    if not isinstance(doc.get("metadata"), Mapping):
        raise ValueError(f"{source} is missing its 'metadata' section; the file is damaged, refit and save again")
    return doc
