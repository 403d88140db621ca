"""``python benchmarks/bench_ray.py``: wall time of ``collect --ray`` with 1 and with N local Ray workers on the
same problems.

Starts one local Ray instance and one pool of actors per worker count (each actor: one model replica, one torch
thread), then times trace collection into fresh stores, pools interleaved across repeats, medians compared. Actor
start-up (importing torch, loading the model) is timed separately: it is paid once per run, whatever its size. A
one-process run (no Ray, torch's default threads) is timed alongside for reference, and every store is checked to
hold the same traces. A benchmark, not a test: figures go to the JSON file given with ``--json``.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, Sequence

from thinkctl.commands._common import add_model_argument, write_json, run_script, script_parser


logger = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_argument(p)
    p.add_argument("--json", required=True, metavar="OUT", help="write the results here")
    p.add_argument("--task", default="arith", help="task family")
    p.add_argument("--n", type=int, default=32, help="problems")
    p.add_argument("--seed", type=int, default=2000, help="problem and sampling seed")
    p.add_argument("--samples", type=int, default=2, help="generations per problem (the first is greedy)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--shard-problems", type=int, default=4, help="problems per shard (the unit of work per actor)")
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts; the ratio is first / last")
    p.add_argument("--repeats", type=int, default=2, help="timed collections per worker count, interleaved")
    p.add_argument("--no-one-process", action="store_true", help="skip the one-process reference run")


def _same_traces(a: Any, b: Any) -> bool:
    import numpy as np
    from safetensors.numpy import load_file

    if a.samples() != b.samples() or a.shard_indices() != b.shard_indices():
        return False
    for i in a.shard_indices():
        ta = load_file(str(a.path / f"shard-{i:05d}.safetensors"))
        tb = load_file(str(b.path / f"shard-{i:05d}.safetensors"))
        if ta.keys() != tb.keys() or not all(np.array_equal(ta[k], tb[k]) for k in ta):
            return False
    return True


def _cpu_seconds(pids: list[int]) -> float | None:
    """User + system CPU time used so far by these processes (Linux ``/proc``; None elsewhere)."""
    total = 0.0
    try:
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    except (OSError, ValueError, IndexError):
        return None
    return total


def measure_ray_scaling(model: str, task_name: str, cfg: Any, workers: list[int], *, repeats: int = 2,
                        one_process: bool = True) -> dict[str, Any]:
    """Time collection of ``cfg.n_problems`` problems on pools of each size in ``workers``.

    Parameters
    ----------
    model : str
        A :func:`thinkctl.load_model` spec, loaded on every actor.
    task_name : str
    cfg : CollectConfig
    workers : list of int
        Pool sizes; a local Ray instance gets their sum as CPUs so all pools live side by side (idle actors
        use no CPU); each actor runs torch with one thread.
    repeats : int, default=2
        Timed collections per pool, interleaved across pools.
    one_process : bool, default=True
        Also time :func:`thinkctl.traces.collect` in this process (torch's default threads).

    Returns
    -------
    dict
        ``ratio`` (median wall time with ``workers[0]`` over ``workers[-1]`` workers: the speed-up),
        ``ratio_best`` (the same with each pool's fastest run, the one least disturbed by other jobs),
        ``collect_s`` (median per pool size), ``runs_s``, ``startup_s`` (building each pool: torch import and
        model load, in parallel), ``actor_cpu_s`` (CPU time the actors used per run) and ``actor_cores_busy``
        (median CPU time over wall time: near N for N workers on N free cores; near 1 when other jobs hold the
        cores, which caps the speed-up whatever Ray does), ``one_process_s``, ``same_traces``, the machine's CPU
        count, load average, and this process's niceness (a niced run gets little CPU next to other jobs).
    """
    import ray as ray_module
    import torch

    import thinkctl
    from thinkctl import __version__
    from thinkctl.distributed import CollectWorker, RayConfig, ShardRunner, collect_distributed, ray_session
    from thinkctl.models import model_id
    from thinkctl.traces import collect

    if repeats < 1:
        raise ValueError(f"repeats={repeats} must be at least 1")
    if not workers or min(workers) < 1:
        raise ValueError(f"workers={workers}; give positive worker counts such as 1,2")
    task = thinkctl.tasks.get(task_name)
    problems = task.sample(cfg.n_problems, seed=cfg.seed)
    load_before = os.getloadavg()
    runs: dict[int, list[float]] = {w: [] for w in workers}
    cpu: dict[int, list[float | None]] = {w: [] for w in workers}
    startup: dict[int, float] = {}
    stores: list[Any] = []
    one_process_s = None
    with tempfile.TemporaryDirectory(prefix="thinkctl-bench-ray-") as tmp:
        if one_process:
            t0 = time.perf_counter()
            m, tok = thinkctl.load_model(model)
            t1 = time.perf_counter()
            stores.append(collect(m, tok, task, problems, str(Path(tmp) / "one"), cfg, model_name=model_id(m),
                                  progress=False))
            one_process_s = time.perf_counter() - t1
            logger.info("one process: load %.1fs, collect %.1fs", t1 - t0, one_process_s)
            del m, tok
        with ray_session(RayConfig("local", local_num_cpus=sum(workers))):
            pools: dict[int, Any] = {}
            try:
                for w in workers:
                    t0 = time.perf_counter()
                    pools[w] = ShardRunner(partial(CollectWorker, model, task, cfg), RayConfig(num_workers=w))
                    pools[w].start()
                    startup[w] = time.perf_counter() - t0
                for r in range(repeats):
                    for w in workers:
                        pids = pools[w].worker_pids()
                        c0, t0 = _cpu_seconds(pids), time.perf_counter()
                        stores.append(collect_distributed(model, task, problems, str(Path(tmp) / f"ray{w}-{r}"), cfg,
                                                          runner=pools[w], progress=False))
                        runs[w].append(time.perf_counter() - t0)
                        c1 = _cpu_seconds(pids)
                        cpu[w].append(c1 - c0 if c0 is not None and c1 is not None else None)
                        logger.info("%d workers, repeat %d: %.1fs wall, %s CPU s in the actors", w, r, runs[w][-1],
                                    cpu[w][-1])
            finally:
                for pool in pools.values():
                    pool.close()
        same = all(_same_traces(stores[0], s) for s in stores[1:])
        n_samples = len(stores[0].samples())
        n_tokens = sum(row["n_generated"] for row in stores[0].samples())
    collect_s = {str(w): statistics.median(v) for w, v in runs.items()}
    first, last = workers[0], workers[-1]
    return {
        "ratio": collect_s[str(first)] / collect_s[str(last)],
        "ratio_is": f"median collection wall time with {first} worker(s) / with {last}",
        "ratio_best": min(runs[first]) / min(runs[last]),  # fastest runs: the least disturbed by other jobs
        "collect_s": collect_s,
        "runs_s": {str(w): v for w, v in runs.items()},
        "actor_cpu_s": {str(w): v for w, v in cpu.items()},
        "actor_cores_busy": {str(w): (statistics.median(c / t for c, t in zip(cpu[w], runs[w]))
                                      if None not in cpu[w] else None) for w in workers},
        "startup_s": {str(w): s for w, s in startup.items()},
        "one_process_s": one_process_s,
        "one_process_torch_threads": torch.get_num_threads(),
        "same_traces": same,
        "shards": -(-cfg.n_problems // cfg.shard_problems),
        "samples": n_samples,
        "generated_tokens": n_tokens,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "nice": os.nice(0) if hasattr(os, "nice") else None,  # this process's, inherited by the local Ray workers
        "loadavg_before": list(load_before),
        "loadavg_after": list(os.getloadavg()),
        "thinkctl_version": __version__,
        "ray_version": ray_module.__version__,
    }


def run(args: argparse.Namespace) -> int:
    from thinkctl.distributed import require_ray
    from thinkctl.traces import CollectConfig

    require_ray()
    try:
        workers = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        raise ValueError(f"--workers={args.workers!r}; give comma-separated worker counts such as 1,2") from None
    cfg = replace(CollectConfig(), task=args.task, n_problems=args.n, seed=args.seed, samples=args.samples,
                  max_new_tokens=args.max_new_tokens, shard_problems=args.shard_problems)
    result = measure_ray_scaling(args.model, args.task, cfg, workers, repeats=args.repeats,
                                 one_process=not args.no_one_process)
    result["config"] = {"model": args.model, "task": args.task, "n": args.n, "seed": args.seed,
                        "samples": args.samples, "max_new_tokens": args.max_new_tokens,
                        "shard_problems": args.shard_problems, "workers": workers, "repeats": args.repeats}
    path = write_json(args.json, result)
    times = ", ".join(f"{w} worker(s) {s:.1f}s" for w, s in result["collect_s"].items())
    ref = f", one process {result['one_process_s']:.1f}s" if result["one_process_s"] is not None else ""
    busy = ", ".join(f"{w}: {b:.2f}" for w, b in result["actor_cores_busy"].items() if b is not None)
    print(f"collection {times}{ref}: ratio {result['ratio']:.2f} (fastest runs: {result['ratio_best']:.2f}) "
          f"on {result['cpus_usable']} usable cores "
          f"(load average {result['loadavg_before'][0]:.1f}; cores the actors kept busy {busy or 'n/a'}); "
          f"same traces: {result['same_traces']}; wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The script's options (``--help`` lists them with their defaults)."""
    return script_parser("bench_ray.py", __doc__, add_arguments)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 on success, 2 (with the advice on stderr) on a user error."""
    return run_script(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
