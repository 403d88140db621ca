"""Trace collection sharded over Ray actors, into the same :class:`~thinkctl.traces.TraceStore` as a one-process run.

The problems are cut into the same shards as :func:`thinkctl.traces.collect` (``shard_problems`` each, the same
per-shard sampling seed), each actor collects whole shards on its own model replica, and the driver alone commits
the returned rows and arrays to the store as shards come back. So the store is the one a single process writes
(greedy generations are identical, and sampled ones too, with the same torch threads), and it resumes the same
way: committed shards are skipped, a shard is committed whole or not at all, and a store begun by one kind of run
is finished by the other.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict
from functools import partial
from typing import Any, Callable, Sequence

import numpy as np

from thinkctl.distributed.cluster import RayConfig, require_ray
from thinkctl.distributed.model import ModelSpec, load_on_worker
from thinkctl.distributed.runner import RunStats, ShardRunner
from thinkctl.tasks import Problem, Task
from thinkctl.traces import CollectConfig, TraceStore
from thinkctl.traces.collect import shard_seed, store_header

__all__ = ["CollectWorker", "collect_distributed", "shard_seed"]

logger = logging.getLogger(__name__)


class CollectWorker:
    """One model replica collecting whole shards (runs on a Ray actor; also usable in-process).

    Parameters
    ----------
    model : ModelSpec or str
        The model to load here.
    task : Task or str
        The task, or its registry name (looked up here).
    cfg : CollectConfig
    """

    def __init__(self, model: ModelSpec | str, task: Task | str, cfg: CollectConfig) -> None:
        from thinkctl.generation import reasoning_format
        from thinkctl.models import model_num_layers, model_stamp
        from thinkctl.traces.collect import resolve_layers

        self.model, self.tokenizer, self.task = load_on_worker(model, task)
        self.cfg = cfg
        self.fmt = reasoning_format(self.tokenizer)
        n_layers = model_num_layers(self.model)
        self.layers = resolve_layers(cfg.layers, n_layers)
        self.stamp = model_stamp(self.model)

    def describe(self, _: Any = None) -> dict[str, Any]:
        """The model stamp of the store (:func:`thinkctl.models.model_stamp`), the resolved layers, and what
        this worker collects (task name, config)."""
        return {"model": dict(self.stamp), "layers_resolved": list(self.layers), "task": self.task.name,
                "collect": asdict(self.cfg)}

    def __call__(self, shard: tuple[int, Sequence[Problem]]) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
        """Tensors and rows of one shard ``(index, problems)``, ready for :meth:`TraceStore.write_shard`."""
        from thinkctl.traces.collect import collect_shard

        index, problems = shard
        return collect_shard(self.model, self.tokenizer, self.fmt, self.task, list(problems), self.cfg,
                             self.layers, seed=shard_seed(self.cfg, index))


def collect_distributed(model: ModelSpec | str, task: Task | str, problems: Sequence[Problem], out_dir: str,
                        cfg: CollectConfig = CollectConfig(), ray: RayConfig = RayConfig(), *,
                        progress: bool = True, runner: ShardRunner[Any] | None = None,
                        on_shard: Callable[[int], None] | None = None) -> TraceStore:
    """Collect traces of ``problems`` over Ray actors into the store at ``out_dir`` (resuming one that exists).

    The same store, shard for shard, as ``thinkctl.traces.collect(model, tokenizer, task, problems, out_dir, cfg)``
    in one process.

    Parameters
    ----------
    model : ModelSpec or str
        Loaded on each actor (one replica per actor), never on the driver.
    task : Task or str
    problems : sequence of Problem
    out_dir : str
        Store folder; written by the driver only.
    cfg : CollectConfig, default=CollectConfig()
    ray : RayConfig, default=RayConfig()
        Cluster address, actors, retries (ignored when ``runner`` is given).
    progress : bool, default=True
        A progress bar over shards.
    runner : ShardRunner, optional
        A started runner whose workers are ``CollectWorker(model, task, cfg)`` (e.g. to watch its actors).
    on_shard : callable (shard index) -> None, optional
        Called after each shard is committed.

    Returns
    -------
    TraceStore

    Examples
    --------
    >>> import thinkctl
    >>> from thinkctl.distributed import RayConfig, collect_distributed
    >>> from thinkctl.traces import CollectConfig
    >>> task = thinkctl.tasks.get("arith")
    >>> cfg = CollectConfig(n_problems=48, samples=2)
    >>> store = collect_distributed("embedded", task, task.sample(48, seed=cfg.seed), "runs/traces", cfg,
    ...                             RayConfig("local", num_workers=2))                      # doctest: +SKIP
    """
    require_ray()
    n_shards = math.ceil(len(problems) / cfg.shard_problems)
    chunks = {i: list(problems[i * cfg.shard_problems:(i + 1) * cfg.shard_problems]) for i in range(n_shards)}
    store = TraceStore(out_dir)
    task_name = task if isinstance(task, str) else task.name

    def commit(index: int, result: tuple[dict[str, np.ndarray], list[dict[str, Any]]]) -> None:
        tensors, rows = result
        store.write_shard(index, tensors, rows)
        if on_shard is not None:
            on_shard(index)

    def work(active: ShardRunner[Any]) -> RunStats | None:
        info = active.call("describe")
        if info["collect"] != asdict(cfg) or info["task"] != task_name:
            raise ValueError(f"the runner's workers collect task {info['task']!r} with {info['collect']}, not task "
                             f"{task_name!r} with {asdict(cfg)}; build the runner from "
                             f"partial(CollectWorker, model, task, cfg) with this task and cfg")
        # the same config a one-process run records, so either kind of run resumes the other
        store.init(store_header(cfg, info["layers_resolved"], info["model"], problems))
        todo = [i for i in range(n_shards) if not store.has_shard(i)]
        if len(todo) < n_shards:
            logger.info("resuming %s: %d of %d shards already collected", out_dir, n_shards - len(todo), n_shards)
        if not todo:
            return None
        return active.run([(i, (i, chunks[i])) for i in todo], commit, progress=progress,
                          desc=f"collect {task_name} on {active.num_workers} Ray workers")

    if runner is not None:
        stats = work(runner)
    else:
        with ShardRunner(partial(CollectWorker, model, task, cfg), ray, max_workers=n_shards) as own:
            stats = work(own)
    if stats is not None and stats.retries:
        logger.warning("%d shard(s) were retried after their Ray worker died; the store is complete", stats.retries)
    return store
