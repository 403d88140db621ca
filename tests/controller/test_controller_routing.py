"""Routing by difficulty (thresholds or a fitted routing table), the routing table itself, and the wall-clock
deadline."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from thinkctl.controller import AdaptiveController, ControllerConfig, HiddenStatePredictor, get_strategy
from thinkctl.controller.routing import Route, RouteEstimates, RoutingTable, fit_routing_table, routing_summary
from thinkctl.generation import chat_prefix
from controller_helpers import FORCE, ConstantLike, RowScript, ScriptedProbe, build_model, events, generated_tokens

PROMPTS = ["What is 2+3?", "hi", "Name a prime"]
CFG = ControllerConfig(token_cap=120, initial_budget=8, max_answer_tokens=4, easy_cap=40, max_samples=10,
                       wave_size=5)
EASY_THINK = CFG.easy_cap - FORCE - 4 - 1  # 20
SERIAL_THINK = CFG.token_cap - FORCE - 4 - 1  # 100


def make(model, tok, p_solve, cfg=CFG, routing=None):
    diff = RowScript(p_solve)
    conf = HiddenStatePredictor(ScriptedProbe([0.0]), 1, threshold=0.9)
    c = AdaptiveController(model, tok, confidence=conf, difficulty=HiddenStatePredictor(diff, 1), config=cfg,
                           task=ConstantLike("7"), routing=routing)
    return c, diff


def check_route(r, route, tok, prompt):
    n = len(chat_prefix(tok, prompt))
    assert r.strategy == route
    if route == "easy":
        assert events(r, "stop")[-1]["thinking_tokens"] == EASY_THINK
        assert generated_tokens(r) == CFG.easy_cap and r.tokens == n + CFG.easy_cap
    elif route == "serial":
        assert events(r, "stop")[-1]["thinking_tokens"] == SERIAL_THINK
        assert [e["thinking_tokens"] for e in events(r, "probe")] == [8, 16, 32, 64]
        assert r.tokens == n + CFG.token_cap
    else:
        assert r.samples == 5 and r.answer == "7"  # a unanimous first wave settles the vote
        assert r.tokens == n - 1 + 5 * (1 + CFG.token_cap)


def test_routes_a_batch_by_calibrated_difficulty(model, tok):
    p_solve = [0.95, 0.5, 0.1]
    c, diff = make(model, tok, p_solve)
    results = c.generate(PROMPTS)
    for p, r, route, prompt in zip(p_solve, results, ["easy", "serial", "parallel"], PROMPTS):
        rec = events(r, "route")[0]
        assert rec == {"event": "route", "p_solve": pytest.approx(p), "route": route,
                       "samples": CFG.max_samples if route == "parallel" else None, "table": False}
        assert r.trace[0]["event"] == "route"
        check_route(r, route, tok, prompt)
    # the difficulty predictor read each prompt's last hidden state at its layer, once, from the shared prefill
    # (left-padded; compared with each prompt's own unpadded forward pass)
    assert len(diff.inputs) == 1 and diff.inputs[0].shape == (3, 32)
    for i, prompt in enumerate(PROMPTS):
        with torch.no_grad():
            hs = model(input_ids=torch.tensor([chat_prefix(tok, prompt)]), output_hidden_states=True).hidden_states
        torch.testing.assert_close(diff.inputs[0][i], hs[2][0, -1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("p_solve, route", [(0.8, "easy"), (0.7999, "serial"), (0.2, "serial"),
                                            (0.1999, "parallel")])
def test_threshold_boundaries(model, tok, p_solve, route):
    c, _ = make(model, tok, [p_solve])
    r = c.generate([PROMPTS[0]])[0]
    assert events(r, "route")[0]["route"] == route and r.strategy == route


def test_without_a_difficulty_predictor_every_prompt_goes_serial(model, tok):
    conf = HiddenStatePredictor(ScriptedProbe([0.0]), 1, threshold=0.9)
    c = AdaptiveController(model, tok, config=CFG, confidence=conf)
    for r in c.generate(PROMPTS[:2]):
        assert events(r, "route")[0] == {"event": "route", "p_solve": None, "route": "serial", "samples": None,
                                         "table": False}
        assert r.strategy == "serial"


def test_a_routing_table_replaces_the_thresholds(model, tok):
    table = RoutingTable([0.3, 0.6], [Route("parallel", 5), Route("easy"), Route("serial")])
    p_solve = [0.1, 0.45, 0.9]  # the thresholds would say: parallel, serial, easy
    c, _ = make(model, tok, p_solve, routing=table)
    results = c.generate(PROMPTS)
    for r, route, samples, prompt in zip(results, ["parallel", "easy", "serial"], [5, None, None], PROMPTS):
        assert events(r, "route")[0]["route"] == route and events(r, "route")[0]["table"] is True
        assert events(r, "route")[0]["samples"] == samples
        check_route(r, route, tok, prompt)


def test_the_sample_budget_of_a_parallel_route_is_respected(model, tok):
    table = RoutingTable([], [Route("parallel", 3)])
    c = AdaptiveController(model, tok, config=CFG, difficulty=HiddenStatePredictor(RowScript([0.5]), 0),
                           routing=table)  # no task: random answers never settle the vote
    r = c.generate([PROMPTS[0]])[0]
    assert r.samples == 3 and [w["size"] for w in events(r, "sample_wave")] == [3]
    assert events(r, "vote")[-1]["stop"] in ("budget", "settled")


def test_disallowed_route_falls_back_to_serial(model, tok):
    cfg = ControllerConfig(token_cap=120, initial_budget=8, max_answer_tokens=4, easy_cap=40,
                           strategies=("serial",), max_samples=10, wave_size=5)
    c, _ = make(model, tok, [0.1, 0.95], cfg)
    assert [r.strategy for r in c.generate(PROMPTS[:2])] == ["serial", "serial"]


def test_routing_must_be_a_routing_table(model, tok):
    with pytest.raises(ValueError, match="routing must be a RoutingTable, got dict"):
        AdaptiveController(model, tok, config=CFG, routing={"edges": [], "routes": ["serial"]})


# -- the routing table -----------------------------------------------------------------------------------------


def test_routing_table_json_round_trip(tmp_path):
    table = RoutingTable([0.25, 0.7], [Route("parallel", 8), Route("serial"), Route("easy")],
                         estimates=[{"easy": {"accuracy": 0.5, "tokens": 100.0}}] * 3,
                         meta={"token_budget": 500.0, "feasible": True})
    path = tmp_path / "routing.json"
    table.save(path)
    doc = json.loads(path.read_text())
    assert doc["kind"] == "thinkctl-routing-table" and doc["routes"] == ["parallel@8", "serial", "easy"]
    back = RoutingTable.load(path)
    assert back == table
    for p in (0.0, 0.2499, 0.25, 0.5, 0.7, 1.0):
        assert back.route(p) == table.route(p)
    assert [table.route(p).name for p in (0.0, 0.25, 0.7)] == ["parallel@8", "serial", "easy"]
    assert routing_summary(table) == [{"p_solve": [0.0, 0.25], "route": "parallel@8"},
                                      {"p_solve": [0.25, 0.7], "route": "serial"},
                                      {"p_solve": [0.7, 1.0], "route": "easy"}]


def test_bad_routing_tables_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="len\\(routes\\) == len\\(edges\\) \\+ 1"):
        RoutingTable([0.5], [Route("easy")])
    with pytest.raises(ValueError, match="edges must be increasing"):
        RoutingTable([0.6, 0.4], [Route("easy"), Route("serial"), Route("easy")])
    with pytest.raises(ValueError, match="route kind 'beam'"):
        Route("beam")
    with pytest.raises(ValueError, match="parallel route needs samples >= 1"):
        Route("parallel")
    with pytest.raises(ValueError, match="parallel route needs samples >= 1"):
        Route.parse("parallel@0")
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"kind": "thinkctl-bundle", "edges": [], "routes": ["serial"]}))
    with pytest.raises(ValueError, match="is not a thinkctl routing table"):
        RoutingTable.load(path)
    path.write_text(json.dumps({"kind": "thinkctl-routing-table", "edges": [0.5], "routes": ["serial", "beam"]}))
    with pytest.raises(ValueError, match="route kind 'beam'"):
        RoutingTable.load(path)


CANDIDATES = [Route("easy"), Route("serial"), Route("parallel", 8)]


def synthetic_estimates(n=40, seed=0):
    """Easy problems (high P(solve)): every route is right, easy is cheapest. Hard problems: only the vote helps."""
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(0.0, 0.3, n // 2), rng.uniform(0.7, 1.0, n // 2)])
    hard = p < 0.5
    acc = np.where(hard[:, None], [[0.1, 0.3, 0.8]], [[1.0, 1.0, 1.0]])
    tok = np.where(hard[:, None], [[200.0, 900.0, 4000.0]], [[150.0, 400.0, 3000.0]])
    return RouteEstimates([f"p{i}" for i in range(n)], p, list(CANDIDATES), acc, tok)


def test_fit_routing_table_picks_cheap_routes_for_easy_bins_within_the_budget():
    est = synthetic_estimates()
    # budget for the vote on hard problems and the cheapest route on easy ones: (4000 + 150) / 2
    table = fit_routing_table(est, token_budget=2100, n_bins=2)
    assert len(table.edges) == 1 and 0.3 <= table.edges[0] <= 0.7
    assert [r.name for r in table.routes] == ["parallel@8", "easy"]
    assert table.meta["feasible"] is True
    assert table.meta["expected_tokens"] == pytest.approx(2075) and table.meta["expected_tokens"] <= 2100
    assert table.meta["expected_accuracy"] == pytest.approx(0.9)
    assert table.estimates[1]["easy"] == {"accuracy": 1.0, "tokens": 150.0}
    # a tighter budget cannot afford the vote: the best affordable route on hard problems is serial
    tight = fit_routing_table(est, token_budget=600, n_bins=2)
    assert [r.name for r in tight.routes] == ["serial", "easy"] and tight.meta["feasible"] is True
    assert tight.meta["expected_tokens"] <= 600
    # the table routes by the fitted bins
    assert table.route(0.1).name == "parallel@8" and table.route(0.9).name == "easy"


def test_fit_routing_table_reports_an_infeasible_budget():
    est = synthetic_estimates()
    table = fit_routing_table(est, token_budget=100, n_bins=2)  # below the cheapest table (175)
    assert table.meta["feasible"] is False
    assert [r.name for r in table.routes] == ["easy", "easy"]  # the cheapest table is kept
    assert table.meta["expected_tokens"] == pytest.approx(175)
    with pytest.raises(ValueError, match="token_budget=0 must be positive"):
        fit_routing_table(est, token_budget=0)


# -- the deadline ----------------------------------------------------------------------------------------------


def test_an_expired_deadline_still_answers_every_prompt(model, tok, counter):
    cfg = ControllerConfig(token_cap=120, initial_budget=8, max_answer_tokens=4, easy_cap=40, deadline_s=1e-9,
                           max_samples=10, wave_size=5)
    c, _ = make(model, tok, [0.95, 0.5, 0.1], cfg)  # one prompt per route
    count = counter(model)
    results = c.generate(PROMPTS)
    for r, prompt in zip(results, PROMPTS):
        stop = events(r, "stop")[-1]
        assert stop["reason"] == "deadline" and stop["thinking_tokens"] == 0
        assert isinstance(r.answer, str) and r.answer == "7"
        assert r.text.startswith("</think>\nFinal Answer:")
        assert r.tokens == len(chat_prefix(tok, prompt)) + generated_tokens(r)
        assert generated_tokens(r) <= FORCE + 4 + 1
    # the parallel prompt drew no sample: its vote is empty and its answer forced without thinking
    assert events(results[2], "vote")[-1]["stop"] == "deadline" and events(results[2], "vote")[-1]["samples"] == 0
    assert events(results[2], "stop")[0]["reason"] == "no_votes"
    assert not events(results[2], "sample_wave")
    # one prefill for all prompts, then only forced tokens
    assert len(count.multi()) == 1
    r = c.run_parallel([PROMPTS[0]])[0]
    assert events(r, "vote")[-1]["stop"] == "deadline" and events(r, "stop")[-1]["reason"] == "deadline"
    assert isinstance(r.answer, str) and r.answer


def test_deadline_interrupts_a_running_generation(tok):
    slow = build_model(tok, seed=4)
    hook = slow.register_forward_pre_hook(lambda *a, **k: time.sleep(0.01))
    try:
        cfg = ControllerConfig(token_cap=400, initial_budget=300, max_answer_tokens=4, easy_cap=40, deadline_s=0.4)
        c = AdaptiveController(slow, tok, config=cfg)
        t0 = time.monotonic()
        r = get_strategy("fixed@380")(c, [PROMPTS[0]])[0]
        elapsed = time.monotonic() - t0
    finally:
        hook.remove()
    stop = events(r, "stop")[-1]
    assert stop["reason"] == "deadline" and 0 < stop["thinking_tokens"] < 380  # ~0.4 s / 10 ms per token
    assert r.text.split("</think>")[0] and "</think>\nFinal Answer:" in r.text and r.answer
    assert generated_tokens(r) == stop["thinking_tokens"] + FORCE + 4 + 1
    assert elapsed < 3.0  # the answer (20 forced and answer tokens) comes right after


def test_a_dearer_route_needs_a_supported_gain_not_a_lucky_one():
    """Noise chasing: on 12 problems a vote that is right once more than the cheap route is no evidence; a vote
    that is right on most problems where the cheap route fails is."""
    from thinkctl.controller.routing import Route, RouteEstimates

    n = 12
    cands = [Route("easy"), Route("parallel", 8)]
    lucky = np.zeros((n, 2))
    lucky[0, 1] = 1.0  # one problem better, by chance
    est = RouteEstimates([f"p{i}" for i in range(n)], np.linspace(0.1, 0.2, n), cands, lucky,
                         np.tile([100.0, 800.0], (n, 1)))
    table = fit_routing_table(est, token_budget=10_000, n_bins=1)
    assert [r.name for r in table.routes] == ["easy"] and table.meta["supported"] == [["easy"]]
    real = np.zeros((n, 2))
    real[:9, 1] = 1.0
    est = RouteEstimates(est.problem_ids, est.p_solve, cands, real, est.tokens)
    table = fit_routing_table(est, token_budget=10_000, n_bins=1)
    assert [r.name for r in table.routes] == ["parallel@8"] and table.meta["supported"] == [["easy", "parallel@8"]]
