"""Shards of work over a pool of Ray actors, each holding one worker (one model replica) built once.

The driver keeps the queue: each actor runs one shard at a time, returns its result to the driver, and gets the
next shard; the driver hands each result to ``on_result`` (in completion order), exactly once per shard. An actor
that dies mid-shard (its process killed, its node lost, out of memory) is replaced by a fresh one and the shard is
retried on the next free actor, up to ``RayConfig.max_retries`` times per shard. An exception raised by the work
itself is not retried: it reaches the caller as the original exception (``ValueError``, ...), chained to Ray's
error that holds the remote traceback.

Only the driver writes results anywhere, so whatever ``on_result`` stores keeps its single-process guarantees
(atomic, append-only, resumable).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable, Generic, Hashable, Sequence, TypeVar

from thinkctl.distributed.cluster import RayConfig, ray_session, require_ray

__all__ = ["ShardRunner", "RunStats", "run_sharded"]

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
W = TypeVar("W")


def _limit_torch_threads(n: int) -> None:
    """Run torch with ``n`` threads in this process, whether or not torch is imported yet (importing it just for
    this would slow down workers that never use it)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    else:
        os.environ["OMP_NUM_THREADS"] = str(n)


class _WorkerHost:
    """The actor: builds the worker once (``make_worker()``), then runs ``worker.<method>(payload)`` per call.

    A failure to build is kept and re-raised by every call, so the driver sees the original exception (a bad
    model spec, a missing package) rather than a bare "actor died".
    """

    def __init__(self, make_worker: Callable[[], Any], torch_threads: int | None) -> None:
        self._error: BaseException | None = None
        self._worker: Any = None
        try:
            if torch_threads is not None:
                _limit_torch_threads(torch_threads)
            self._worker = make_worker()
        except Exception as exc:  # re-raised by ready() and call(), with its type
            self._error = exc

    def ready(self) -> int:
        if self._error is not None:
            raise self._error
        return os.getpid()

    def call(self, method: str, payload: Any) -> Any:
        if self._error is not None:
            raise self._error
        return getattr(self._worker, method)(payload)


@dataclass(frozen=True)
class RunStats:
    """What one :meth:`ShardRunner.run` did: ``shards`` completed, ``retries`` (shards rerun after their actor
    died), ``workers`` (actors in the pool), ``workers_started`` (actors started by the runner so far, replacements
    included)."""

    shards: int
    retries: int
    workers: int
    workers_started: int


def _death_errors(ray: Any) -> tuple[type[BaseException], ...]:
    """Ray errors meaning "the process running the shard is gone", as opposed to an error raised by the work."""
    names = ("RayActorError", "WorkerCrashedError", "ObjectLostError", "NodeDiedError")
    return tuple(getattr(ray.exceptions, n) for n in names if hasattr(ray.exceptions, n))


