"""beam@N and dvts@N through the strategy interface, on the embedded model."""

from __future__ import annotations

import json

import pytest
import torch

from thinkctl.cli import main
from thinkctl.controller import AdaptiveController, ControllerConfig, ControllerResult, get_strategy
from thinkctl.controller.search import make_step_scorer
from thinkctl.models import load_model
from thinkctl.process import CallableStepScorer, ExactStepChecker
from thinkctl.tasks import TASKS


@pytest.fixture(scope="module")
def embedded_controller():
    model, tok = load_model("embedded")
    task = TASKS.get("arith")()
    return AdaptiveController(model, tok, config=ControllerConfig(token_cap=160, seed=2), task=task), task


def test_search_strategies_answer_with_the_controllers_accounting(embedded_controller):
    controller, task = embedded_controller
    problems = task.sample(3, seed=12, level=2)
    for name in ("beam@4", "dvts@4"):
        results = get_strategy(name)(controller, [p.prompt for p in problems])
        assert len(results) == 3 and all(isinstance(r, ControllerResult) for r in results)
        for r in results:
            assert r.strategy == name and r.tokens > r.thinking_tokens > 0
            assert r.trace[0]["event"] == "search" and r.trace[0]["scorer"] == "check"
    with pytest.raises(ValueError, match="needs a number of candidates"):
        get_strategy("beam")
    with pytest.raises(ValueError, match="multiple of beam_width"):
        get_strategy("beam@6")(controller, [problems[0].prompt])


def test_step_scorers_by_name_object_or_callable(embedded_controller):
    controller, _ = embedded_controller
    assert isinstance(make_step_scorer("check", controller), ExactStepChecker)
    assert isinstance(make_step_scorer(lambda prompt, steps: [1.0] * len(steps), controller), CallableStepScorer)
    with pytest.raises(ValueError, match="outlook probe"):
        make_step_scorer("process-probe", controller)  # no bundle: nothing to read
    from thinkctl.controller import HiddenStatePredictor
    from thinkctl.process.probe import ProcessProbeScorer

    probe = HiddenStatePredictor(lambda h: torch.sigmoid(h[:, 0]), layer=-1)
    with_probe = AdaptiveController(controller.model, controller.tokenizer, config=controller.config,
                                    task=controller.task, process=probe)
    scorer = make_step_scorer("process-probe", with_probe)
    assert isinstance(scorer, ProcessProbeScorer) and scorer.predictor is probe
    with pytest.raises(ValueError, match="check"):
        make_step_scorer("nonesuch", controller)


def test_evaluate_scorer_option_is_checked_before_any_work(tmp_path, capsys):
    out = tmp_path / "e.json"
    base = ["evaluate", "--task", "arith", "--seed", "9", "--n", "2", "--json", str(out), "--strategies"]
    assert main(base + ["beam@4", "--scorer", "nonesuch"]) == 2
    assert "neither a step scorer" in capsys.readouterr().err
    assert main(base + ["beam@4", "--scorer", "process-probe"]) == 2
    assert "--bundle" in capsys.readouterr().err
    assert main(base + ["beam@4", "--scorer", "json:nope"]) == 2
    assert "cannot import" in capsys.readouterr().err
    assert not out.exists()
    assert main(base + ["beam@4,sc@4", "--token-cap", "96", "--level", "1", "--no-progress"]) == 0
    summary = json.loads(out.read_text())
    assert set(summary["strategies"]) == {"beam@4", "sc@4"} and summary["config"]["scorer"] == "check"
