"""Escalation: a serial answer whose calibrated confidence is low goes on to a vote (live, and fitted from traces)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from thinkctl.controller import AdaptiveController, ControllerConfig, HiddenStatePredictor
from thinkctl.controller.escalation import (Escalation, EscalationData, escalation_data, fit_escalation,
                                            simulate_vote)
from thinkctl.controller.routing import Route, RoutingTable
from thinkctl.generation import chat_prefix
from thinkctl.voting import MajorityStabilityStopping
from controller_helpers import ConstantLike, ScriptedProbe, events

PROMPT = "What is 2+3?"
CFG = ControllerConfig(token_cap=120, initial_budget=8, max_answer_tokens=4, easy_cap=40, max_samples=10,
                       wave_size=5)


def make(model, tok, confidence, escalation, cfg=CFG):
    conf = HiddenStatePredictor(ScriptedProbe([confidence]), 1, threshold=0.99)
    table = RoutingTable([], [Route("serial")], escalation=escalation)
    return AdaptiveController(model, tok, confidence=conf, config=cfg, task=ConstantLike("7"), routing=table)


def test_a_doubtful_serial_answer_goes_on_to_a_vote_that_it_opens(model, tok):
    c = make(model, tok, 0.3, Escalation(0.5, 8))
    r = c.generate([PROMPT])[0]
    serial = c.run_serial([PROMPT])[0]
    assert r.strategy == "serial+parallel"
    esc = events(r, "escalate")
    assert esc == [{"event": "escalate", "confidence": pytest.approx(0.3), "below": 0.5, "samples": 8}]
    # the serial answer votes first; a unanimous first wave of 5 settles the vote of at most 1 + 8
    assert [w["size"] for w in events(r, "sample_wave")] == [5]
    assert r.samples == 6 and r.answer == "7"
    assert events(r, "vote")[-1]["stop"] == "settled"
    # tokens: the serial answer's (prompt once), then 5 samples each feeding the prompt's last token again
    n = len(chat_prefix(tok, PROMPT))
    assert serial.tokens == n + CFG.token_cap
    assert r.tokens == serial.tokens + 5 * (1 + CFG.token_cap)
    assert r.thinking_tokens > serial.thinking_tokens
    assert r.text == serial.text  # the serial answer led the vote from its first vote: its text answers


def test_a_confident_serial_answer_is_kept(model, tok):
    r = make(model, tok, 0.5, Escalation(0.5, 8)).generate([PROMPT])[0]
    assert r.strategy == "serial" and r.samples == 1 and not events(r, "escalate")


def test_no_escalation_when_the_parallel_route_is_not_allowed(model, tok):
    cfg = ControllerConfig(token_cap=120, initial_budget=8, max_answer_tokens=4, easy_cap=40, max_samples=10,
                           wave_size=5, strategies=("serial",))
    r = make(model, tok, 0.1, Escalation(0.5, 8), cfg).generate([PROMPT])[0]
    assert r.strategy == "serial" and not events(r, "escalate")


def test_escalation_round_trips_through_the_routing_table(tmp_path):
    table = RoutingTable([], [Route("serial")], escalation=Escalation(0.42, 8, {"n_problems": 300}))
    table.save(tmp_path / "routing.json")
    back = RoutingTable.load(tmp_path / "routing.json")
    assert back.escalation == Escalation(0.42, 8) and back.escalation.meta == {"n_problems": 300}
    table = RoutingTable([], [Route("serial")])
    table.save(tmp_path / "none.json")
    assert RoutingTable.load(tmp_path / "none.json").escalation is None


@pytest.mark.parametrize("doc, match", [({"below": 0.5}, "'below' and 'samples'"),
                                        ({"below": "x", "samples": 4}, "not a finite number"),
                                        ({"below": 1.5, "samples": 4}, "probability"),
                                        ({"below": 0.5, "samples": 0}, "samples")])
def test_a_bad_escalation_is_refused_with_the_file(tmp_path, doc, match):
    path = tmp_path / "routing.json"
    path.write_text(json.dumps({"kind": "thinkctl-routing-table", "edges": [], "routes": ["serial"],
                                "escalation": doc}))
    with pytest.raises(ValueError, match=match):
        RoutingTable.load(path)


def test_a_nan_confidence_escalates():
    assert Escalation(0.5, 4).escalates(math.nan)
    assert not Escalation(0.5, 4).escalates(0.5)


# -- the vote simulated from recorded samples --------------------------------------------------------------------


def _sim(seed_answer, seed_correct, answers, correct, k, rule=None):
    return simulate_vote(seed_answer, seed_correct, answers, correct, [10] * len(answers), k, wave_size=5,
                         rule=rule, rng=np.random.default_rng(0), draws=50)


def test_simulated_votes_by_hand():
    # three recorded samples drawn without replacement: the vote is seed + all three, whatever their order
    assert _sim("a", True, ["b", "b", "c"], [False, False, False], 3) == (0.0, 33.0)  # b: 2 votes, a: 1
    assert _sim("a", True, ["b", "c", "d"], [False] * 3, 3)[0] == 1.0  # a four-way tie goes to the seed
    assert _sim("a", False, ["b", "b", "c"], [True, True, False], 3)[0] == 1.0  # b: 2 against a: 1
    assert _sim("a", False, ["b", "b", "a"], [True, True, False], 3)[0] == 0.0  # a 2-2 tie goes to the seed, a


def test_a_settled_vote_stops_drawing_samples():
    answers = ["b"] * 10
    acc, extra = _sim("b", True, answers, [True] * 10, 10, rule=MajorityStabilityStopping())
    assert acc == 1.0 and extra == 5 * 11  # one unanimous wave of 5 settles it
    assert _sim("b", True, answers, [True] * 10, 10)[1] == 10 * 11  # no rule: every sample


def _rows(n_problems, sampled):
    serial, samples = [], []
    for i in range(n_problems):
        pid = f"p{i:03d}"
        serial.append({"problem_id": pid, "answer": "x", "correct": False, "tokens": 100})
        samples.append({"problem_id": pid, "greedy": True, "answer": "x", "correct": False, "n_generated": 90})
        for j in range(sampled):
            samples.append({"problem_id": pid, "greedy": False, "answer": "y", "correct": True, "n_generated": 50})
    return serial, samples


def test_escalation_data_offers_only_vote_sizes_the_recorded_samples_estimate():
    serial, samples = _rows(4, 8)
    data = escalation_data(serial, {r["problem_id"]: 0.2 for r in serial}, samples)
    assert data.samples == (4, 8)
    assert np.all(data.vote_correct == 1.0)  # y outvotes the serial x
    serial, samples = _rows(4, 3)
    assert escalation_data(serial, {r["problem_id"]: 0.2 for r in serial}, samples).samples == (3,)
    serial, samples = _rows(4, 1)
    with pytest.raises(ValueError, match="--samples >= 3"):
        escalation_data(serial, {r["problem_id"]: 0.2 for r in serial}, samples)


def _data(n, gain_low, seed=0):
    """Synthetic calibration problems: confidence uniform; the serial answer right with that probability; a vote
    right with probability confidence + gain_low on the less confident half."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(size=n)
    serial = (rng.uniform(size=n) < c).astype(float)
    vote = np.where(c < 0.5, np.clip(c + gain_low, 0, 1), c)[:, None]
    return EscalationData([f"p{i}" for i in range(n)], c, serial, np.full(n, 100.0), (8,), vote,
                          np.full((n, 1), 400.0), np.full(n, 8))


