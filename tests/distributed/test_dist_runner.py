"""ShardRunner on toy workers: every shard once, one worker per actor built once, dead actors' shards retried,
the worker's own errors reach the driver with their type."""

from __future__ import annotations

import functools
import os
import signal
import sys

import pytest

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'thinkctl[distributed]')")
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the toy workers travel by value

from thinkctl.distributed import RayConfig, ShardRunner, run_sharded  # noqa: E402

TWO = RayConfig(num_workers=2, max_retries=2)


class Toy:
    """Squares numbers; a payload ("die-once", marker) kills its own process the first time it is seen."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, payload):
        value, action, marker = payload
        self.calls += 1
        if action == "die" or (action == "die-once" and not os.path.exists(marker)):
            if marker:
                open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)  # mid-shard: the result is never returned
        if action == "raise":
            raise ValueError(f"value={value} is not allowed")
        return value * value, os.getpid(), self.calls

    def name(self, _):
        return "toy"


class Broken:
    def __init__(self) -> None:
        raise ValueError("unknown model spec 'nope'")


def _shards(n, special=None):
    return [(f"s{i}", (i, *(special.get(i, ("ok", "")) if special else ("ok", "")))) for i in range(n)]


def test_every_shard_once_and_each_worker_built_once(ray_local):
    got = []
    stats = run_sharded(Toy, _shards(10), lambda k, r: got.append((k, r)), TWO, progress=False)
    assert sorted(k for k, _ in got) == sorted(f"s{i}" for i in range(10))
    assert {k: r[0] for k, r in got} == {f"s{i}": i * i for i in range(10)}
    by_pid = {}
    for _, (_, pid, calls) in got:
        by_pid.setdefault(pid, []).append(calls)
    assert len(by_pid) == 2  # both actors worked
    for calls in by_pid.values():  # one worker object per actor, reused for all its shards
        assert sorted(calls) == list(range(1, len(calls) + 1))
    assert stats.shards == 10 and stats.retries == 0 and stats.workers == 2 and stats.workers_started == 2


def test_an_actor_killed_mid_shard_has_its_shard_retried(ray_local, tmp_path):
    marker = str(tmp_path / "died")
    got = []
    stats = run_sharded(Toy, _shards(6, {3: ("die-once", marker)}), lambda k, r: got.append((k, r)), TWO,
                        progress=False)
    assert os.path.exists(marker)  # the actor did die on shard 3
    assert sorted(k for k, _ in got) == sorted(f"s{i}" for i in range(6))  # complete, no duplicates
    assert dict(got)["s3"][0] == 9
    assert stats.retries == 1


def test_a_shard_whose_actor_always_dies_fails_after_max_retries(ray_local):
    with pytest.raises(RuntimeError, match=r"shard 's1': its Ray worker died 2 times \(max_retries=1\)"):
        run_sharded(Toy, _shards(3, {1: ("die", "")}), lambda k, r: None,
                    RayConfig(num_workers=2, max_retries=1), progress=False)


def test_an_error_raised_by_the_work_reaches_the_driver_with_its_type(ray_local):
    with ShardRunner(Toy, TWO) as runner:
        with pytest.raises(ValueError, match="value=2 is not allowed"):
            runner.run(_shards(4, {2: ("raise", "")}), lambda k, r: None, progress=False)
        # the pool still works afterwards: abandoned shards' actors are replaced
        got = {}
        runner.run(_shards(3), got.__setitem__, progress=False)
        assert {k: v[0] for k, v in got.items()} == {"s0": 0, "s1": 1, "s2": 4}
        assert runner.call("name") == "toy"


def test_a_worker_that_cannot_be_built_fails_at_start_with_its_error(ray_local):
    with pytest.raises(ValueError, match="unknown model spec 'nope'"):
        ShardRunner(Broken, TWO).start()


def test_repeated_shard_keys_are_refused(ray_local):
    with ShardRunner(Toy, RayConfig(num_workers=1)) as runner:
        with pytest.raises(ValueError, match="repeated: 'a'"):
            runner.run([("a", (1, "ok", "")), ("a", (2, "ok", ""))], lambda k, r: None, progress=False)


def test_more_workers_than_the_cluster_holds_is_a_clear_error(ray_local):
    with pytest.raises(ValueError, match=r"num_workers=3 does not fit the Ray cluster \(2 CPUs at 1 per worker"):
        ShardRunner(Toy, RayConfig(num_workers=3)).start()


def test_max_workers_caps_the_pool(ray_local):
    with ShardRunner(functools.partial(Toy), RayConfig(), max_workers=1) as runner:
        assert runner.num_workers == 1
        assert len(runner.worker_pids()) == 1
