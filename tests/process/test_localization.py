import json

import numpy as np
import pytest

from thinkctl.cli import main
from thinkctl.process import (AGGREGATIONS, CallableStepScorer, LocalizationConfig, StepLabelled, aggregate,
                              evaluate_step_scorers, first_flagged_step, labelled_solutions, localization_figures)
from thinkctl.process.localization import _flagged_at
from thinkctl.tasks.base import Problem
from thinkctl.traces import read_steps


def test_aggregations_match_their_definitions():
    s = [0.9, 0.5, 0.8]
    assert aggregate(s, "last") == 0.8
    assert aggregate(s, "min") == 0.5
    assert aggregate(s, "prod") == pytest.approx(0.36)
    assert aggregate(s, "mean") == pytest.approx(2.2 / 3)
    assert aggregate([0.5] * 40, "prod") == pytest.approx(0.5 ** 40, rel=1e-9)
    assert aggregate([0.9, 0.0], "prod") == 0.0
    assert np.isnan(aggregate([], "min"))
    with pytest.raises(ValueError, match="last"):
        aggregate(s, "median")
    assert set(AGGREGATIONS.names()) == {"last", "min", "prod", "mean"}


def test_callable_scorer_checks_what_it_returns():
    p = Problem(id="p", prompt="q", answer="1")
    assert CallableStepScorer(lambda prompt, steps: [1.0] * len(steps)).score(p, ["a", "b"]).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="1 scores for 2 steps"):
        CallableStepScorer(lambda prompt, steps: [1.0]).score(p, ["a", "b"])
    with pytest.raises(ValueError, match="non-finite"):
        CallableStepScorer(lambda prompt, steps: [float("nan")] * len(steps)).score(p, ["a"])
    with pytest.raises(ValueError, match="not callable"):
        CallableStepScorer(3)  # type: ignore[arg-type]


def test_first_flagged_step_and_its_vectorised_form_agree():
    assert first_flagged_step(np.array([0.9, 0.4, 0.2]), 0.5) == 1
    assert first_flagged_step(np.array([0.9, 0.6]), 0.5) is None
    rng = np.random.default_rng(0)
    sols = [StepLabelled("p%d" % i, "", ("s",) * n, None, True, True, {"e": rng.random(n)})
            for i, n in enumerate(rng.integers(1, 12, size=60))]
    ts = np.linspace(-0.1, 1.1, 37)
    got = _flagged_at(sols, "e", ts)
    for i, s in enumerate(sols):
        for j, t in enumerate(ts):
            want = first_flagged_step(s.scores["e"], t)
            assert got[i, j] == (-1 if want is None else want)


def test_localization_figures_by_hand():
    fig = localization_figures([2, 1, None, None], [2, 0, None, 3])
    assert fig["accuracy_erroneous"] == 0.5 and fig["accuracy_correct"] == 0.5
    assert fig["f1"] == pytest.approx(0.5)
    assert fig["flagged_too_early"] == 0.5
    lo, hi = fig["accuracy_erroneous_ci95"]
    assert lo < 0.5 < hi


def _synthetic(n=240, seed=0):
    rng = np.random.default_rng(seed)
    sols = []
    for i in range(n):
        k = int(rng.integers(3, 9))
        fe = int(rng.integers(0, k)) if rng.random() < 0.5 else None
        good = np.ones(k)
        if fe is not None:
            good[fe:] = 0.0
        noisy = np.clip(good * 0.6 + 0.2 + rng.normal(0, 0.15, k), 0, 1)
        early = good.copy()
        if fe is not None and fe > 0:
            early[fe - 1] = 0.0  # flags the step before the error
        sols.append(StepLabelled(f"q{i}", f"question {i}", tuple(f"step {j}" for j in range(k)), fe, fe is None,
                                 fe is None, {"perfect": good, "noisy": noisy, "early": early}))
    return sols


def test_a_perfect_evaluator_scores_one_and_chance_scores_about_half():
    r = evaluate_step_scorers(_synthetic(), cfg=LocalizationConfig(n_bootstrap=200))
    ev = r["evaluators"]
    assert ev["perfect"]["step_auroc"]["value"] == 1.0
    assert ev["perfect"]["localization"]["f1"] == 1.0
    assert ev["perfect"]["selection"]["min"]["auroc_process_correct"]["value"] == 1.0
    # the evaluator that flags one step early finds no first error that is not at step 0
    early = ev["early"]["localization"]
    assert early["flagged_too_early"] > 0.5 and early["accuracy_erroneous"] < 0.5
    assert 0.8 < ev["noisy"]["step_auroc"]["value"] < 1.0
    lo, hi = ev["random"]["step_auroc"]["ci95"]
    assert lo < 0.5 < hi
    assert ev["random"]["localization"]["f1"] < ev["noisy"]["localization"]["f1"]
    fixed = evaluate_step_scorers(_synthetic(), cfg=LocalizationConfig(threshold=0.5, n_bootstrap=50))
    assert fixed["evaluators"]["perfect"]["localization"]["f1"] == 1.0
    assert fixed["evaluators"]["perfect"]["localization"]["threshold_rule"] == "fixed"


def test_scorers_run_on_the_steps_and_names_must_be_free():
    sols = _synthetic(80)
    by_text = CallableStepScorer(lambda prompt, steps: [1.0 - 0.1 * j for j in range(len(steps))], name="decay")
    r = evaluate_step_scorers(sols, scorers=[by_text], cfg=LocalizationConfig(n_bootstrap=50))
    assert "decay" in r["evaluators"]
    with pytest.raises(ValueError, match="already taken"):
        evaluate_step_scorers(sols, scorers=[CallableStepScorer(lambda p, s: [1.0] * len(s), name="perfect")])


def _write_steps(path, sols):
    with open(path, "w") as f:
        for i, s in enumerate(sols):
            f.write(json.dumps({"id": str(i), "question": s.prompt, "gt": "1", "steps": list(s.steps),
                                "final_answer": None, "answer_correct": s.answer_correct,
                                "process_correct": s.process_correct, "first_error_step": s.first_error_step,
                                "evaluator_scores": {k: v.tolist() for k, v in s.scores.items()}}) + "\n")


def test_read_steps_round_trip_and_cli(tmp_path, capsys):
    sols = _synthetic(60, seed=3)
    path = tmp_path / "steps.jsonl"
    _write_steps(path, sols)
    back = labelled_solutions(read_steps(path).rows)
    assert [s.first_error_step for s in back] == [s.first_error_step for s in sols]
    assert np.allclose(back[5].scores["noisy"], sols[5].scores["noisy"])
    out = tmp_path / "report.json"
    assert main(["steps-report", "--data", str(path), "--json", str(out), "--n-bootstrap", "50"]) == 0
    rep = json.loads(out.read_text())
    assert rep["files"]["steps.jsonl"]["evaluators"]["perfect"]["localization"]["f1"] == 1.0
    assert "perfect" in capsys.readouterr().out
    assert main(["steps-report", "--data", str(path), "--json", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