def test_fit_escalation_keeps_a_real_gain_within_the_budget():
    esc = fit_escalation(_data(400, 0.3), token_budget=400.0)
    assert esc is not None and esc.meta["kept"] and esc.meta["gain_lower_bound"] > 0
    assert esc.samples == 8 and 0.3 < esc.below < 0.75  # the doubtful half, not every query
    assert esc.meta["expected_tokens"] <= 400.0 and esc.meta["n_problems"] == 400
    assert esc.meta["detectable_gain"] > 0


def test_fit_escalation_refuses_a_gain_it_cannot_tell_from_noise():
    esc = fit_escalation(_data(400, 0.0), token_budget=400.0)
    assert esc is None or not esc.meta["kept"]


def test_fit_escalation_with_no_room_in_the_budget():
    assert fit_escalation(_data(100, 0.3), token_budget=101.0) is None
    with pytest.raises(ValueError, match="token_budget"):
        fit_escalation(_data(100, 0.3), token_budget=0.0)


def test_decision_lines_say_whether_a_decision_is_used_and_on_what_evidence():
    from thinkctl.controller.routing import decision_line

    esc = fit_escalation(_data(400, 0.3), token_budget=400.0)
    line = decision_line("escalation", {**esc.meta, "below": esc.below, "samples": esc.samples})
    assert line.startswith("escalation: used to a vote of up to 8 samples below confidence")
    assert "chosen on 200 calib problems, tested on 200 others" in line and "lower 95 % bound +" in line
    flat = fit_escalation(_data(400, -0.3), token_budget=400.0)
    assert decision_line("escalation", {**flat.meta, "below": flat.below}).startswith("escalation: not used (")
    assert decision_line("budget doubling", {"kept": False, "reason": "no model"}) == \
        "budget doubling: not used (no model)"
