"""The scripts of benchmarks/ run as programs: each answers --help, and the CLI no longer ships them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from thinkctl.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["bench_overhead", "bench_ray", "bench_train", "replay_target", "process_search"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_answers_help(name: str) -> None:
    res = _run(str(ROOT / "benchmarks" / f"{name}.py"), "--help")
    assert res.returncode == 0, res.stderr
    assert f"usage: {name}.py" in res.stdout and "--json" in res.stdout


def test_benchmarks_are_not_cli_commands() -> None:
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert not any(name.startswith("bench-") for name in commands)
    assert "replay" in commands


def test_replay_target_script_reads_replay_results(tmp_path: Path) -> None:
    result = {"strategies": {"sc": {"accuracy_delta_vs_sc": 0.0, "samples_mean": 8.0},
                             "esc": {"accuracy_delta_vs_sc": 0.0, "samples_mean": 5.0},
                             "adaptive": {"accuracy_delta_vs_sc": -0.01, "samples_mean": 3.0}}}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(result))
    out = tmp_path / "checks.json"
    res = _run(str(ROOT / "benchmarks" / "replay_target.py"), str(path), "--json", str(out))
    assert res.returncode == 0, res.stderr
    check = json.loads(out.read_text())[str(path)]
    assert check == {"accuracy_within_tolerance_of_sc": False, "tolerance": 0.005, "fewer_samples_than_esc": True}
    res = _run(str(ROOT / "benchmarks" / "replay_target.py"), str(path), "--tolerance", "0.02")
    assert res.returncode == 0 and "accuracy_within_tolerance_of_sc=True" in res.stdout
    res = _run(str(ROOT / "benchmarks" / "replay_target.py"), str(tmp_path / "missing.json"))
    assert res.returncode == 2 and "not found" in res.stderr


def test_process_search_pools_runs_and_pairs_by_problem(tmp_path: Path) -> None:
    runs = []
    for level, (beam_ok, sc_ok) in enumerate([([1, 1, 0, 1], [0, 1, 0, 0]), ([1, 0, 1, 1], [1, 0, 0, 0])], start=3):
        rows = tmp_path / f"l{level}.rows.jsonl"
        with rows.open("w") as f:
            for i, (b, s) in enumerate(zip(beam_ok, sc_ok)):
                for name, ok, tokens in (("beam@8", b, 90), ("sc@8", s, 100)):
                    f.write(json.dumps({"problem_id": f"arith-{i}", "level": level, "strategy": name,
                                        "correct": bool(ok), "tokens": tokens, "thinking_tokens": tokens - 10,
                                        "samples": 8}) + "\n")
        run = tmp_path / f"l{level}.json"
        run.write_text(json.dumps({"config": {"task": "arith", "level": level, "seed": 1, "n": 4,
                                              "strategies": ["beam@8", "sc@8"], "rows": str(rows)}}))
        runs.append(str(run))
    out = tmp_path / "pooled.json"
    res = _run(str(ROOT / "benchmarks" / "process_search.py"), "--runs", *runs, "--pairs", "beam@8:sc@8",
               "--json", str(out))
    assert res.returncode == 0, res.stderr
    pc = json.loads(out.read_text())["paired"]["beam@8_vs_sc@8"]
    assert pc["n"] == 8 and pc["accuracy_diff"] == (6 - 2) / 8 and pc["at_matched_tokens_or_fewer"]
    assert abs(pc["tokens_saved_fraction"] - 0.1) < 1e-12
    bad = _run(str(ROOT / "benchmarks" / "process_search.py"), "--runs", runs[0], "--pairs", "beam@8",
               "--json", str(out))
    assert bad.returncode == 2 and "target:baseline" in bad.stderr
