"""Routing by difficulty, and the wall-clock deadline."""

from __future__ import annotations

import time

import pytest
import torch

from thinkctl.controller import AdaptiveController, ControllerConfig, HiddenStatePredictor, get_strategy
from thinkctl.generation import chat_prefix
from controller_helpers import ConstantLike, ScriptedProbe, events, generated_tokens

PROMPT = "What is 2+3?"
CFG = ControllerConfig(token_cap=120, initial_budget=8, max_answer_tokens=4, easy_cap=40, max_samples=10,
                       wave_size=5)


def make(model, tok, p_solve, cfg=CFG):
    diff = ScriptedProbe([p_solve])
    conf = HiddenStatePredictor(ScriptedProbe([0.0]), 1, threshold=0.9)
    c = AdaptiveController(model, tok, confidence=conf, difficulty=HiddenStatePredictor(diff, 1), config=cfg,
                           task=ConstantLike("7"))
    return c, diff


@pytest.mark.parametrize("p_solve, route", [(0.95, "easy"), (0.8, "easy"), (0.5, "serial"), (0.1, "parallel")])
def test_routes_by_calibrated_difficulty(model, tok, p_solve, route):
    c, diff = make(model, tok, p_solve)
    r = c.generate([PROMPT])[0]
    assert r.strategy == route
    assert events(r, "route")[0]["p_solve"] == pytest.approx(p_solve) and events(r, "route")[0]["route"] == route
    # the difficulty predictor read the prompt's last hidden state at its layer
    n_prompt = len(chat_prefix(tok, PROMPT))
    with torch.no_grad():
        hs = model(input_ids=torch.tensor([chat_prefix(tok, PROMPT)]), output_hidden_states=True).hidden_states
    torch.testing.assert_close(diff.inputs[0], hs[2][:, n_prompt - 1], atol=1e-4, rtol=1e-4)
    if route == "easy":
        assert generated_tokens(r) <= CFG.easy_cap
        assert events(r, "stop")[-1]["thinking_tokens"] == CFG.easy_cap - 15 - 4
    elif route == "serial":
        assert events(r, "stop")[-1]["thinking_tokens"] == CFG.token_cap - 15 - 4
    else:
        assert r.samples == 5 and r.answer == "7"  # unanimous first wave settles the vote


def test_disallowed_route_falls_back_to_serial(model, tok):
    cfg = ControllerConfig(token_cap=120, initial_budget=8, max_answer_tokens=4, easy_cap=40,
                           strategies=("serial",), max_samples=10, wave_size=5)
    c, _ = make(model, tok, 0.1, cfg)
    assert c.generate([PROMPT])[0].strategy == "serial"


def test_an_expired_deadline_still_answers_every_prompt(model, tok):
    cfg = ControllerConfig(token_cap=120, initial_budget=8, max_answer_tokens=4, easy_cap=40, deadline_s=1e-9,
                           max_samples=10, wave_size=5)
    c, _ = make(model, tok, 0.5, cfg)
    results = c.generate(["a", "b", "c"])
    for r in results:
        assert events(r, "stop")[-1] == {"event": "stop", "reason": "deadline", "thinking_tokens": 0}
        assert isinstance(r.answer, str) and "</think>\nFinal Answer:" in r.text
    r = c.run_parallel([PROMPT])[0]
    assert events(r, "vote")[-1]["stop"] == "deadline" and events(r, "stop")[-1]["reason"] == "deadline"
    assert isinstance(r.answer, str)


def test_deadline_interrupts_a_running_budget_step(tok):
    from controller_helpers import build_model

    slow = build_model(tok, seed=4)
    hook = slow.register_forward_pre_hook(lambda *a, **k: time.sleep(0.01))
    try:
        cfg = ControllerConfig(token_cap=400, initial_budget=300, max_answer_tokens=4, easy_cap=40, deadline_s=0.4)
        c = AdaptiveController(slow, tok, config=cfg)
        t0 = time.monotonic()
        r = get_strategy("fixed@380")(c, [PROMPT])[0]
        elapsed = time.monotonic() - t0
    finally:
        hook.remove()
    stop = events(r, "stop")[-1]
    assert stop["reason"] == "deadline" and 0 < stop["thinking_tokens"] < 380  # ~0.4 s / 10 ms per token
    assert isinstance(r.answer, str) and elapsed < 3.0  # the answer (19 forced + answer tokens) comes after
