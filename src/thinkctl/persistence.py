"""JSON envelopes of every saved thinkctl artefact (calibrators, risk controls, predictors): format and version
stamps, kind, metadata, and the checks made on loading.

A saved object is a JSON document::

    {"format": "thinkctl.calibration", "format_version": 1, "thinkctl_version": "0.1.0",
     "kind": "<registry name>", "params": {...}, "state": {...}, "metadata": {...}}

``metadata`` is free-form (JSON-serialisable), typically the predictor and model a calibrator was fitted for
(``{"model": "SmolLM2-135M", "hidden_size": 576, "layer": 20}``); ``load(..., expected_metadata=...)`` checks it.
No code is ever stored, so loading cannot execute anything.

Checks on loading (:func:`open_envelope`, :func:`read_json`):

* the file is whole, UTF-8 JSON; a file cut short or damaged is refused with its name and what to do;
* every number is finite: NaN and infinity are refused (thinkctl never writes them: :func:`write_json` is strict);
* the layout (``format_version``) is the one this thinkctl reads;
* the version stamp (``thinkctl_version``): a file from a *newer* compatibility series (the major version, or the
  minor while the major is 0, as in semantic versioning) is refused, since this thinkctl cannot know what a newer
  one changed; a file from another version of this or an older series loads with a warning naming the file and
  both versions (:func:`check_saved_version`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from pathlib import Path
from typing import Any, Mapping

__all__ = ["FORMAT_VERSION", "MissingArtefactError", "envelope", "open_envelope", "write_json", "read_json",
           "installed_version", "check_saved_version", "check_finite", "write_text_atomic", "loads_strict"]

logger = logging.getLogger(__name__)

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


#: (source, saved version) pairs already warned about, so that a file read many times warns once per process.
_WARNED: set[tuple[str, str]] = set()
_WARNED_LOCK = threading.Lock()


def check_saved_version(saved: Any, source: str) -> None:
    """Check the ``thinkctl_version`` stamp ``saved`` of the file ``source`` against the installed thinkctl.

    A missing or unreadable stamp, or one from a newer compatibility series than the installed thinkctl, raises a
    ValueError; any other version than the installed one logs a warning (once per file and version) naming the file
    and both versions.
    """
    installed = installed_version()
    if not isinstance(saved, str) or not saved:
        raise ValueError(f"{source} records no thinkctl version (thinkctl_version); it was not written by thinkctl or "
                         "is damaged; write it again with the installed thinkctl " + installed)
    if saved == installed:
        return
    if _series(saved) > _series(installed):
        raise ValueError(
            f"{source} was saved by thinkctl {saved}, which is not compatible with the installed thinkctl "
            f"{installed} (a newer series, whose formats this version cannot read safely); install thinkctl "
            f"{saved} or newer, or write it again with thinkctl {installed}")
    with _WARNED_LOCK:
        if (source, saved) in _WARNED:
            return
        _WARNED.add((source, saved))
    logger.warning("%s was saved by thinkctl %s, not the installed thinkctl %s; it is read as this version's "
                   "format. If results look wrong, write it again with thinkctl %s", source, saved, installed,
                   installed)


def _first_non_finite(obj: Any, where: str = "") -> str | None:
    """The path (``params.a[2]``) of the first NaN or infinite float in a JSON-like object, or None."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else (where or "the document")
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            found = _first_non_finite(v, f"{where}.{k}" if where else str(k))
            if found:
                return found
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            found = _first_non_finite(v, f"{where}[{i}]")
            if found:
                return found
    return None


def check_finite(obj: Any, source: str, hint: str = "refit and save it again") -> None:
    """Raise a ValueError naming ``source`` and the field when ``obj`` holds a NaN or infinite number."""
    found = _first_non_finite(obj)
    if found:
        raise ValueError(f"{source} holds a non-finite number (NaN or infinity) at {found}; it is damaged or was not "
                         f"written by thinkctl, which never saves one: {hint}")


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
    check_saved_version(d.get("thinkctl_version"), source)
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
        check_finite(d[key], source)
    return d


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` (UTF-8) through a temporary file in the same folder and a rename, so that readers
    see the old file or the whole new one, never a part; creates parent folders."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p


def write_json(path: str | os.PathLike[str], doc: Mapping[str, Any]) -> Path:
    """Write ``doc`` as JSON atomically (strict: NaN/inf are refused), creating parent directories."""
    return write_text_atomic(path, json.dumps(doc, indent=2, allow_nan=False) + "\n")


def _refuse_constant(name: str) -> Any:
    raise _NonFinite(name)


class _NonFinite(ValueError):
    pass


def loads_strict(text: str) -> Any:
    """``json.loads`` that refuses NaN, Infinity and numbers too large for a float (a ValueError)."""
    def parse_float(s: str) -> float:
        v = float(s)
        if not math.isfinite(v):
            raise _NonFinite(s)
        return v

    return json.loads(text, parse_constant=_refuse_constant, parse_float=parse_float)


def read_json(path: str | os.PathLike[str], hint: str = "pass a file written by save()", *,
              allow_nan: bool = False) -> Any:
    """Read a JSON file with a clear error (naming the file, ending with ``hint``) for a missing, cut short,
    malformed or non-UTF-8 file, or (unless ``allow_nan``) one holding NaN or infinity."""
    p = Path(path)
    if not p.is_file():
        raise MissingArtefactError(f"no file at {str(p)!r}; {hint}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{str(p)!r} is not UTF-8 text (byte {exc.start}); it is damaged or not a thinkctl file: "
                         f"{hint}") from None
    try:
        return json.loads(text) if allow_nan else loads_strict(text)
    except _NonFinite as exc:
        raise ValueError(f"{str(p)!r} holds a non-finite number ({exc}); it is damaged or was not written by "
                         f"thinkctl, which never saves one: {hint}") from None
    except json.JSONDecodeError as exc:
        cut = (" (the file looks cut short)" if exc.pos >= len(text.rstrip()) - 1 or exc.msg.startswith("Unterminated")
               else "")
        raise ValueError(f"{str(p)!r} is not valid JSON{cut}: {exc.msg} at line {exc.lineno} column {exc.colno}; "
                         f"it is damaged: {hint}") from None
