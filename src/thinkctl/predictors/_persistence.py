"""JSON envelopes of saved predictors: format and version stamps, kind, and the checks made on loading.

A saved predictor is a directory holding one JSON document plus its weights (LightGBM text models or a
safetensors file). The JSON document is::

    {"format": "thinkctl.predictors", "format_version": 1, "thinkctl_version": "0.1.0",
     "kind": "HiddenStateProbe", "params": {...}, "state": {...}, "metadata": {...}}

No code is ever stored, so loading cannot execute anything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

__all__ = ["FORMAT", "FORMAT_VERSION", "envelope", "open_envelope", "write_json", "read_json", "installed_version"]

#: Value of the ``"format"`` field of every predictor JSON file.
FORMAT = "thinkctl.predictors"
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


def envelope(kind: str, params: Mapping[str, Any], state: Mapping[str, Any],
             metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Wrap constructor ``params`` and fitted ``state`` with the format, version and kind stamps."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "thinkctl_version": installed_version(),
        "kind": kind,
        "params": dict(params),
        "state": dict(state),
        "metadata": dict(metadata or {}),
    }


def open_envelope(d: Any, expected_kind: str, source: str) -> Mapping[str, Any]:
    """Check the stamps of a loaded document and return it.

    Raises
    ------
    ValueError
        If the document is not a thinkctl predictor file, was written by an incompatible thinkctl version or
        file layout, or holds another kind of predictor than ``expected_kind``.
    """
    if not isinstance(d, Mapping) or d.get("format") != FORMAT:
        raise ValueError(f"{source} is not a thinkctl predictor file (missing 'format': {FORMAT!r})")
    if d.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{source} uses predictor file layout {d.get('format_version')!r}, but this thinkctl reads layout "
            f"{FORMAT_VERSION}; refit and save it again with the installed thinkctl {installed_version()}")
    saved = str(d.get("thinkctl_version", ""))
    if not saved or _series(saved) != _series(installed_version()):
        raise ValueError(
            f"{source} was saved by thinkctl {saved or '<unknown>'}, which is not compatible with the installed "
            f"thinkctl {installed_version()}; refit it with this version or install thinkctl {saved or '<that version>'}")
    if d.get("kind") != expected_kind:
        raise ValueError(f"{source} holds a {d.get('kind')!r}, not a {expected_kind!r}; "
                         f"load it with thinkctl.predictors.{d.get('kind')}.load")
    for key in ("params", "state", "metadata"):
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
        raise FileNotFoundError(f"no file at {str(p)!r}; pass the directory written by save()")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{str(p)!r} is not valid JSON ({exc}); pass a directory written by save()") from exc
