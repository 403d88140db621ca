"""Append-only trace storage: one shard per group of problems, committed atomically.

Layout of a store folder::

    config.json                     resolved CollectConfig + model stamp (written once)
    shard-00000.safetensors         tensors of the shard (hidden states, float16)
    shard-00000.jsonl               one row per sample; its checkpoints nested; written LAST (the commit point)

A shard exists once its ``.jsonl`` exists; both files are written to a temporary name and renamed, so a run killed
at any moment leaves only whole shards (a stray ``.safetensors`` without its ``.jsonl`` is ignored and rewritten).
Resuming skips committed shards: nothing is lost and nothing is duplicated.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from safetensors.numpy import load_file, save_file

__all__ = ["TraceStore", "CheckpointArrays", "SampleArrays"]

_SHARD_FMT = "shard-{:05d}"


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

    # -- writing -------------------------------------------------------------------------------------------

    def init(self, config: dict[str, Any]) -> None:
        """Create the store, or check that an existing one was made with the same config."""
        self.path.mkdir(parents=True, exist_ok=True)
        cfg_path = self.path / "config.json"
        if cfg_path.exists():
            old = json.loads(cfg_path.read_text())
            if old != json.loads(json.dumps(config)):
                diff = sorted(k for k in set(old) | set(config) if old.get(k) != json.loads(json.dumps(config)).get(k))
                raise ValueError(f"trace store {self.path} was collected with a different config (differs in {diff});"
                                 " resume with the same settings or write to a new folder")
            return
        tmp = cfg_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(config, indent=2))
        os.replace(tmp, cfg_path)

    def has_shard(self, index: int) -> bool:
        return (self.path / (_SHARD_FMT.format(index) + ".jsonl")).is_file()

    def write_shard(self, index: int, tensors: dict[str, np.ndarray], rows: list[dict[str, Any]]) -> None:
        """Write one shard atomically: tensors first, then the rows file whose rename commits the shard."""
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

    @property
    def config(self) -> dict[str, Any]:
        cfg_path = self.path / "config.json"
        if not cfg_path.is_file():
            raise FileNotFoundError(
                f"{self.path} is not a trace store (no config.json); create one with `thinkctl collect`")
        return json.loads(cfg_path.read_text())

    def shard_indices(self) -> list[int]:
        return sorted(int(p.stem.split("-")[1]) for p in self.path.glob("shard-*.jsonl"))

    def _shards(self) -> Iterator[tuple[int, list[dict[str, Any]], dict[str, np.ndarray]]]:
        for i in self.shard_indices():
            stem = self.path / _SHARD_FMT.format(i)
            rows = [json.loads(line) for line in stem.with_suffix(".jsonl").read_text().splitlines() if line]
            yield i, rows, load_file(str(stem.with_suffix(".safetensors")))

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
