"""Budget doubling: a serial answer whose model ended its thinking itself with low confidence thinks again after
"Wait" (live, with exact token accounting), and the fit that decides whether a bundle doubles at all."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from thinkctl.controller import AdaptiveController, ControllerConfig, HiddenStatePredictor
from thinkctl.controller.doubling import Doubling, fit_doubling
from thinkctl.controller.routing import Route, RoutingTable
from thinkctl.generation import chat_prefix
from thinkctl.stopping.rules import RowBudgetStopping
from controller_helpers import FORCE, ConstantLike, ScriptedProbe, build_model, events

PROMPT = "What is 2+3?"
CFG = ControllerConfig(token_cap=120, initial_budget=8, max_answer_tokens=4, easy_cap=60, max_samples=10,
                       wave_size=5)
CLOSE_AT = 10  # the scripted model writes </think> as its 10th generated token: 9 thinking tokens


@pytest.fixture(scope="module")
def closing_model(tok):
    return build_model(tok, script={CLOSE_AT: tok.convert_tokens_to_ids("</think>")})


def make(model, tok, confidence, doubling, threshold=0.99):
    conf = HiddenStatePredictor(ScriptedProbe([confidence]), 1, threshold=threshold)
    return AdaptiveController(model, tok, confidence=conf, config=CFG, task=ConstantLike("7"), doubling=doubling)


def test_a_doubtful_answer_thinks_again_after_wait_for_as_long_again(closing_model, tok):
    plain = make(closing_model, tok, 0.2, None).run_serial([PROMPT])[0]
    r = make(closing_model, tok, 0.2, Doubling(0.5)).run_serial([PROMPT])[0]
    assert events(plain, "stop")[-1]["reason"] == "closed" and plain.thinking_tokens == CLOSE_AT - 1
    wait = len(tok("Wait", add_special_tokens=False)["input_ids"])
    assert events(r, "double") == [{"event": "double", "confidence": pytest.approx(0.2), "below": 0.5,
                                    "thinking_tokens": 9, "budget": 9}]
    # 9 tokens, "Wait", then at most 9 more (the doubled budget ends them before the script closes at 10)
    assert events(r, "stop")[-1]["reason"] == "cap"
    assert "Wait" in r.text and r.text.index("Wait") < r.text.index("</think>")
    replaced = plain.tokens - (len(chat_prefix(tok, PROMPT)) - 1) - 1 - 9  # the closing and answer it replaced
    assert r.thinking_tokens == 9 + wait + 9 + replaced + 1
    # every token generated counts: the first generation whole, then "Wait", 9 thinking, the forced answer
    assert r.tokens == plain.tokens + 1 + wait + 9 + FORCE + 4 + 1


def test_a_confident_answer_a_probe_stop_and_the_baselines_do_not_double(closing_model, tok):
    assert not events(make(closing_model, tok, 0.6, Doubling(0.5)).run_serial([PROMPT])[0], "double")
    # the stop rule fires at the first check point (8 tokens): thinking did not end by itself
    stopped = make(closing_model, tok, 0.2, Doubling(0.5), threshold=0.1).run_serial([PROMPT])[0]
    assert events(stopped, "stop")[-1]["reason"] == "confident" and not events(stopped, "double")
    c = make(closing_model, tok, 0.2, Doubling(0.5))
    assert not events(c.run_serial([PROMPT], budgets=[64], use_confidence=False)[0], "double")
    # the adaptive controller doubles on its serial route, not on the easy route
    c.difficulty = HiddenStatePredictor(ScriptedProbe([0.5]), 0)
    c.routing = RoutingTable([], [Route("easy")])
    assert not events(c.generate([PROMPT])[0], "double")
    c.routing = RoutingTable([], [Route("serial")])
    assert events(c.generate([PROMPT])[0], "double")


def test_no_room_under_the_cap_means_no_doubling(closing_model, tok):
    c = make(closing_model, tok, 0.2, Doubling(0.5))
    assert c.continue_after_wait([PROMPT], [[5] * (CFG.token_cap - FORCE - 4 - 1 - 2)]) == [None]


def test_doubling_round_trips_and_a_bad_one_is_refused(tmp_path):
    table = RoutingTable([], [Route("serial")], doubling=Doubling(0.3, {"n_problems": 440}))
    table.save(tmp_path / "r.json")
    assert RoutingTable.load(tmp_path / "r.json").doubling == Doubling(0.3)
    doc = json.loads((tmp_path / "r.json").read_text())
    doc["doubling"] = {"below": None}
    (tmp_path / "r.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="finite 'below'"):
        RoutingTable.load(tmp_path / "r.json")
    with pytest.raises(ValueError, match="must be a Doubling"):
        AdaptiveController(build_model_for_refusal(), None, doubling=0.5)  # type: ignore[arg-type]


def build_model_for_refusal():
    from controller_helpers import build_tokenizer

    return build_model(build_tokenizer())


def test_row_budgets_stop_each_row_at_its_own():
    rule = RowBudgetStopping([2, 5])
    ids = torch.zeros((2, 3), dtype=torch.long)
    rule.begin(ids)
    assert rule.update(ids, None, [True, True], [2, 4]) == [True, False]
    with pytest.raises(ValueError, match="one budget per row"):
        RowBudgetStopping([2]).update(ids, None, [True, True], [1, 1])
    with pytest.raises(ValueError, match="integers >= 1"):
        RowBudgetStopping([0, 3])


def _fit(n, fixed_share, broken_share, seed=0):
    rng = np.random.default_rng(seed)
    conf = rng.uniform(size=n)
    eligible = rng.uniform(size=n) < 0.6
    serial = (rng.uniform(size=n) < conf).astype(float)
    u = rng.uniform(size=n)
    doubled = serial.copy()
    low = eligible & (conf < 0.5)
    doubled[low & (serial == 0) & (u < fixed_share)] = 1.0
    doubled[low & (serial == 1) & (u < broken_share)] = 0.0
    return fit_doubling(conf, eligible, serial, doubled, np.full(n, 30.0))


def test_fit_doubling_keeps_a_real_gain_and_avoids_harm():
    helps = _fit(440, 0.4, 0.0)
    assert helps.meta["kept"] and helps.meta["gain_lower_bound"] > 0 and helps.meta["fixed"] > helps.meta["broken"]
    assert helps.below <= 0.6  # the doubtful ones, not every eligible problem
    harms = _fit(440, 0.0, 0.4)
    assert not harms.meta["kept"] and harms.meta["gain"] <= 0
    assert len(harms.meta["curve"]) >= 5 and harms.meta["detectable_gain"] > 0
    nothing = fit_doubling(np.array([0.1, 0.2]), np.array([False, False]), np.zeros(2), np.zeros(2), np.zeros(2))
    assert not nothing.meta["kept"] and nothing.meta["eligible"] == 0


def test_a_model_without_think_markers_doubles_after_its_own_end_of_output():
    from controller_helpers import build_tokenizer

    plain = build_tokenizer(think_tokens=False)
    m = build_model(plain, script={CLOSE_AT: plain.eos_token_id})  # it ends its output after 9 tokens
    before = make(m, plain, 0.2, None).run_serial([PROMPT])[0]
    assert events(before, "stop")[-1]["reason"] == "eos" and before.thinking_tokens == 9
    r = make(m, plain, 0.2, Doubling(0.5)).run_serial([PROMPT])[0]
    wait = len(plain("\nWait", add_special_tokens=False)["input_ids"])
    assert events(r, "double")[0]["budget"] == 9
    assert "\nWait" in r.text and r.text.count("Final Answer:") == 1 and r.text.index("\nWait") < r.text.index(
        "Final Answer:")
    assert r.tokens == before.tokens + 1 + wait + 9 + len(plain("\nFinal Answer:", add_special_tokens=False)
                                                          ["input_ids"]) + 4 + 1
