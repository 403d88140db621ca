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
SCRIPTS = ["bench_overhead", "bench_ray", "bench_train", "replay_target"]


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
