"""thinkctl.eval.evaluate: summaries with intervals, matched-compute comparison, resumable rows, and the CLI."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from thinkctl.cli import main
from thinkctl.controller.core import ControllerResult
from thinkctl.controller.strategies import STRATEGIES
from thinkctl.eval.evaluate import evaluate, matched_compute, oracle_rows, pareto_plot, summarize


def _rows(name, correct, tokens, level=1):
    return [{"problem_id": f"p{i}", "strategy": name, "correct": c, "tokens": t, "samples": 1, "level": level,
             "route": name} for i, (c, t) in enumerate(zip(correct, tokens))]


def test_summary_follows_the_design_schema_with_bootstrap_intervals():
    rows = _rows("fixed@64", [1, 0, 1, 1], [10, 20, 30, 40]) + _rows("sc@4", [1, 1, 1, 0], [100, 100, 100, 100])
    s = summarize(rows, n_boot=500)
    assert set(s) == {"fixed@64", "sc@4"}
    f = s["fixed@64"]
    assert f["accuracy"] == 0.75 and f["tokens_mean"] == 25.0 and f["samples_mean"] == 1.0 and f["n"] == 4
    lo, hi = f["ci95"]
    assert 0 <= lo <= 0.75 <= hi <= 1
    assert f["tokens_ci95"][0] <= 25 <= f["tokens_ci95"][1]
    assert f["accuracy_by_level"] == {"1": 0.75}


def test_matched_compute_interpolates_each_family_at_the_adaptive_tokens():
    summary = {
        "fixed@64": {"tokens_mean": 100.0, "accuracy": 0.40},
        "fixed@256": {"tokens_mean": 300.0, "accuracy": 0.60},
        "sc@4": {"tokens_mean": 400.0, "accuracy": 0.70},
        "adaptive": {"tokens_mean": 200.0, "accuracy": 0.55},
    }
    mc = matched_compute(summary)
    assert mc["fixed"]["accuracy_at_matched_tokens"] == pytest.approx(0.50)
    assert mc["fixed"]["how"] == "interpolated" and mc["fixed"]["target_at_least_as_accurate"]
    assert mc["sc"]["accuracy_at_matched_tokens"] == 0.70 and not mc["sc"]["target_at_least_as_accurate"]
    assert "cheapest point" in mc["sc"]["how"]
    assert matched_compute({"sc@4": summary["sc@4"]}) == {}


@dataclass
class _P:
    id: str
    prompt: str
    answer: str
    level: int = 1


class _Task:
    def is_correct(self, problem, text):
        return text == problem.answer


def test_rows_are_appended_per_block_and_a_killed_run_resumes_without_recomputing(tmp_path):
    calls = []

    def factory(param, name):
        def run(controller, prompts):
            calls.append(list(prompts))
            if controller.get("crash") and len(calls) == 2:
                raise KeyboardInterrupt
            return [ControllerResult(answer=p, text=p, confidence=1.0, tokens=len(p), samples=1, strategy=name)
                    for p in prompts]
        return run

    STRATEGIES.add("echo_test", factory)
    try:
        problems = [_P(f"p{i}", f"q{i}", f"q{i}" if i % 2 == 0 else "x") for i in range(5)]
        path = tmp_path / "rows.jsonl"
        with pytest.raises(KeyboardInterrupt):
            evaluate({"crash": True}, _Task(), problems, ["echo_test"], rows_path=path, block=2)
        assert len(path.read_text().splitlines()) == 2  # the first block was committed
        calls.clear()
        rows = evaluate({}, _Task(), problems, ["echo_test"], rows_path=path, block=2)
        assert [len(c) for c in calls] == [2, 1]  # only the 3 missing problems ran
        assert sorted(r["problem_id"] for r in rows) == [p.id for p in problems]
        assert [r["correct"] for r in sorted(rows, key=lambda r: r["problem_id"])] == [True, False, True, False, True]
        assert len(path.read_text().splitlines()) == 5
    finally:
        STRATEGIES._items.pop("echo_test", None)


def test_oracle_is_the_earliest_right_checkpoint_of_the_greedy_trace():
    class Store:
        def samples(self):
            ck = [{"position": 16, "forced_correct": False}, {"position": 32, "forced_correct": True}]
            return [{"problem_id": "a", "level": 2, "greedy": True, "n_generated": 60, "n_thinking": 50,
                     "n_prompt_tokens": 20, "checkpoints": ck, "correct": True, "gold": "1"},
                    {"problem_id": "a", "level": 2, "greedy": False, "n_generated": 60, "n_thinking": 50,
                     "n_prompt_tokens": 20, "checkpoints": ck, "correct": True, "gold": "1"},
                    {"problem_id": "b", "level": 2, "greedy": True, "n_generated": 40, "n_thinking": 30,
                     "n_prompt_tokens": 20, "checkpoints": [], "correct": False, "gold": "2"}]

    rows = oracle_rows(Store())
    assert [(r["problem_id"], r["correct"], r["tokens"]) for r in rows] == [("a", True, 20 + 32 + 10),
                                                                           ("b", False, 60)]


def test_pareto_plot_returns_the_axes():
    import matplotlib

    matplotlib.use("Agg")
    s = summarize(_rows("fixed@64", [1, 0], [10, 20]) + _rows("fixed@128", [1, 1], [30, 40])
                  + _rows("adaptive", [1, 1], [15, 15]) + _rows("oracle", [1, 1], [5, 5]), n_boot=50)
    ax = pareto_plot(s)
    assert ax.get_xscale() == "log" and len(ax.get_legend().get_texts()) == 3


def test_cli_writes_the_summary_json_rows_and_plot(tmp_path, capsys):
    out = tmp_path / "ev.json"
    rc = main(["evaluate", "--task", "arith", "--seed", "99", "--n", "4", "--level", "1", "--strategies",
               "fixed@32,sc@2,adaptive", "--json", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    doc = json.loads(out.read_text())
    assert set(doc["strategies"]) == {"fixed@32", "sc@2", "adaptive"}
    for s in doc["strategies"].values():
        assert set(s) >= {"accuracy", "tokens_mean", "samples_mean", "n", "ci95"} and s["n"] == 4
        assert 0 <= s["accuracy"] <= 1 and s["tokens_mean"] > 0
    assert doc["strategies"]["sc@2"]["samples_mean"] == 2.0
    assert doc["strategies"]["fixed@32"]["accuracy"] >= 0.75  # level 1 is easy for the embedded model
    rows = [json.loads(x) for x in (tmp_path / "ev.rows.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and (tmp_path / "ev.png").stat().st_size > 1000
    assert doc["config"]["task"] == "arith" and doc["config"]["seed"] == 99


def test_cli_bad_strategy_is_a_one_line_error(tmp_path, capsys):
    rc = main(["evaluate", "--task", "arith", "--seed", "1", "--n", "2", "--strategies", "fixed@x",
               "--json", str(tmp_path / "e.json"), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "fixed@x" in err and "Traceback" not in err


def test_paired_comparison_on_hand_made_rows():
    from thinkctl.eval.evaluate import paired_comparison

    def row(pid, strategy, correct, tokens, thinking):
        return {"problem_id": pid, "strategy": strategy, "correct": correct, "tokens": tokens,
                "thinking_tokens": thinking}

    rows = []
    for i in range(40):
        rows.append(row(f"p{i}", "fixed@1024", i % 2 == 0, 100, 60))
        rows.append(row(f"p{i}", "serial", i % 2 == 0 and i != 0, 80, 30 if i < 20 else 45))
    rows.append(row("only-serial", "serial", True, 10, 5))  # unpaired: left out
    pc = paired_comparison(rows, "serial", "fixed@1024", n_boot=500)
    assert pc["n"] == 40
    assert pc["accuracy_baseline"] == 0.5 and pc["accuracy_target"] == pytest.approx(19 / 40)
    assert pc["accuracy_diff"] == pytest.approx(-1 / 40)
    assert pc["thinking_tokens_target"] == pytest.approx(37.5) and pc["thinking_tokens_baseline"] == 60
    assert pc["thinking_saved_fraction"] == pytest.approx(1 - 37.5 / 60)
    assert pc["tokens_saved_fraction"] == pytest.approx(0.2)
    lo, hi = pc["thinking_saved_ci95"]
    assert lo < pc["thinking_saved_fraction"] < hi and hi - lo < 0.2
    assert pc["accuracy_diff_ci95"][0] <= pc["accuracy_diff"] <= pc["accuracy_diff_ci95"][1]
    # restricted to some problems, or with none in common
    assert paired_comparison(rows, "serial", "fixed@1024", problems=["p1", "p2"])["n"] == 2
    assert paired_comparison(rows, "serial", "sc@16") is None
