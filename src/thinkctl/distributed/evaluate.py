"""Evaluation sharded over Ray actors, into the same JSONL rows as :func:`thinkctl.eval.evaluate`.

A shard is one unit the single-process :func:`~thinkctl.eval.evaluate` runs: one strategy on one block of ``block``
problems (the problems of that strategy without a row yet, in order). Each actor holds one model replica and one
:class:`~thinkctl.controller.AdaptiveController` built from the same config (and bundle), and answers whole
blocks; the driver alone appends each returned block's rows to the JSONL (and fsyncs) as it comes back. The
controller's sampling seeds depend only on the prompts of a call and their chunk/wave indices, so the rows equal a
single-process run's, greedy and sampled strategies alike (with the same torch threads). A block is written whole
or not at all, so a rerun resumes from the file exactly as the single-process path does, and a file begun by one
kind of run is finished by the other.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

from thinkctl.distributed.cluster import RayConfig, require_ray
from thinkctl.distributed.model import ModelSpec, load_on_worker
from thinkctl.distributed.runner import RunStats, ShardRunner

__all__ = ["EvaluateWorker", "evaluate_distributed"]

logger = logging.getLogger(__name__)


class EvaluateWorker:
    """One model replica and controller answering whole blocks (runs on a Ray actor; also usable in-process).

    Parameters
    ----------
    model : ModelSpec or str
        The model to load here.
    task : Task or str
        The task, or its registry name (looked up here).
    config : ControllerConfig
        The controller's config, as in the single-process run.
    bundle : str or None, default=None
        Predictor bundle folder (``thinkctl train`` + ``calibrate``), loaded here; it must exist on every node.
    record_trace : bool, default=False
        Keep each decision trace in the rows.
    """

    def __init__(self, model: ModelSpec | str, task: Any, config: Any, bundle: str | None = None,
                 record_trace: bool = False) -> None:
        from thinkctl.controller import AdaptiveController

        loaded, tokenizer, self.task = load_on_worker(model, task)
        self.config = config
        self.bundle = None if bundle is None else os.fspath(bundle)
        self.record_trace = record_trace
        if self.bundle:
            self.controller = AdaptiveController.load(self.bundle, loaded, tokenizer, config, task=self.task)
        else:
            self.controller = AdaptiveController(loaded, tokenizer, config=config, task=self.task)

    def describe(self, _: Any = None) -> dict[str, Any]:
        """What this worker evaluates with: task name, controller config, bundle, routes (None without a table)."""
        routing = self.controller.routing
        return {"task": self.task.name, "controller": asdict(self.config), "bundle": self.bundle,
                "record_trace": self.record_trace,
                "routing": None if routing is None else [r.name for r in routing.routes]}

    def __call__(self, shard: tuple[str, Sequence[Any]]) -> list[dict[str, Any]]:
        """The rows of one shard ``(strategy, problems)``: one strategy call on the block, as :func:`evaluate`."""
        from thinkctl.controller.strategies import get_strategy
        from thinkctl.eval.evaluate import _row

        name, problems = shard
        results = get_strategy(name)(self.controller, [p.prompt for p in problems])
        return [_row(p, name, r, self.task, self.record_trace) for p, r in zip(problems, results)]


def evaluate_distributed(model: ModelSpec | str, task: Any, problems: Sequence[Any], strategies: Sequence[str], *,
                         config: Any = None, bundle: str | os.PathLike[str] | None = None,
                         rows_path: str | os.PathLike[str], block: int = 64, record_trace: bool = False,
                         ray: RayConfig = RayConfig(), progress: bool = True, runner: ShardRunner[Any] | None = None,
                         on_shard: Callable[[tuple[str, int]], None] | None = None,
                         info: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run ``strategies`` on ``problems`` over Ray actors; the rows :func:`thinkctl.eval.evaluate` returns.

    The same JSONL at ``rows_path``, row for row, as ``evaluate(controller, task, problems, strategies,
    rows_path=rows_path, block=block)`` in one process with a controller built from ``config`` (and ``bundle``);
    rows already in the file are kept and not computed again.

    Parameters
    ----------
    model : ModelSpec or str
        Loaded on each actor (one replica per actor), never on the driver.
    task : Task or str
    problems : sequence of Problem
        As the single-process run gets them (e.g. with the instruct suffix already on their prompts).
    strategies : sequence of str
        Strategy names (:func:`thinkctl.controller.strategies.get_strategy`).
    config : ControllerConfig, default=None
        The controller's config; None: ``ControllerConfig()``.
    bundle : path or None, default=None
        Predictor bundle, loaded on each actor.
    rows_path : path
        Results JSONL; written by the driver only, one block at a time.
    block : int, default=64
        Problems per shard (per strategy call), as ``evaluate(block=...)``.
    record_trace : bool, default=False
        Keep each decision trace in the rows.
    ray : RayConfig, default=RayConfig()
        Cluster address, actors, retries (ignored when ``runner`` is given).
    progress : bool, default=True
        A progress bar over shards.
    runner : ShardRunner, optional
        A started runner whose workers are ``EvaluateWorker(model, task, config, bundle, record_trace)``.
    on_shard : callable ((strategy, block index)) -> None, optional
        Called after each shard's rows are on disk.
    info : dict, optional
        Filled with the workers' description (``routing``: the route names of the bundle's table, or None).

    Returns
    -------
    list of dict
        One row per (problem, strategy), rows from the file first, as :func:`~thinkctl.eval.evaluate`.

    Examples
    --------
    >>> import thinkctl
    >>> from thinkctl.distributed import RayConfig, evaluate_distributed
    >>> task = thinkctl.tasks.get("arith")
    >>> rows = evaluate_distributed("embedded", task, task.sample(48, seed=7), ["fixed@64", "sc@4", "adaptive"],
    ...                             rows_path="runs/eval.rows.jsonl",
    ...                             ray=RayConfig("local", num_workers=2))                      # doctest: +SKIP
    """
    from thinkctl.controller import ControllerConfig
    from thinkctl.controller.strategies import get_strategy
    from thinkctl.eval.evaluate import _todo_blocks
    from thinkctl.eval.rowsfile import append_rows, load_rows

    require_ray()
    if block < 1:
        raise ValueError(f"block={block} must be at least 1")
    config = ControllerConfig() if config is None else config
    bundle = None if bundle is None else os.fspath(bundle)
    task_name = task if isinstance(task, str) else task.name
    names = list(dict.fromkeys(strategies))
    for name in names:
        get_strategy(name)  # fail early on a bad name, before any actor starts
    path = Path(rows_path)
    done = load_rows(path)
    have = {(r["problem_id"], r["strategy"]) for r in done}
    rows = list(done)
    path.parent.mkdir(parents=True, exist_ok=True)
    shards = [((name, i), (name, chunk)) for name in names
              for i, chunk in enumerate(_todo_blocks(problems, name, have, block))]
    if done:
        logger.info("resuming %s: %d rows already there, %d blocks to run", path, len(done), len(shards))

    def commit(key: tuple[str, int], new: list[dict[str, Any]]) -> None:
        append_rows(path, new)
        rows.extend(new)
        if on_shard is not None:
            on_shard(key)

    def work(active: ShardRunner[Any]) -> RunStats | None:
        described = active.call("describe")
        want = {"task": task_name, "controller": asdict(config), "bundle": bundle, "record_trace": record_trace}
        got = {k: described[k] for k in want}
        if got != want:
            raise ValueError(f"the runner's workers evaluate with {got}, not {want}; build the runner from "
                             f"partial(EvaluateWorker, model, task, config, bundle, record_trace) with these")
        if info is not None:
            info.update(described)
        if not shards:
            return None
        return active.run(shards, commit, progress=progress,
                          desc=f"evaluate {task_name} on {active.num_workers} Ray workers")

    if runner is not None:
        stats = work(runner)
    else:
        make = partial(EvaluateWorker, model, task_name if isinstance(task, str) else task, config, bundle,
                       record_trace)
        with ShardRunner(make, ray, max_workers=max(1, len(shards))) as own:
            stats = work(own)
    if stats is not None and stats.retries:
        logger.warning("%d shard(s) were retried after their Ray worker died; the rows are complete", stats.retries)
    keep = {p.id for p in problems}
    return [r for r in rows if r["problem_id"] in keep and r["strategy"] in names]
