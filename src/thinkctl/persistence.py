"""JSON envelopes of every saved thinkctl artefact (calibrators, risk controls, predictors): format and version
stamps, kind, metadata, and the checks made on loading.

A saved object is a JSON document::

    {"format": "thinkctl.calibration", "format_version": 1, "thinkctl_version": "0.1.0",
     "kind": "<registry name>", "params": {...}, "state": {...}, "metadata": {...}}

``metadata`` is free-form (JSON-serialisable), typically the predictor and model a calibrator was fitted for
(``{"model": "SmolLM2-135M", "hidden_size": 576, "layer": 20}``); ``load(..., expected_metadata=...)`` checks it.
No code is ever stored, so loading cannot execute anything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

__all__ = ["FORMAT_VERSION", "MissingArtefactError", "envelope", "open_envelope", "write_json", "read_json",
           "installed_version"]

#: Version of the JSON layout; bumped when fields change meaning.
FORMAT_VERSION = 1


def installed_version() -> str:
    """Version string of the running thinkctl."""
    from thinkctl import __version__

    return __version__


def _series(version: str) -> tuple[int, ...]:
    """Compatibility series: the major version, plus the minor while the major is 0 (semantic versioning)."""
    parts = version.split(".")
    try:
        major = int(parts[0])
        minor = int(parts[1]) if len(parts) > 1 else 0
    except ValueError as exc:
        raise ValueError(f"thinkctl_version {version!r} is not a version string like '0.1.0'") from exc
    return (major,) if major > 0 else (major, minor)


class MissingArtefactError(FileNotFoundError, ValueError):
    """A saved artefact is not where it was asked for (both a FileNotFoundError and a ValueError)."""


def envelope(family: str, kind: str, params: Mapping[str, Any], state: Mapping[str, Any],
             metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Wrap ``params`` and fitted ``state`` with the format (``thinkctl.<family>``), version and kind stamps."""
    return {
        "format": f"thinkctl.{family}",
        "format_version": FORMAT_VERSION,
        "thinkctl_version": installed_version(),
        "kind": kind,
        "params": dict(params),
        "state": dict(state),
        "metadata": dict(metadata or {}),
    }


def open_envelope(d: Any, family: str, expected_kinds: tuple[str, ...], *,
                  expected_metadata: Mapping[str, Any] | None = None, source: str = "dict",
                  hint: str = "load it with the matching class") -> Mapping[str, Any]:
    """Check the stamps of a loaded document of ``family`` (``"calibration"``, ``"predictors"``) and return it.

    Raises
    ------
    ValueError
        If the document is not a thinkctl file of that family, was written by an incompatible thinkctl version or
        layout, is of another kind than ``expected_kinds`` (``hint`` says what to do), or its metadata disagrees
        with ``expected_metadata``.
    """
    fmt = f"thinkctl.{family}"
    word = family.rstrip("s")
    if not isinstance(d, Mapping) or d.get("format") != fmt:
        raise ValueError(f"{source} is not a thinkctl {word} file (missing 'format': {fmt!r})")
    if d.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{source} uses {word} file layout {d.get('format_version')!r}, but this thinkctl reads layout "
            f"{FORMAT_VERSION}; refit and save it again with the installed thinkctl {installed_version()}"
        )
    saved = str(d.get("thinkctl_version", ""))
    if not saved or _series(saved) != _series(installed_version()):
        raise ValueError(
            f"{source} was saved by thinkctl {saved or '<unknown>'}, which is not compatible with the installed "
            f"thinkctl {installed_version()}; refit it with this version or install thinkctl "
            f"{saved or '<that version>'}"
        )
    kind = d.get("kind")
    if kind not in expected_kinds:
        raise ValueError(f"{source} holds a {kind!r}, expected {' or '.join(map(repr, expected_kinds))}; {hint}")
    if expected_metadata:
        meta = d.get("metadata") or {}
        wrong = {k: (meta.get(k), v) for k, v in expected_metadata.items() if meta.get(k) != v}
        if wrong:
            detail = "; ".join(f"{k}: saved {got!r}, expected {want!r}" for k, (got, want) in wrong.items())
            raise ValueError(f"{source} was fitted for a different setup ({detail}); refit it for this one")
    for key in ("params", "state"):
        if not isinstance(d.get(key), Mapping):
            raise ValueError(f"{source} is missing its {key!r} section; the file is damaged, refit and save again")
    return d


def write_json(path: str | os.PathLike[str], doc: Mapping[str, Any]) -> Path:
    """Write ``doc`` as JSON (strict: NaN/inf are refused), creating parent directories."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return p


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file with a clear error for missing or malformed files."""
    p = Path(path)
    if not p.is_file():
        raise MissingArtefactError(f"no file at {str(p)!r}; pass the path written by save()")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{str(p)!r} is not valid JSON ({exc}); pass a file written by save()") from exc