def _original(exc: BaseException) -> BaseException:
    """The exception raised inside the worker, when Ray carried one (``RayTaskError.cause``)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


class ShardRunner(Generic[W]):
    """A pool of Ray actors, each holding one worker built on the actor by ``make_worker()``.

    Parameters
    ----------
    make_worker : callable () -> worker
        Picklable factory run once on each actor (for a model: load it from a spec there, never on the driver;
        ``functools.partial(SomeWorker, spec, ...)`` of a module-level class is the usual form). The worker's
        methods take one payload and return a picklable result (rows, numpy arrays).
    config : RayConfig, default=RayConfig()
        Address, actors, resources per actor, retries.
    max_workers : int or None, default=None
        Upper bound on actors, for a job that knows how many shards it has.

    Examples
    --------
    >>> import functools
    >>> from thinkctl.distributed import RayConfig, ShardRunner
    >>> results = {}
    >>> two = RayConfig("local", num_workers=2)
    >>> with ShardRunner(functools.partial(SquareWorker), two) as runner:           # doctest: +SKIP
    ...     runner.run([(i, i) for i in range(8)], results.__setitem__)
    >>> results[3]                                                                   # doctest: +SKIP
    9
    """

    def __init__(self, make_worker: Callable[[], W], config: RayConfig = RayConfig(), *,
                 max_workers: int | None = None) -> None:
        if not callable(make_worker):
            raise TypeError(f"make_worker must be a callable returning the worker, got {type(make_worker).__name__}")
        if max_workers is not None and max_workers < 1:
            raise ValueError(f"max_workers={max_workers} must be at least 1")
        self.make_worker = make_worker
        self.config = config
        self.max_workers = max_workers
        self._stack: contextlib.ExitStack | None = None
        self._ray: Any = None
        self._actors: list[Any] = []
        self._ready: list[Any] = []
        self._busy: dict[int, Hashable] = {}
        self._workers_started = 0
        self._actor_cls: Any = None
        self._torch_threads: int | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------

    def __enter__(self) -> "ShardRunner[W]":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def start(self) -> None:
        """Connect to Ray, start the actors and wait until every worker is built.

        Raises
        ------
        ImportError
            Without Ray (``pip install 'thinkctl[distributed]'``); or the worker's own, from building it.
        ValueError
            When the cluster cannot hold the requested actors; or the worker's own, from building it.
        """
        if self._stack is not None:
            return
        require_ray()
        self._stack = contextlib.ExitStack()
        try:
            self._ray = self._stack.enter_context(ray_session(self.config))
            n = self._plan()
            self._actors = [None] * n
            self._ready = [None] * n
            for slot in range(n):
                self._spawn(slot)
            self.worker_pids()  # raises the worker's own error if building it failed
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop the actors and leave Ray (stopping a local instance this runner started)."""
        if self._ray is not None:
            for actor in self._actors:
                if actor is not None:
                    with contextlib.suppress(Exception):
                        self._ray.kill(actor, no_restart=True)
        self._actors, self._ready, self._busy = [], [], {}
        if self._stack is not None:
            stack, self._stack = self._stack, None
            stack.close()
        self._ray = None

    def _plan(self) -> int:
        """Actors to start and their resource options, from the config and the cluster's resources."""
        cfg, ray = self.config, self._ray
        total = ray.cluster_resources()
        gpus, cpus = float(total.get("GPU", 0.0)), float(total.get("CPU", 0.0))
        per_gpu = cfg.gpus_per_worker if cfg.gpus_per_worker is not None else (1.0 if gpus > 0 else 0.0)
        if per_gpu > 0:
            capacity = int(gpus // per_gpu + 1e-9)
            what = f"{gpus:g} GPUs at {per_gpu:g} per worker"
        else:
            capacity = int(cpus // cfg.cpus_per_worker + 1e-9)
            what = f"{cpus:g} CPUs at {cfg.cpus_per_worker:g} per worker"
        if capacity < 1:
            raise ValueError(f"the Ray cluster has room for no worker ({what}); lower gpus_per_worker / "
                             f"cpus_per_worker or add nodes")
        if cfg.num_workers is not None and cfg.num_workers > capacity:
            raise ValueError(f"num_workers={cfg.num_workers} does not fit the Ray cluster ({what}: at most "
                             f"{capacity}); use at most {capacity} or add nodes")
        n = cfg.num_workers or capacity
        if self.max_workers is not None:
            n = min(n, self.max_workers)
        # retries are the runner's (a fresh actor per retry, counted per shard), not Ray's restarts
        self._actor_cls = ray.remote(_WorkerHost).options(num_cpus=cfg.cpus_per_worker, num_gpus=per_gpu,
                                                          max_restarts=0, max_task_retries=0)
        self._torch_threads = None if per_gpu > 0 else max(1, int(cfg.cpus_per_worker))
        logger.info("%d Ray workers (%s)", n, what)
        return n

    def _spawn(self, slot: int) -> None:
        actor = self._actor_cls.remote(self.make_worker, self._torch_threads)
        self._actors[slot] = actor
        self._ready[slot] = actor.ready.remote()
        self._workers_started += 1

    def _retire(self, slot: int) -> None:
        """Kill the actor in ``slot`` (it died, or it is running abandoned work); a fresh one starts on demand."""
        actor = self._actors[slot]
        self._actors[slot] = None
        self._ready[slot] = None
        self._busy.pop(slot, None)
        if actor is not None:
            with contextlib.suppress(Exception):
                self._ray.kill(actor, no_restart=True)

    def _check_started(self) -> None:
        if self._stack is None:
            raise RuntimeError("the ShardRunner is not started; use it as `with ShardRunner(...) as runner:` "
                               "or call runner.start() first")

    # -- introspection -------------------------------------------------------------------------------------

    @property
    def num_workers(self) -> int:
        """Actors in the pool."""
        return len(self._actors)

    @property
    def workers_started(self) -> int:
        """Actors this runner has started, replacements of dead ones included."""
        return self._workers_started

    def worker_pids(self) -> list[int]:
        """Process ids of the pool's actors, waiting until each worker is built (re-raises a build error)."""
        self._check_started()
        for slot in range(len(self._actors)):
            if self._actors[slot] is None:
                self._spawn(slot)
        pids = []
        for ref in self._ready:
            try:
                pids.append(int(self._ray.get(ref)))
            except self._ray.exceptions.RayTaskError as exc:
                raise _original(exc) from exc
        return pids

    def in_flight(self) -> dict[Hashable, int]:
        """The shards running now, by key, with the process id of the actor running each."""
        self._check_started()
        return {key: int(self._ray.get(self._ready[slot])) for slot, key in self._busy.items()}

    def call(self, method: str, payload: Any = None) -> Any:
        """``worker.<method>(payload)`` on one idle actor, returning its result (e.g. the model's description)."""
        self._check_started()
        idle = [s for s in range(len(self._actors)) if s not in self._busy]
        if not idle:
            raise RuntimeError("every worker is busy; call() between runs")
        slot = idle[0]
        if self._actors[slot] is None:
            self._spawn(slot)
        try:
            return self._ray.get(self._actors[slot].call.remote(method, payload))
        except self._ray.exceptions.RayTaskError as exc:
            raise _original(exc) from exc

    # -- work ----------------------------------------------------------------------------------------------

    def run(self, shards: Sequence[tuple[K, Any]], on_result: Callable[[K, Any], None], *,
            method: str = "__call__", progress: bool = True, desc: str = "shards") -> RunStats:
        """Run ``worker.<method>(payload)`` for every ``(key, payload)`` in ``shards`` across the pool.

        Parameters
        ----------
        shards : sequence of (key, payload)
            Keys are hashable and unique; payloads are picklable (a shard index with its problems).
        on_result : callable (key, result) -> None
            Called on the driver, once per shard, in completion order, while the actors work on the next
            shards. If it raises, the run stops: shards in flight are abandoned (their actors replaced) and the
            exception propagates.
        method : str, default="__call__"
            The worker's method to call.
        progress : bool, default=True
            A tqdm bar over shards on the driver.
        desc : str, default="shards"
            The bar's label.

        Returns
        -------
        RunStats

        Raises
        ------
        RuntimeError
            When one shard's actor died more than ``config.max_retries`` times.
        Exception
            The worker's own exception for a shard, re-raised on the driver with its type.
        """
        from tqdm.auto import tqdm

        self._check_started()
        ray = self._ray
        items = list(shards)
        keys = [k for k, _ in items]
        if len(set(keys)) != len(keys):
            dup = sorted({repr(k) for k in keys if keys.count(k) > 1})
            raise ValueError(f"shard keys must be unique; repeated: {', '.join(dup)}")
        deaths = _death_errors(ray)
        queue = collections.deque(items)
        idle = collections.deque(s for s in range(len(self._actors)) if s not in self._busy)
        inflight: dict[Any, tuple[int, K, Any]] = {}
        attempts: collections.Counter[Any] = collections.Counter()
        retries = done = 0
        bar = tqdm(total=len(items), disable=not progress, desc=desc, unit="shard")

        def fill() -> None:
            while queue and idle:
                slot = idle.popleft()
                if self._actors[slot] is None:
                    self._spawn(slot)
                key, payload = queue.popleft()
                inflight[self._actors[slot].call.remote(method, payload)] = (slot, key, payload)
                self._busy[slot] = key

        try:
            fill()
            while inflight:
                ready, _ = ray.wait(list(inflight), num_returns=1)
                ref = ready[0]
                slot, key, payload = inflight.pop(ref)
                self._busy.pop(slot, None)
                try:
                    result = ray.get(ref)
                except deaths as exc:
                    attempts[key] += 1
                    retries += 1
                    self._retire(slot)
                    if attempts[key] > self.config.max_retries:
                        raise RuntimeError(
                            f"shard {key!r}: its Ray worker died {attempts[key]} times (max_retries="
                            f"{self.config.max_retries}); last error: {str(exc).splitlines()[0]}. Look for out-of-"
                            f"memory kills or lost nodes; rerun to resume from what was stored") from exc
                    logger.warning("Ray worker died on shard %r (%s); retrying the shard (retry %d of %d), "
                                   "a fresh worker replaces the dead one",
                                   key, str(exc).splitlines()[0], attempts[key], self.config.max_retries)
                    queue.appendleft((key, payload))
                    idle.append(slot)
                    fill()
                    bar.set_postfix(retries=retries)
                    continue
                except ray.exceptions.RayTaskError as exc:
                    raise _original(exc) from exc
                idle.append(slot)
                fill()  # keep the actors busy while the driver stores this result
                on_result(key, result)
                del result
                done += 1
                bar.update(1)
        finally:
            bar.close()
            for slot, _, _ in inflight.values():  # abandoned work: those actors are replaced when next needed
                self._retire(slot)
        return RunStats(shards=done, retries=retries, workers=len(self._actors),
                        workers_started=self._workers_started)


def run_sharded(make_worker: Callable[[], Any], shards: Sequence[tuple[K, Any]],
                on_result: Callable[[K, Any], None], config: RayConfig = RayConfig(), *,
                method: str = "__call__", progress: bool = True, desc: str = "shards") -> RunStats:
    """Start a :class:`ShardRunner` (at most one actor per shard), run ``shards`` through it, and stop it.

    Parameters are those of :class:`ShardRunner` and :meth:`ShardRunner.run`.

    Examples
    --------
    >>> import functools
    >>> from thinkctl.distributed import RayConfig, run_sharded
    >>> out = {}
    >>> run_sharded(functools.partial(SquareWorker), [(i, i) for i in range(4)], out.__setitem__,
    ...             RayConfig("local", num_workers=2))                               # doctest: +SKIP
    RunStats(shards=4, retries=0, workers=2, workers_started=2)
    """
    with ShardRunner(make_worker, config, max_workers=max(1, len(shards))) as runner:
        return runner.run(shards, on_result, method=method, progress=progress, desc=desc)
