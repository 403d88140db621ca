"""ControllerConfig: defaults, budget schedules and clear errors for bad settings."""

from __future__ import annotations

import pytest

from thinkctl.controller import AdaptiveController, ControllerConfig, HiddenStatePredictor
from controller_helpers import ScriptedProbe


def test_defaults_are_valid_and_schedule_doubles_to_the_cap():
    cfg = ControllerConfig()
    assert cfg.deadline_s is None and set(cfg.strategies) == {"easy", "serial", "parallel"}
    assert ControllerConfig(token_cap=300, initial_budget=16).budgets(200) == [16, 32, 64, 128, 200]
    assert ControllerConfig(token_cap=300, initial_budget=16, budget_factor=4).budgets(200) == [16, 64, 200]
    assert ControllerConfig(token_cap=300, initial_budget=16, max_budget=100).budgets(200) == [16, 32, 64, 100]
    assert ControllerConfig(token_cap=300, check_points=(10, 50, 500 - 250)).budgets(120) == [10, 50, 120]
    assert ControllerConfig(token_cap=300, initial_budget=16).budgets(16) == [16]


@pytest.mark.parametrize("kwargs, match", [
    (dict(token_cap=0), "token_cap=0"),
    (dict(initial_budget=-1), "initial_budget=-1"),
    (dict(budget_factor=1), "budget_factor=1"),
    (dict(token_cap=64, initial_budget=64, easy_cap=64), "initial_budget=64 must be < token_cap=64"),
    (dict(max_answer_tokens=2000), "max_answer_tokens=2000"),
    (dict(max_budget=10), "max_budget=10"),
    (dict(check_points=(64, 32)), "strictly increasing"),
    (dict(check_points=(64, 5000)), "token_cap"),
    (dict(wave_size=50, max_samples=40), "wave_size=50 exceeds max_samples=40"),
    (dict(temperature=0.0), "temperature=0.0"),
    (dict(temperature=float("nan")), "temperature=nan"),
    (dict(deadline_s=0), "deadline_s=0"),
    (dict(deadline_s=-1.0), "deadline_s=-1.0"),
    (dict(strategies=("serial", "beam")), "strategies="),
    (dict(strategies=()), "strategies="),
    (dict(easy_above=0.1, hard_below=0.5), "hard_below=0.5 and easy_above=0.1"),
    (dict(easy_cap=5000), "easy_cap=5000"),
])
def test_bad_configurations_raise_clear_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ControllerConfig(**kwargs)


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        ControllerConfig().token_cap = 5  # type: ignore[misc]


def test_controller_rejects_a_cap_without_room_for_thinking(model, tok):
    # the forced marker "</think>\nFinal Answer:" is 15 tokens of this tokenizer; 15 + 4 answer tokens = 19
    cfg = ControllerConfig(token_cap=19, initial_budget=2, max_answer_tokens=4, easy_cap=19)
    with pytest.raises(ValueError, match="token_cap=19 leaves no room for thinking"):
        AdaptiveController(model, tok, config=cfg)


def test_predictor_on_a_layer_the_model_lacks_is_rejected(model, tok):
    with pytest.raises(ValueError, match="layer=5 is out of range for a model with 2 layers"):
        AdaptiveController(model, tok, confidence=HiddenStatePredictor(ScriptedProbe([0.5]), 5, threshold=0.9))
    with pytest.raises(ValueError, match=r"threshold=1.5 must lie in \[0, 1\]"):
        HiddenStatePredictor(ScriptedProbe([0.5]), 1, threshold=1.5)
    with pytest.raises(ValueError, match="config must be a ControllerConfig"):
        AdaptiveController(model, tok, config={"token_cap": 5})  # type: ignore[arg-type]
