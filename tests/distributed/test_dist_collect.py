"""thinkctl collect on Ray actors: the same store as one process, shard for shard; an actor killed mid-shard and a
driver killed mid-run both end in a complete store with nothing duplicated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from functools import partial

import numpy as np
import pytest

pytest.importorskip("ray", reason="ray is not installed (pip install 'thinkctl[distributed]')")

import thinkctl  # noqa: E402
from thinkctl.distributed import CollectWorker, RayConfig, ShardRunner, collect_distributed  # noqa: E402
from thinkctl.traces import CollectConfig, TraceStore, collect  # noqa: E402
from dist_helpers import one_torch_thread  # noqa: E402

# 8 problems in 4 shards of 2, one greedy and one sampled generation each, short generations
CFG = CollectConfig(task="arith", n_problems=8, seed=2000, samples=2, every=8, max_new_tokens=48, batch_size=8,
                    shard_problems=2)
N_SHARDS = 4
TASK = thinkctl.tasks.get(CFG.task)
PROBLEMS = TASK.sample(CFG.n_problems, seed=CFG.seed)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The one-process store, collected with one torch thread like each CPU actor."""
    with one_torch_thread():
        model, tokenizer = thinkctl.load_model("embedded")
        return collect(model, tokenizer, TASK, PROBLEMS, str(tmp_path_factory.mktemp("ref") / "s"), CFG,
                       model_name=thinkctl.models.model_id(model), progress=False)


@pytest.fixture(scope="module")
def runner(ray_local):
    with ShardRunner(partial(CollectWorker, "embedded", "arith", CFG), RayConfig(num_workers=2)) as r:
        yield r


def _assert_same_store(got: TraceStore, want: TraceStore) -> None:
    assert got.config == want.config
    assert got.shard_indices() == want.shard_indices() == list(range(N_SHARDS))
    rows = got.samples()
    keys = [(r["problem_id"], r["sample"]) for r in rows]
    assert len(keys) == len(set(keys)) == CFG.n_problems * CFG.samples  # complete, nothing twice
    assert rows == want.samples()  # texts, token ids, forced answers, confidence statistics: exactly equal
    from safetensors.numpy import load_file

    for i in want.shard_indices():
        a = load_file(str(got.path / f"shard-{i:05d}.safetensors"))
        b = load_file(str(want.path / f"shard-{i:05d}.safetensors"))
        assert a.keys() == b.keys()
        for k in a:
            assert np.array_equal(a[k], b[k]), f"shard {i} {k} differs"
    assert not list(got.path.glob("*.tmp"))


def test_two_actors_write_the_store_one_process_writes(runner, reference, tmp_path):
    assert runner.num_workers == 2 and len(set(runner.worker_pids())) == 2
    store = collect_distributed("embedded", TASK, PROBLEMS, str(tmp_path / "s"), CFG, runner=runner, progress=False)
    _assert_same_store(store, reference)
    assert sum(r["greedy"] for r in store.samples()) == CFG.n_problems


def test_actors_killed_mid_shard_have_their_shards_retried(runner, reference, tmp_path):
    killed: list[int] = []
    started = runner.workers_started

    def kill_a_busy_worker(index: int) -> None:
        if not killed:  # after the first commit the freed actor has just been handed the next shard
            busy = runner.in_flight()
            assert busy, "the kill should land mid-run"
            pid = busy[max(busy)]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    store = collect_distributed("embedded", TASK, PROBLEMS, str(tmp_path / "s"), CFG, runner=runner,
                                progress=False, on_shard=kill_a_busy_worker)
    assert killed
    assert runner.workers_started == started + 1  # the dead actor was replaced ...
    assert not set(killed) & set(runner.worker_pids())
    _assert_same_store(store, reference)  # ... and their shards collected again, once


class _DriverDied(Exception):
    pass


def test_an_interrupted_driver_resumes_from_the_store(runner, reference, tmp_path):
    out = str(tmp_path / "s")

    seen = []

    def die_after_three(index: int) -> None:  # the last shard is still running on an actor
        seen.append(index)
        if len(seen) == 3:
            raise _DriverDied

    with pytest.raises(_DriverDied):
        collect_distributed("embedded", TASK, PROBLEMS, out, CFG, runner=runner, progress=False,
                            on_shard=die_after_three)
    assert TraceStore(out).shard_indices() == sorted(seen)
    committed = []
    store = collect_distributed("embedded", TASK, PROBLEMS, out, CFG, runner=runner, progress=False,
                                on_shard=committed.append)
    assert committed == sorted(set(range(N_SHARDS)) - set(seen))  # committed shards are not collected again
    _assert_same_store(store, reference)


def test_cli_driver_sigkilled_mid_run_resumes_with_nothing_lost_or_duplicated(reference, tmp_path):
    out = tmp_path / "killed"
    one_process = [sys.executable, "-m", "thinkctl.cli", "collect", "--model", "embedded", "--task", "arith",
                   "--out", str(out), "--n", str(CFG.n_problems), "--seed", str(CFG.seed),
                   "--samples", str(CFG.samples), "--every", str(CFG.every),
                   "--max-new-tokens", str(CFG.max_new_tokens), "--batch-size", str(CFG.batch_size),
                   "--shard-problems", str(CFG.shard_problems), "--no-progress"]
    on_ray = one_process + ["--ray", "local", "--ray-workers", "2"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # its own process group: the driver and the local Ray instance it started die together, as on a crash
    proc = subprocess.Popen(on_ray, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not list(out.glob("shard-*.jsonl")) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    n_before = len(TraceStore(out).shard_indices())
    assert 1 <= n_before < N_SHARDS, f"the kill should land mid-run; driver's stderr: {err.decode()[-2000:]}"
    # resumed here in one process (the store is the same either way; resuming on Ray is tested above)
    done = subprocess.run(one_process, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert f"{CFG.n_problems * CFG.samples} samples of {CFG.n_problems} problems" in done.stdout
    _assert_same_store(TraceStore(out), reference)
    assert json.loads((out / "config.json").read_text())["model"]["name"] == "thinkctl-embedded"


def test_a_runner_built_for_another_config_is_refused(runner, tmp_path):
    from dataclasses import replace

    with pytest.raises(ValueError, match="the runner's workers collect task 'arith' with"):
        collect_distributed("embedded", TASK, PROBLEMS, str(tmp_path / "s"), replace(CFG, every=4), runner=runner,
                            progress=False)
    assert not (tmp_path / "s").exists()
