"""thinkctl evaluate on Ray actors: the same JSONL rows as one process (greedy and sampled strategies), a driver
interrupted mid-run resumes without recomputing the blocks it wrote, and --ray without ray names the extra."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from functools import partial

import pytest

import thinkctl
from thinkctl.controller import ControllerConfig
from dist_helpers import one_torch_thread

# 6 problems in blocks of 3: 2 blocks per strategy, 6 shards; one greedy, one sampled and the adaptive strategy
TASK = thinkctl.tasks.get("arith")
PROBLEMS = TASK.sample(6, seed=31, level=1)
STRATEGIES = ["fixed@32", "sc@2", "adaptive"]
BLOCK = 3
N_SHARDS = 6
CFG = replace(ControllerConfig(seed=31), token_cap=96, easy_cap=min(ControllerConfig().easy_cap, 96))


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _as_set(rows: list[dict]) -> set[str]:
    return {json.dumps(r, sort_keys=True) for r in rows}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The single-process rows, with one torch thread like each CPU actor."""
    from thinkctl.controller import AdaptiveController
    from thinkctl.eval.evaluate import evaluate

    with one_torch_thread():
        model, tokenizer = thinkctl.load_model("embedded")
        controller = AdaptiveController(model, tokenizer, config=CFG, task=TASK)
        path = tmp_path_factory.mktemp("ref") / "rows.jsonl"
        rows = evaluate(controller, TASK, PROBLEMS, STRATEGIES, rows_path=path, block=BLOCK)
    assert len(rows) == len(PROBLEMS) * len(STRATEGIES)
    assert _rows(path) == rows
    return rows


@pytest.fixture(scope="module")
def runner(ray_local):
    from thinkctl.distributed import EvaluateWorker, RayConfig, ShardRunner

    with ShardRunner(partial(EvaluateWorker, "embedded", "arith", CFG), RayConfig(num_workers=2)) as r:
        yield r


def test_two_actors_write_the_rows_one_process_writes(runner, reference, tmp_path):
    from thinkctl.distributed import evaluate_distributed

    assert runner.num_workers == 2 and len(set(runner.worker_pids())) == 2
    path = tmp_path / "rows.jsonl"
    shards = []
    rows = evaluate_distributed("embedded", "arith", PROBLEMS, STRATEGIES, config=CFG, rows_path=path, block=BLOCK,
                                runner=runner, progress=False, on_shard=shards.append)
    assert len(shards) == N_SHARDS
    written = _rows(path)
    assert len(written) == len({(r["problem_id"], r["strategy"]) for r in written}) == len(reference)
    assert _as_set(written) == _as_set(rows) == _as_set(reference)  # every field, sampled strategies included
    assert any(r["samples"] > 1 for r in written)  # sc@2 really sampled


class _DriverDied(Exception):
    pass


def test_an_interrupted_driver_resumes_without_recomputing(runner, reference, tmp_path):
    from thinkctl.distributed import evaluate_distributed

    path = tmp_path / "rows.jsonl"
    seen: list[tuple[str, int]] = []

    def die_after_two(key: tuple[str, int]) -> None:
        seen.append(key)
        if len(seen) == 2:
            raise _DriverDied

    with pytest.raises(_DriverDied):
        evaluate_distributed("embedded", "arith", PROBLEMS, STRATEGIES, config=CFG, rows_path=path, block=BLOCK,
                             runner=runner, progress=False, on_shard=die_after_two)
    before = _rows(path)
    assert len(before) == 2 * BLOCK  # the two blocks committed, nothing of the shards in flight
    done_before = {(r["problem_id"], r["strategy"]) for r in before}
    resumed: list[tuple[str, int]] = []
    rows = evaluate_distributed("embedded", "arith", PROBLEMS, STRATEGIES, config=CFG, rows_path=path, block=BLOCK,
                                runner=runner, progress=False, on_shard=resumed.append)
    assert len(resumed) == N_SHARDS - 2  # the committed blocks were not run again
    written = _rows(path)
    assert written[:len(before)] == before  # appended, never rewritten
    new = {(r["problem_id"], r["strategy"]) for r in written[len(before):]}
    assert not new & done_before
    assert len(written) == len(reference)
    assert _as_set(written) == _as_set(rows) == _as_set(reference)


def test_a_file_half_written_by_one_process_is_finished_on_ray(runner, reference, tmp_path):
    """Resume mirrors evaluate(): a block partly present is recomputed only for its missing problems."""
    from thinkctl.distributed import evaluate_distributed

    path = tmp_path / "rows.jsonl"
    kept = [r for r in reference if r["strategy"] == "fixed@32"][:2]  # 2 of the first block's 3 greedy rows
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    shards: list[tuple[str, int]] = []
    evaluate_distributed("embedded", "arith", PROBLEMS, STRATEGIES, config=CFG, rows_path=path, block=BLOCK,
                         runner=runner, progress=False, on_shard=shards.append)
    written = _rows(path)
    assert written[:2] == kept
    fixed = [r for r in written[2:] if r["strategy"] == "fixed@32"]
    assert len(fixed) == len(PROBLEMS) - 2  # only the missing problems
    assert _as_set(fixed) <= _as_set(reference)  # greedy: the same rows whatever the block


def test_a_runner_built_for_another_config_is_refused(runner, tmp_path):
    from thinkctl.distributed import evaluate_distributed

    with pytest.raises(ValueError, match="the runner's workers evaluate with"):
        evaluate_distributed("embedded", "arith", PROBLEMS, STRATEGIES, config=replace(CFG, seed=5),
                             rows_path=tmp_path / "rows.jsonl", runner=runner, progress=False)
    assert not (tmp_path / "rows.jsonl").exists()


def test_cli_on_its_own_local_ray_writes_the_same_rows_and_summary(reference, tmp_path):
    out = tmp_path / "e.json"
    cmd = [sys.executable, "-m", "thinkctl.cli", "evaluate", "--model", "embedded", "--task", "arith", "--seed", "31",
           "--n", str(len(PROBLEMS)), "--level", "1", "--strategies", ",".join(STRATEGIES), "--token-cap", "96",
           "--block", str(BLOCK), "--json", str(out), "--ray", "local", "--ray-workers", "2", "--no-progress"]
    done = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _as_set(_rows(tmp_path / "e.rows.jsonl")) == _as_set(reference)
    result = json.loads(out.read_text())
    assert set(result["strategies"]) == set(STRATEGIES)
    assert all(s["n"] == len(PROBLEMS) for s in result["strategies"].values())
    assert result["config"]["routing"] is None  # no bundle: no routing table on the actors
    assert (tmp_path / "e.png").is_file()


def test_ray_without_ray_installed_is_a_one_line_error_naming_the_extra(monkeypatch, tmp_path, capsys):
    from thinkctl.cli import main
    from thinkctl.distributed import RAY_INSTALL

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    rc = main(["evaluate", "--model", "embedded", "--task", "arith", "--seed", "31", "--n", "6",
               "--json", str(tmp_path / "e.json"), "--ray", "local", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("thinkctl evaluate: error:")
    assert RAY_INSTALL in err
    assert not (tmp_path / "e.rows.jsonl").exists()  # failed before any work


def test_ray_workers_without_ray_is_refused(tmp_path, capsys):
    from thinkctl.cli import main

    rc = main(["evaluate", "--task", "arith", "--seed", "31", "--n", "6", "--json", str(tmp_path / "e.json"),
               "--ray-workers", "2", "--no-progress"])
    assert rc == 2
    assert "--ray-workers=2 needs --ray ADDRESS" in capsys.readouterr().err
