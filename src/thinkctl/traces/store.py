"""Append-only trace storage: one shard per group of problems, committed atomically.

Layout of a store folder::

    config.json                     resolved CollectConfig + model stamp (written once)
    shard-00000.safetensors         tensors of the shard (hidden states, float16)
    shard-00000.jsonl               one row per sample; its checkpoints nested; written LAST (the commit point)

A shard exists once its ``.jsonl`` exists; both files are written to a temporary name and renamed, so a run killed
at any moment leaves only whole shards (a stray ``.safetensors`` without its ``.jsonl`` is ignored and rewritten).
Resuming skips committed shards: nothing is lost and nothing is duplicated.

One writer at a time: :meth:`TraceStore.init` takes an exclusive lock (``fcntl.flock`` on ``store.lock`` in the
folder) and holds it until :meth:`TraceStore.close` (or until the store object is collected, or the process ends:
a killed writer never leaves a stale lock). A second process that tries to write the same folder is refused with
:class:`StoreInUseError` before it reads or writes anything, so ``config.json`` always describes every shard beside
it. Store objects of one process share the lock (a notebook may collect into a store again while holding it).

Reading checks what it reads: a folder that is not a store, a damaged ``config.json``, a shard cut short (a disk
that filled up, a copy that stopped) are each refused with the file named and what to do; a store stamped by
another thinkctl version logs a warning (a newer series is refused, see :mod:`thinkctl.persistence`).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from thinkctl.persistence import check_saved_version, loads_strict, write_text_atomic

__all__ = ["TraceStore", "CheckpointArrays", "SampleArrays", "StoreInUseError", "DamagedStoreError", "LOCK_FILE"]

_SHARD_FMT = "shard-{:05d}"
#: The lock file a writer holds (see the module docstring).
LOCK_FILE = "store.lock"
CONFIG_FILE = "config.json"


class StoreInUseError(ValueError):
    """Another process is writing the trace store."""


class DamagedStoreError(ValueError):
    """A file of the trace store is cut short or malformed (the message names it and says what to do)."""


#: Locks this process holds: real path of the lock file -> [file descriptor, number of store objects holding it].
_HELD: dict[str, list[int]] = {}
_HELD_GUARD = threading.Lock()


def _acquire(lock_path: Path, store: Path) -> str:
    key = os.path.realpath(lock_path)
    with _HELD_GUARD:
        held = _HELD.get(key)
        if held is not None:
            held[1] += 1
            return key
        fd = os.open(key, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreInUseError(f"trace store {store} is being written by another process (lock {lock_path}); "
                                  "wait for it to finish, or pass another --out") from None
        _HELD[key] = [fd, 1]
    return key


def _release(key: str) -> None:
    with _HELD_GUARD:
        held = _HELD.get(key)
        if held is None:
            return
        held[1] -= 1
        if held[1] <= 0:
            del _HELD[key]
            os.close(held[0])  # releases the lock


@dataclass
class CheckpointArrays:
    """Per-checkpoint training data for confidence probes.

    ``X``: (n_checkpoints, hidden) states of one layer; ``y``: (n_checkpoints,) whether the answer forced there is
    right; ``groups``: (n_checkpoints,) problem ids (split by these, never by rows); ``position``: thinking tokens
    read; ``fraction``: position over the sample's natural thinking length; ``final_correct``: whether the
    sample's own final answer is right; ``sample``: row index of the sample in :meth:`TraceStore.samples`;
    ``confidence``: (n_checkpoints, n_stats) token-confidence statistics named by ``confidence_names``;
    ``greedy``: whether the checkpoint's sample was decoded greedily.
    """

    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    position: np.ndarray
    fraction: np.ndarray
    final_correct: np.ndarray
    sample: np.ndarray
    confidence: np.ndarray
    confidence_names: list[str]
    greedy: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.greedy is None:
            self.greedy = np.zeros(len(self.y), dtype=bool)


@dataclass
class SampleArrays:
    """Per-sample data: ``X`` (n_samples, hidden) prompt states of one layer, ``y`` final correctness,
    ``groups`` problem ids, ``level``, ``tokens`` (prompt + generated)."""

    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    level: np.ndarray
    tokens: np.ndarray


class TraceStore:
    """A folder of trace shards. Create with a config to write; open without one to read."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock_key: str | None = None
        self._finalizer: weakref.finalize | None = None
        self._version_checked = False

    # -- writing -------------------------------------------------------------------------------------------

    def lock(self) -> None:
        """Take the writer's lock (done by :meth:`init` and :meth:`write_shard`); held until :meth:`close`.

        Raises
        ------
        StoreInUseError
            When another process holds it.
        """
        if self._lock_key is not None:
            return
        key = _acquire(self.path / LOCK_FILE, self.path)
        self._lock_key = key
        self._finalizer = weakref.finalize(self, _release, key)

    def close(self) -> None:
        """Release the writer's lock, if this object holds it (reading goes on working)."""
        if self._finalizer is not None:
            self._finalizer()
        self._finalizer = None
        self._lock_key = None

    def __getstate__(self) -> dict[str, Any]:
        """A copy (pickled for another process, deep-copied) reads the same folder but does not hold the lock."""
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])  # type: ignore[misc]

    def __enter__(self) -> "TraceStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def init(self, config: dict[str, Any]) -> None:
        """Create the store, or check that an existing one was made with the same config; takes the writer's lock.

        A store with no shard yet (a run that failed before its first shard) takes the new config.

        Raises
        ------
        StoreInUseError
            When another process is writing the store.
        ValueError
            When the path is a file, the store was collected with another config (the message names what
            differs), or the folder holds shards but no config.
        """
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"{self.path} is a file, not a trace store folder; pass a folder to collect into")
        self.path.mkdir(parents=True, exist_ok=True)
        self.lock()
        want = json.loads(json.dumps(config))
        cfg_path = self.path / CONFIG_FILE
        shards = self.shard_indices(check=False)
        if cfg_path.exists() and shards:
            old = self._read_config()
            if old != want:
                diff = sorted(k for k in set(old) | set(want) if old.get(k) != want.get(k))
                raise ValueError(f"trace store {self.path} was collected with a different config (differs in {diff});"
                                 " resume with the same settings or write to a new folder")
            return
        if shards:
            raise ValueError(f"{self.path} holds {len(shards)} trace shard(s) but no {CONFIG_FILE} recording how they "
                             "were collected; collect into a new folder (or delete the shards to start over)")
        write_text_atomic(cfg_path, json.dumps(config, indent=2))

    def has_shard(self, index: int) -> bool:
        return (self.path / (_SHARD_FMT.format(index) + ".jsonl")).is_file()

    def write_shard(self, index: int, tensors: dict[str, np.ndarray], rows: list[dict[str, Any]]) -> None:
        """Write one shard atomically: tensors first, then the rows file whose rename commits the shard."""
        self.lock()
        if self.has_shard(index):
            raise ValueError(f"shard {index} already exists in {self.path}; shards are append-only")
        stem = self.path / _SHARD_FMT.format(index)
        tmp_t = stem.with_suffix(".safetensors.tmp")
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp_t))
        os.replace(tmp_t, stem.with_suffix(".safetensors"))
        tmp_r = stem.with_suffix(".jsonl.tmp")
        with open(tmp_r, "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_r, stem.with_suffix(".jsonl"))

    # -- reading -------------------------------------------------------------------------------------------

    def _read_config(self) -> dict[str, Any]:
        cfg_path = self.path / CONFIG_FILE
        if not cfg_path.is_file():
            what = "does not exist" if not self.path.exists() else (
                "is a file" if not self.path.is_dir() else f"has no {CONFIG_FILE}")
            raise FileNotFoundError(f"{self.path} is not a trace store (it {what}); create one with `thinkctl collect "
                                    "--out FOLDER`")
        try:
            doc = loads_strict(cfg_path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
            raise DamagedStoreError(f"{cfg_path} is damaged ({exc}); the store cannot be read: collect again into a "
                                    "new folder") from None
        if not isinstance(doc, dict):
            raise DamagedStoreError(f"{cfg_path} is not a trace store config (a JSON object); collect again into a "
                                    "new folder")
        if not self._version_checked:
            if "thinkctl_version" in doc:  # a store assembled by hand may carry no stamp; it is not checked
                check_saved_version(doc["thinkctl_version"], str(cfg_path))
            self._version_checked = True
        return doc

    @property
    def config(self) -> dict[str, Any]:
        """The store's ``config.json`` (collection settings, resolved layers, model stamp, problem ids).

        Raises
        ------
        FileNotFoundError
            When the folder is not a trace store.
        DamagedStoreError
            When ``config.json`` is cut short or malformed.
        """
        return self._read_config()

    def shard_indices(self, check: bool = True) -> list[int]:
        """Indices of the committed shards; ``check``: first make sure the folder is a store (a FileNotFoundError
        otherwise, rather than no shards)."""
        if check:
            self._read_config()
        return sorted(int(p.stem.split("-")[1]) for p in self.path.glob("shard-*.jsonl"))

    def _damaged(self, path: Path, why: object, index: int) -> DamagedStoreError:
        stem = self.path / _SHARD_FMT.format(index)
        return DamagedStoreError(
            f"trace shard {path} is damaged ({why}); delete {stem.name}.jsonl and {stem.name}.safetensors from "
            f"{self.path} and run the same `thinkctl collect` again to collect that shard anew (the others are kept)")

    def _shards(self) -> Iterator[tuple[int, list[dict[str, Any]], dict[str, np.ndarray]]]:
        for i in self.shard_indices():
            stem = self.path / _SHARD_FMT.format(i)
            rows_path, tensors_path = stem.with_suffix(".jsonl"), stem.with_suffix(".safetensors")
            rows = []
            try:
                for n, line in enumerate(rows_path.read_text(encoding="utf-8").splitlines(), 1):
                    if line:
                        try:
                            rows.append(json.loads(line))
                        except json.JSONDecodeError as exc:
                            raise self._damaged(rows_path, f"line {n}: {exc.msg}", i) from None
            except UnicodeDecodeError as exc:
                raise self._damaged(rows_path, f"not UTF-8 text at byte {exc.start}", i) from None
            if not tensors_path.is_file():
                raise self._damaged(tensors_path, "missing", i)
            try:
                tensors = load_file(str(tensors_path))
            except SafetensorError as exc:
                raise self._damaged(tensors_path, exc, i) from None
            yield i, rows, tensors

    def samples(self) -> list[dict[str, Any]]:
        """Every sample row, in shard order (checkpoints nested under ``"checkpoints"``)."""
        return [row for _, rows, _ in self._shards() for row in rows]

    def layers(self) -> list[int]:
        return list(self.config["layers_resolved"])

    def _layer_pos(self, layer: int) -> int:
        layers = self.layers()
        if layer not in layers:
            n = self.config["model"]["num_layers"]
            if -n <= layer < n and (layer % n) in layers:
                return layers.index(layer % n)
            raise ValueError(f"layer={layer} was not recorded in {self.path}; recorded layers: {layers}")
        return layers.index(layer)

    def checkpoint_arrays(self, layer: int = -1) -> CheckpointArrays:
        """Checkpoint states of one recorded layer with their labels (see :class:`CheckpointArrays`)."""
        pos = self._layer_pos(layer)
        xs, y, groups, position, fraction, final, sample, conf, greedy = [], [], [], [], [], [], [], [], []
        names: list[str] = []
        s_index = 0
        for _, rows, tensors in self._shards():
            h = tensors["checkpoint_hidden"]
            for row in rows:
                for ck in row["checkpoints"]:
                    xs.append(h[ck["row"], pos])
                    y.append(ck["forced_correct"])
                    groups.append(row["problem_id"])
                    position.append(ck["position"])
                    fraction.append(ck["position"] / max(1, row["n_thinking"]))
                    final.append(row["correct"])
                    sample.append(s_index)
                    greedy.append(bool(row.get("greedy", False)))
                    names = sorted(ck["confidence"])
                    conf.append([ck["confidence"][k] for k in names])
                s_index += 1
        hidden = self.config["model"]["hidden_size"]
        return CheckpointArrays(
            X=np.asarray(xs, dtype=np.float32).reshape(len(xs), hidden), y=np.asarray(y, dtype=bool),
            groups=np.asarray(groups), position=np.asarray(position), fraction=np.asarray(fraction, dtype=float),
            final_correct=np.asarray(final, dtype=bool), sample=np.asarray(sample),
            confidence=np.asarray(conf, dtype=float).reshape(len(conf), len(names)), confidence_names=names,
            greedy=np.asarray(greedy, dtype=bool))

    def sample_arrays(self, layer: int = -1) -> SampleArrays:
        """Prompt states of one recorded layer, one row per sample, with final correctness."""
        pos = self._layer_pos(layer)
        xs, y, groups, level, tokens = [], [], [], [], []
        for _, rows, tensors in self._shards():
            h = tensors["prompt_hidden"]
            for row in rows:
                xs.append(h[row["prompt_row"], pos])
                y.append(row["correct"])
                groups.append(row["problem_id"])
                level.append(row["level"] if row["level"] is not None else -1)
                tokens.append(row["n_prompt_tokens"] + row["n_generated"])
        hidden = self.config["model"]["hidden_size"]
        return SampleArrays(X=np.asarray(xs, dtype=np.float32).reshape(len(xs), hidden), y=np.asarray(y, dtype=bool),
                            groups=np.asarray(groups), level=np.asarray(level), tokens=np.asarray(tokens))
