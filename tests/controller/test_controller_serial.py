"""Serial strategy: one greedy generation per chunk of prompts under BudgetForcing, confidence probed inside it at
the doubling schedule (no token generated twice, no token spent on a probe), natural stops, the cap, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from thinkctl.controller import AdaptiveController, ControllerConfig, HiddenStatePredictor, get_strategy
from thinkctl.generation import chat_prefix, generate_from_prefixes, reasoning_format
from controller_helpers import (FORCE, FORCE_PLAIN, ScriptedProbe, StateProbe, build_model, build_tokenizer, events,
                                generated_tokens, hidden_states_along, script_text)

PROMPT = "What is 2+3?"
CFG = ControllerConfig(token_cap=200, initial_budget=16, max_answer_tokens=4, easy_cap=100)
THINK_CAP = 200 - FORCE - 4 - 1  # 180: the cap less the forced marker, the answer tokens and the forced EOS
SCHEDULE = [16, 32, 64, 128]  # CFG.budgets(THINK_CAP) without its last entry, the cap
MARKER = "</think>\nFinal Answer:"


def controller(model, tok, values=(0.0,), threshold=0.9, layer=1, cfg=CFG):
    probe = ScriptedProbe(values)
    conf = HiddenStatePredictor(probe, layer, threshold=threshold)
    return AdaptiveController(model, tok, confidence=conf, config=cfg), probe


def ids(tok, text):
    return tok.encode(text, add_special_tokens=False)


def n_prompt(tok, prompt=PROMPT):
    return len(chat_prefix(tok, prompt))


def test_force_marker_length_and_schedule(tok):
    assert len(reasoning_format(tok).force_answer_ids) == FORCE
    assert CFG.budgets(THINK_CAP) == SCHEDULE + [THINK_CAP]


def test_thinking_is_one_generation_and_no_token_is_generated_twice(model, tok, counter):
    c, probe = controller(model, tok, values=(0.0,))  # never confident: thinks to the cap
    count = counter(model)
    r = c.generate([PROMPT])[0]
    n = n_prompt(tok)
    assert [e["thinking_tokens"] for e in events(r, "probe")] == SCHEDULE
    stop = events(r, "stop")[-1]
    assert stop == {"event": "stop", "reason": "cap", "thinking_tokens": THINK_CAP, "budgets": SCHEDULE + [THINK_CAP]}
    # thinking cap + forced marker + max_answer_tokens + forced EOS is exactly the token cap
    assert generated_tokens(r) == CFG.token_cap
    # accounting: the prompt once, its last token re-fed by the row (+1), every generated token including EOS
    assert r.tokens == n - 1 + 1 + CFG.token_cap
    # one prefill, then one single-token pass per generated token but the last (EOS is never fed back): the model
    # processed exactly r.tokens positions, nothing twice
    assert count.multi() == [(1, n)]
    assert count.calls.count((1, 1)) == CFG.token_cap and len(count.calls) == 1 + CFG.token_cap
    assert count.tokens == r.tokens
    # the thinking is exactly the plain one-shot greedy generation of the same length
    ref = generate_from_prefixes(model, [chat_prefix(tok, PROMPT)], pad_id=tok.pad_token_id, eos_ids=[],
                                 max_new_tokens=THINK_CAP, cache_implementation=None)[0]
    assert r.text.startswith(tok.decode(ref, skip_special_tokens=False) + MARKER)
    assert len(ids(tok, r.text)) == THINK_CAP + FORCE + CFG.max_answer_tokens


def test_probes_cost_no_forward_pass(model, tok, counter):
    c, probe = controller(model, tok, values=(0.0,))
    plain = AdaptiveController(model, tok, config=CFG)  # no confidence predictor: nothing to probe
    count = counter(model)
    probed = c.generate([PROMPT])[0]
    probed_calls = list(count.calls)
    count.clear()
    bare = plain.generate([PROMPT])[0]
    assert probe.reads >= len(SCHEDULE) and not events(bare, "probe")
    assert probed_calls == count.calls
    assert probed.text == bare.text and probed.tokens == bare.tokens
    assert bare.confidence == 0.0  # no predictor: no confidence


@pytest.mark.parametrize("check_points, probes", [((10, 50, 100), [10, 50, 100]), ((20, 190), [20])])
def test_probes_follow_explicit_check_points(model, tok, check_points, probes):
    cfg = ControllerConfig(token_cap=200, initial_budget=16, max_answer_tokens=4, easy_cap=100,
                           check_points=check_points)
    c, probe = controller(model, tok, values=(0.0,), cfg=cfg)
    r = c.generate([PROMPT])[0]
    assert [e["thinking_tokens"] for e in events(r, "probe")] == probes
    assert events(r, "stop")[-1]["budgets"] == probes + [THINK_CAP]
    assert events(r, "stop")[-1]["thinking_tokens"] == THINK_CAP


def test_default_initial_budget_probes_at_64_128_256(model, tok):
    cfg = ControllerConfig(token_cap=300, max_answer_tokens=4, easy_cap=100)  # B0 = 64, doubling
    c, probe = controller(model, tok, values=(0.1, 0.2, 0.95), cfg=cfg)
    r = c.generate([PROMPT])[0]
    assert [e["thinking_tokens"] for e in events(r, "probe")] == [64, 128, 256]
    assert events(r, "stop")[-1] == {"event": "stop", "reason": "confident", "thinking_tokens": 256,
                                      "budgets": [64, 128, 256, 300 - FORCE - 4 - 1]}


def test_max_budget_caps_the_thinking(model, tok):
    cfg = ControllerConfig(token_cap=200, initial_budget=16, max_answer_tokens=4, easy_cap=100, max_budget=100)
    c, probe = controller(model, tok, values=(0.0,), cfg=cfg)
    r = c.generate([PROMPT])[0]
    stop = events(r, "stop")[-1]
    assert stop["budgets"] == [16, 32, 64, 100]  # the schedule ends at max_budget ...
    assert [e["thinking_tokens"] for e in events(r, "probe")] == [16, 32, 64]
    assert stop["reason"] == "cap" and stop["thinking_tokens"] == 100  # ... and so should the thinking
    assert generated_tokens(r) == 100 + FORCE + 4 + 1


@pytest.mark.parametrize("layer", [
    0,
    1,
    -1,
])
def test_confidence_read_is_the_hidden_state_of_the_newest_token_at_the_layer(model, tok, layer):
    c, probe = controller(model, tok, values=(0.0, 0.0, 1.0), layer=layer)
    r = c.generate([PROMPT])[0]
    assert [e["thinking_tokens"] for e in events(r, "probe")] == [16, 32, 64]
    thinking = r.text.split("</think>")[0]
    assert len(ids(tok, thinking)) == 64
    hs = hidden_states_along(model, tok, PROMPT, thinking)[layer % 2 + 1]  # (1, T, hidden)
    n = n_prompt(tok)
    # three probes, then one read of the state at the last thinking token (the end of thinking)
    assert len(probe.inputs) == 4
    for k, seen in zip((16, 32, 64, 64), probe.inputs):
        assert seen.shape == (1, 32)
        torch.testing.assert_close(seen, hs[:, n + k - 1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("values, threshold, stop_at", [
    ((0.1, 0.5, 0.95), 0.9, 64),
    ((0.1, 0.5, 0.95), 0.5, 32),
    ((0.95,), 0.9, 16),
    ((0.1, 0.2, 0.3, 0.4), 0.4, 128),  # the last probe before the cap
    ((0.95,), None, THINK_CAP),  # no risk-controlled threshold: never stops on confidence
])
def test_stops_at_the_first_probe_that_reaches_the_threshold(model, tok, values, threshold, stop_at):
    c, probe = controller(model, tok, values=values, threshold=threshold)
    r = c.generate([PROMPT])[0]
    probes = events(r, "probe")
    expected_at = [b for b in SCHEDULE if b <= stop_at]
    assert [e["thinking_tokens"] for e in probes] == expected_at
    expected_conf = [values[min(i, len(values) - 1)] for i in range(len(expected_at))]
    assert [e["score"] for e in probes] == pytest.approx(expected_conf)
    assert all(e["threshold"] == threshold for e in probes)
    stop = events(r, "stop")[-1]
    assert stop["thinking_tokens"] == stop_at
    assert stop["reason"] == ("confident" if stop_at < THINK_CAP else "cap")
    assert r.confidence == pytest.approx(expected_conf[-1])  # the last probe's value
    assert r.strategy == "serial" and r.samples == 1
    assert generated_tokens(r) == stop_at + FORCE + CFG.max_answer_tokens + 1
    assert r.tokens == n_prompt(tok) + generated_tokens(r)
    assert isinstance(r.answer, str) and r.answer  # forced: "Final Answer:" then greedy answer tokens
    assert ids(tok, r.text)[stop_at:stop_at + FORCE] == ids(tok, MARKER)


def test_natural_close_keeps_the_models_own_answer(tok):
    # the model thinks 20 tokens, then writes "</think>\nFinal Answer: 7" and EOS itself
    m = build_model(tok, seed=1, script=script_text(tok, "</think>\nFinal Answer: 7<eos>", start=21))
    c, probe = controller(m, tok, values=(0.3, 0.6))
    r = c.generate([PROMPT])[0]
    assert [e["thinking_tokens"] for e in events(r, "probe")] == [16]
    assert events(r, "stop")[-1] == {"event": "stop", "reason": "closed", "thinking_tokens": 20,
                                      "budgets": SCHEDULE + [THINK_CAP]}
    # the confidence is read at the last thinking token (the scripted probe's second read), not the stale probe's
    assert r.answer == "7" and r.confidence == pytest.approx(0.6) and probe.reads == 2
    assert r.text.endswith("</think>\nFinal Answer: 7") and len(ids(tok, r.text.split("</think>")[0])) == 20
    gen = 20 + len(tok.encode("</think>\nFinal Answer: 7<eos>", add_special_tokens=False))
    assert generated_tokens(r) == gen and r.tokens == n_prompt(tok) + gen  # nothing was forced


def test_confidence_at_the_end_of_thinking_when_no_probe_ran(tok):
    """Thinking that closes before the first probe: the confidence is the predictor at the last thinking token,
    read from the tapped state at no token cost."""
    m = build_model(tok, seed=1, script=script_text(tok, "</think>\nFinal Answer: 7<eos>", start=11))
    probe = StateProbe(2.0)
    c = AdaptiveController(m, tok, confidence=HiddenStatePredictor(probe, 0, threshold=0.9), config=CFG)
    r = c.generate([PROMPT])[0]
    assert not events(r, "probe") and events(r, "stop")[-1]["thinking_tokens"] == 10
    thinking = r.text.split("</think>")[0]
    hs = hidden_states_along(m, tok, PROMPT, thinking)[1]
    expected = torch.sigmoid(2.0 * hs[0, n_prompt(tok) + 10 - 1, 0]).item()
    assert r.confidence == pytest.approx(expected, abs=1e-4)
    # without a predictor the same run reports no confidence
    bare = AdaptiveController(m, tok, config=CFG).generate([PROMPT])[0]
    assert bare.text == r.text and bare.confidence == 0.0


@pytest.mark.parametrize("eos_after", [0, 10])
def test_eos_inside_thinking_is_replaced_by_a_forced_answer(tok, eos_after):
    m = build_model(tok, seed=2, script={eos_after + 1: tok.eos_token_id})  # EOS wins once, while thinking
    c, _ = controller(m, tok)
    r = c.generate([PROMPT])[0]
    assert events(r, "stop")[-1]["reason"] == "eos"
    assert events(r, "stop")[-1]["thinking_tokens"] == eos_after
    assert ids(tok, r.text)[eos_after:eos_after + FORCE] == ids(tok, MARKER)
    assert len(ids(tok, r.text)) == eos_after + FORCE + CFG.max_answer_tokens and r.answer
    gen = eos_after + FORCE + CFG.max_answer_tokens + 1
    assert generated_tokens(r) == gen and r.tokens == n_prompt(tok) + gen


def test_answers_always_returned_and_generation_never_exceeds_the_cap(tok):
    """Property over random models (free to emit EOS and </think>), caps, schedules and probe scripts."""
    rng = np.random.default_rng(0)
    prompts = ["a", "What is 7*8?", "Solve x+1=3", "hello there", "9-4"]
    allowed = {"closed", "eos", "cap", "confident"}
    for trial in range(6):
        cap = int(rng.integers(24, 90))
        cfg = ControllerConfig(token_cap=cap, initial_budget=int(rng.integers(1, 9)), max_answer_tokens=4,
                               easy_cap=cap, prompt_batch=int(rng.integers(1, 6)))
        m = build_model(tok, seed=10 + trial, never_stop=False)
        c, _ = controller(m, tok, values=rng.uniform(0, 1, size=4).round(2).tolist(),
                          threshold=float(rng.uniform(0.5, 1.0)), cfg=cfg)
        results = c.generate(prompts)
        assert len(results) == len(prompts)
        for p, r in zip(prompts, results):
            stop = events(r, "stop")[-1]
            assert stop["reason"] in allowed
            assert 0 <= stop["thinking_tokens"] <= cap - FORCE - 4 - 1
            assert isinstance(r.answer, str) and 0.0 <= r.confidence <= 1.0
            assert generated_tokens(r) <= cap
            assert r.tokens == n_prompt(tok, p) + generated_tokens(r)
            if stop["reason"] != "closed":  # forced: the marker, then a non-empty answer
                assert MARKER in r.text
                assert r.answer


def test_a_forced_answer_survives_a_stray_marker_in_the_answer(tok):
    # forced after 10 thinking tokens; the model writes "</think>" as its second answer token
    m = build_model(tok, seed=0, script={10 + FORCE + 2: tok.convert_tokens_to_ids("</think>")})
    c, _ = controller(m, tok)
    r = get_strategy("fixed@10")(c, [PROMPT])[0]
    assert events(r, "stop")[-1]["reason"] == "cap"
    forced = r.text.split(MARKER, 1)[1]
    assert forced[0] not in " \n<" and forced[1:].startswith("</think>")  # the scripted situation
    assert r.answer and r.answer[0] == forced[0]


def test_fixed_budget_baseline_reads_no_confidence(model, tok):
    c, probe = controller(model, tok, values=(1.0,))
    r = get_strategy("fixed@40")(c, [PROMPT])[0]
    assert not events(r, "probe") and probe.reads == 0
    assert events(r, "stop")[-1] == {"event": "stop", "reason": "cap", "thinking_tokens": 40, "budgets": [40]}
    assert r.strategy == "fixed@40" and r.confidence == 0.0
    assert r.tokens == n_prompt(tok) + 40 + FORCE + 4 + 1
    assert ids(tok, r.text)[40:40 + FORCE] == ids(tok, MARKER)
    # a budget above the cap is clipped to it
    r = get_strategy("fixed@5000")(c, [PROMPT])[0]
    assert events(r, "stop")[-1]["thinking_tokens"] == THINK_CAP and probe.reads == 0
    assert generated_tokens(r) == CFG.token_cap


def test_a_model_without_think_markers_is_forced_with_the_plain_marker():
    plain = build_tokenizer(think_tokens=False)
    assert "<think>" not in plain.decode(chat_prefix(plain, PROMPT))
    assert len(reasoning_format(plain).force_answer_ids) == FORCE_PLAIN
    m = build_model(plain, seed=5)
    c, probe = controller(m, plain, values=(0.0, 1.0))
    r = c.generate([PROMPT])[0]
    assert [e["thinking_tokens"] for e in events(r, "probe")] == [16, 32]
    assert events(r, "stop")[-1]["reason"] == "confident" and events(r, "stop")[-1]["thinking_tokens"] == 32
    assert ids(plain, r.text)[32:32 + FORCE_PLAIN] == ids(plain, "\nFinal Answer:")
    assert "</think>" not in r.text and r.answer
    assert generated_tokens(r) == 32 + FORCE_PLAIN + 4 + 1


BATCH = ["What is 2+3?", "hi", "Solve x+1=3 for x, please", "7*8", "Name a prime"]


def test_a_batch_of_prompts_gives_the_same_greedy_results_as_each_prompt_alone(model, tok, counter):
    """Left-padded prompts in one prefill and one generation; rows stop at different probes (the probe reads the
    state itself) and some run to the cap."""
    def run(prompt_batch):
        cfg = ControllerConfig(token_cap=120, initial_budget=8, max_answer_tokens=4, easy_cap=60,
                               prompt_batch=prompt_batch)
        c = AdaptiveController(model, tok, config=cfg,
                               confidence=HiddenStatePredictor(StateProbe(3.0), 0, threshold=0.8))
        return c.run_serial(BATCH)

    count = counter(model)
    batched = run(5)
    batched_calls = list(count.calls)
    alone = run(1)
    reasons = {events(r, "stop")[-1]["reason"] for r in batched}
    assert reasons == {"cap", "confident"}  # the batch mixes rows that stop early and rows that run on
    assert len({events(r, "stop")[-1]["thinking_tokens"] for r in batched}) >= 3
    for b, a in zip(batched, alone):
        assert b.text == a.text and b.answer == a.answer and b.tokens == a.tokens
        assert b.confidence == pytest.approx(a.confidence, abs=1e-4)
        assert [e["thinking_tokens"] for e in events(b, "probe")] == [e["thinking_tokens"] for e in events(a, "probe")]
    # the batch: one prefill of the padded prompts, then rows x steps single-token passes until the longest row
    # ends; the single-prompt runs: one prefill each and exactly r.tokens positions each
    width = max(n_prompt(tok, p) for p in BATCH)
    steps = max(generated_tokens(r) for r in batched)
    assert [c for c in batched_calls if c[1] > 1] == [(5, width)]
    assert batched_calls[1:] == [(5, 1)] * steps
    alone_calls = count.calls[len(batched_calls):]
    assert [c for c in alone_calls if c[1] > 1] == [(1, n_prompt(tok, p)) for p in BATCH]
    assert sum(b * t for b, t in alone_calls) == sum(r.tokens for r in alone)


def test_prompts_are_prefilled_once_per_chunk(model, tok, counter):
    cfg = ControllerConfig(token_cap=60, initial_budget=8, max_answer_tokens=4, easy_cap=60, prompt_batch=2)
    c = AdaptiveController(model, tok, config=cfg)
    count = counter(model)
    results = get_strategy("fixed@10")(c, BATCH)
    chunks = [BATCH[0:2], BATCH[2:4], BATCH[4:5]]
    assert count.multi() == [(len(ch), max(n_prompt(tok, p) for p in ch)) for ch in chunks]
    gen = 10 + FORCE + 4 + 1
    assert all(generated_tokens(r) == gen for r in results)
    assert count.tokens == sum(len(ch) * (max(n_prompt(tok, p) for p in ch) + gen) for ch in chunks)
    assert [r.tokens for r in results] == [n_prompt(tok, p) + gen for p in BATCH]


def test_prompts_must_be_a_list_of_strings(model, tok):
    c = AdaptiveController(model, tok, config=CFG)
    with pytest.raises(ValueError, match=r"wrap a single prompt as \[prompt\]"):
        c.generate(PROMPT)
    with pytest.raises(ValueError, match="prompts must be strings, got int"):
        c.run_serial([PROMPT, 3])
    assert c.generate([]) == []


@pytest.mark.parametrize("score, outlook_values, stop_at", [
    ("1 - outlook", (0.5, 0.3, 0.05), 64),  # hopeless from the third probe on: stop there, confidence ignored
    ("1 - outlook", (0.5,), THINK_CAP),  # never hopeless: thinks to the cap
    ("max(confidence, 1 - kappa * outlook)", (0.5, 0.5, 0.5, 0.02), 128),  # 1 - 4 * 0.02 = 0.92 >= 0.9
])
def test_the_outlook_stops_thinking_that_cannot_help(model, tok, score, outlook_values, stop_at):
    from thinkctl.controller import Outlook

    conf = HiddenStatePredictor(ScriptedProbe((0.1,)), 1, threshold=0.9)  # never confident
    outlook = Outlook(HiddenStatePredictor(ScriptedProbe(outlook_values), 1), score, kappa=4.0)
    c = AdaptiveController(model, tok, confidence=conf, outlook=outlook, config=CFG)
    r = c.generate([PROMPT])[0]
    stop = events(r, "stop")[-1]
    assert stop["thinking_tokens"] == stop_at
    assert stop["reason"] == ("confident" if stop_at < THINK_CAP else "cap")
    # the trace records the stop score the threshold was compared with
    scores = [e["score"] for e in events(r, "probe")]
    expected = [1 - outlook_values[min(i, len(outlook_values) - 1)] if score == "1 - outlook" else
                max(0.1, 1 - 4.0 * outlook_values[min(i, len(outlook_values) - 1)]) for i in range(len(scores))]
    assert scores == pytest.approx(expected)
    assert r.confidence == pytest.approx(0.1)  # the result's confidence is still P(this answer is right)
    assert r.thinking_tokens == stop_at and r.tokens == n_prompt(tok) + generated_tokens(r)


def test_outlook_needs_a_confidence_predictor_at_the_same_layer(model, tok):
    from thinkctl.controller import Outlook

    outlook = Outlook(HiddenStatePredictor(ScriptedProbe((0.5,)), 1), "1 - outlook")
    with pytest.raises(ValueError, match="same layer"):
        AdaptiveController(model, tok, outlook=outlook, config=CFG)
    with pytest.raises(ValueError, match="same layer"):
        AdaptiveController(model, tok, confidence=HiddenStatePredictor(ScriptedProbe((0.5,)), 0), outlook=outlook,
                           config=CFG)
    with pytest.raises(ValueError, match="kappa"):
        Outlook(HiddenStatePredictor(ScriptedProbe((0.5,)), 1), "max(confidence, 1 - kappa * outlook)", kappa=0.0)
    with pytest.raises(ValueError, match="confidence-only rule has no outlook"):
        Outlook(HiddenStatePredictor(ScriptedProbe((0.5,)), 1), "confidence")
