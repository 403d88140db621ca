"""Guarding a resumable rows file: one writer at a time, and no resuming under another configuration.

``thinkctl evaluate`` appends one JSONL row per (problem, strategy) and resumes from the rows already there. Two
things would make that silently wrong: a second process appending to the same file (rows written twice), and a
resumed run whose settings differ from the run that wrote the rows (another level, seed, model, bundle, token cap
or step scorer: the old rows would be reported under the new settings). :func:`guard_rows` prevents both: it holds
an exclusive lock (``fcntl.flock`` on ``ROWS.lock``) for the run, and records the settings beside the rows
(``ROWS.config.json``); a resumed run with other settings is refused, naming what differs. :func:`append_rows`
writes a block of rows to disk before the next block starts, and :func:`load_rows` reads them back, dropping a last
row that a killed run left half-written.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from thinkctl.jsonl import iter_jsonl
from thinkctl.persistence import read_json

__all__ = ["guard_rows", "RowsInUseError", "append_rows", "load_rows"]

logger = logging.getLogger(__name__)


class RowsInUseError(ValueError):
    """Another process is writing the rows file."""


def _config_path(rows: Path) -> Path:
    return rows.with_name(rows.name + ".config.json")


@contextlib.contextmanager
def guard_rows(rows_path: str | os.PathLike[str], settings: Mapping[str, Any]) -> Iterator[Path]:
    """Hold the rows file for this run: lock it, and check or record the settings its rows were made with.

    Parameters
    ----------
    rows_path : path of the JSONL rows file (it need not exist yet)
    settings : JSON-serialisable mapping of everything that changes a row's content (task, level, seed, model,
        bundle, token cap, scorer...). Strategies are not part of it: each row names its strategy.

    Raises
    ------
    RowsInUseError
        When another process holds the file.
    ValueError
        When the file has rows made with other settings (the message names the differing settings), or rows but no
        record of their settings.
    """
    rows = Path(rows_path)
    rows.parent.mkdir(parents=True, exist_ok=True)
    lock_path = rows.with_name(rows.name + ".lock")
    fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RowsInUseError(f"{rows} is being written by another process (lock {lock_path}); wait for it to "
                                 "finish or pass another --rows") from None
        settings = json.loads(json.dumps(dict(settings)))  # as it will read back
        cfg_path = _config_path(rows)
        has_rows = rows.is_file() and rows.stat().st_size > 0
        if cfg_path.is_file():
            old = read_json(cfg_path, f"delete it (and {rows.name}, whose settings it recorded) to start over, or "
                                      "pass another --rows")
            differ = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            if differ and has_rows:
                detail = ", ".join(f"{k}: {old.get(k)!r} -> {settings.get(k)!r}" for k in differ)
                raise ValueError(f"{rows} holds rows made with other settings ({detail}); resuming would report them "
                                 "under the new settings. Pass another --rows, or delete the file to start over")
        elif has_rows:
            raise ValueError(f"{rows} holds rows but no record of the settings they were made with ({cfg_path}); "
                             "pass another --rows, or delete the file to start over")
        tmp = cfg_path.with_name(cfg_path.name + ".tmp")
        tmp.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, cfg_path)
        yield rows
    finally:
        os.close(fd)  # releases the lock


def append_rows(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Append ``rows`` to the JSONL at ``path`` and fsync: a block is on disk before the next one starts."""
    with path.open("a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _drop_torn_tail(path: Path) -> None:
    """Cut an incomplete last line (a run killed while appending a block) off the rows file, so that resuming
    recomputes those rows instead of failing on half a JSON object."""
    with path.open("rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        keep = data.rfind(b"\n") + 1
        f.truncate(keep)
    logger.warning("%s ended in an incomplete row (a run stopped while writing it); dropped it, its problem is run "
                   "again", path)


def load_rows(path: Path) -> list[dict[str, Any]]:
    """The rows already in the JSONL at ``path`` (none when it does not exist), after dropping a torn last row."""
    if not path.is_file():
        return []
    _drop_torn_tail(path)
    return [row for _, row in iter_jsonl(path)]
