"""Serial strategy: doubling budgets continued from the KV cache, confidence stops, natural stops, the cap."""

from __future__ import annotations

import pytest
import torch

from thinkctl.controller import AdaptiveController, ControllerConfig, HiddenStatePredictor, get_strategy
from thinkctl.generation import chat_prefix, generate_from_prefixes, reasoning_format
from controller_helpers import ScriptedProbe, build_model, events, generated_tokens

PROMPT = "What is 2+3?"
CFG = ControllerConfig(token_cap=200, initial_budget=16, max_answer_tokens=4, easy_cap=100)
FORCE = 15  # "</think>\nFinal Answer:" in the character tokenizer
THINK_CAP = 200 - FORCE - 4  # 181


def controller(model, tok, values=(0.0,), threshold=0.9, layer=1, cfg=CFG):
    probe = ScriptedProbe(values)
    conf = HiddenStatePredictor(probe, layer, threshold=threshold)
    return AdaptiveController(model, tok, confidence=conf, config=cfg), probe


def test_force_marker_length(tok):
    assert len(reasoning_format(tok).force_answer_ids) == FORCE


def test_doubling_continues_from_the_cache_and_never_recomputes(model, tok, counter):
    c, probe = controller(model, tok, values=(0.0,))  # never confident: thinks to the cap
    count = counter(model)
    r = c.generate([PROMPT])[0]
    n_prompt = len(chat_prefix(tok, PROMPT))
    steps = events(r, "think")
    assert [e["budget"] for e in steps] == [16, 32, 64, 128, THINK_CAP]
    assert [e["new_tokens"] for e in steps] == [16, 16, 32, 64, THINK_CAP - 128]  # only the increment each step
    # after each step the cache holds every token but the newest (which the next call feeds first)
    assert [e["cache_tokens"] for e in steps] == [n_prompt + e["thinking_tokens"] - 1 for e in steps]
    assert probe.reads == 4  # one read between steps, none after the last
    assert events(r, "stop")[-1]["reason"] == "cap"
    # exact accounting: prompt once (+1 re-fed after the prefill), thinking, 4 probe tokens, marker, answer
    assert r.tokens == n_prompt + 1 + THINK_CAP + 4 + FORCE + 4
    # the model processed exactly those tokens except the last answer token, which is never fed back
    assert count.tokens == r.tokens - 1
    # only two multi-token passes: the prompt prefill and the forced marker; nothing was recomputed
    assert [c for c in count.calls if c[1] > 1] == [(1, n_prompt), (1, 1 + FORCE)]
    # and the stepwise thinking is exactly the one-shot greedy generation of the same length
    ref = generate_from_prefixes(model, [chat_prefix(tok, PROMPT)], pad_id=tok.pad_token_id, eos_ids=[],
                                 max_new_tokens=THINK_CAP, cache_implementation=None)[0]
    assert r.text.startswith(tok.decode(ref, skip_special_tokens=False) + "</think>\nFinal Answer:")
    assert generated_tokens(r) == CFG.token_cap


def test_confidence_read_is_the_hidden_state_of_the_newest_token_at_the_layer(model, tok):
    for layer in (0, 1, -1):
        c, probe = controller(model, tok, values=(0.0, 0.0, 1.0), layer=layer)
        r = c.generate([PROMPT])[0]
        thinking = r.text.split("</think>")[0]
        ids = chat_prefix(tok, PROMPT) + tok.encode(thinking, add_special_tokens=False)
        n_prompt = len(chat_prefix(tok, PROMPT))
        with torch.no_grad():
            hs = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
        for k, seen in zip((16, 32, 64), probe.inputs):
            expected = hs[layer % 2 + 1][:, n_prompt + k - 1]
            assert seen.shape == (1, 32)
            torch.testing.assert_close(seen, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("values, threshold, stop_at, reads", [
    ((0.1, 0.5, 0.95), 0.9, 64, 3),
    ((0.1, 0.5, 0.95), 0.5, 32, 2),
    ((0.95,), 0.9, 16, 1),
    ((0.95,), None, THINK_CAP, 4),  # no risk-controlled threshold: never stops on confidence
])
def test_stops_once_confidence_reaches_the_threshold(model, tok, values, threshold, stop_at, reads):
    c, probe = controller(model, tok, values=values, threshold=threshold)
    r = c.generate([PROMPT])[0]
    stop = events(r, "stop")[-1]
    assert stop["thinking_tokens"] == stop_at and probe.reads == reads
    assert stop["reason"] == ("confident" if stop_at < THINK_CAP else "cap")
    assert r.confidence == pytest.approx(values[min(reads, len(values)) - 1])
    assert r.strategy == "serial" and r.samples == 1
    assert isinstance(r.answer, str) and r.answer  # forced: "Final Answer:" then greedy answer tokens
    assert "</think>\nFinal Answer:" in r.text


def test_natural_close_completes_the_marker(tok):
    m = build_model(tok, seed=1, close_first=True)
    c, probe = controller(m, tok, values=(0.0,))
    r = c.generate([PROMPT])[0]
    assert events(r, "stop")[-1] == {"event": "stop", "reason": "closed", "thinking_tokens": 1}
    assert events(r, "answer")[-1]["forced_tokens"] == FORCE - 1  # "</think>" came from the model
    assert probe.reads == 0 and isinstance(r.answer, str)


def test_eos_inside_thinking_is_replaced_by_a_forced_answer(tok):
    m = build_model(tok, seed=2, never_stop=False)
    m.logit_bias = {tok.eos_token_id: 1e4}  # EOS always wins, except where min_new_tokens forbids it
    c, _ = controller(m, tok)
    r = c.generate([PROMPT])[0]
    assert events(r, "stop")[-1]["reason"] == "eos"
    ans = events(r, "answer")[-1]
    assert ans["forced_tokens"] == FORCE and ans["answer_tokens"] == 2  # one forced non-EOS token, then EOS
    assert isinstance(r.answer, str) and r.text.startswith("</think>\nFinal Answer:")
    n_prompt = len(chat_prefix(tok, PROMPT))
    assert r.tokens == n_prompt + 1 + 1 + FORCE + 2  # the discarded EOS still counts


def test_answers_always_returned_and_generation_never_exceeds_the_cap(free_model, tok):
    cfg = ControllerConfig(token_cap=60, initial_budget=8, max_answer_tokens=4, easy_cap=60)
    c, _ = controller(free_model, tok, values=(0.2, 0.4), cfg=cfg)
    prompts = ["a", "What is 7*8?", "Solve x+1=3", "hello there", "9-4"]
    results = c.generate(prompts)
    assert len(results) == len(prompts)
    for r in results:
        assert isinstance(r.answer, str)
        assert 0.0 <= r.confidence <= 1.0
        assert generated_tokens(r) <= cfg.token_cap
        assert events(r, "stop") and events(r, "answer")


def test_fixed_budget_baseline_reads_no_confidence(model, tok):
    c, probe = controller(model, tok, values=(1.0,))
    r = get_strategy("fixed@40")(c, [PROMPT])[0]
    assert [e["budget"] for e in events(r, "think")] == [40]
    assert events(r, "stop")[-1] == {"event": "stop", "reason": "cap", "thinking_tokens": 40}
    assert probe.reads == 0 and r.strategy == "fixed@40"
    assert r.tokens == len(chat_prefix(tok, PROMPT)) + 1 + 40 + FORCE + 4
    # a budget above the cap is clipped to it
    r = get_strategy("fixed@5000")(c, [PROMPT])[0]
    assert events(r, "stop")[-1]["thinking_tokens"] == THINK_CAP


def test_a_model_without_think_markers_is_forced_with_the_plain_marker():
    from controller_helpers import build_tokenizer

    plain = build_tokenizer(think_tokens=False)
    assert "<think>" not in tokenizer_text(plain)
    m = build_model(plain, seed=5)
    c, probe = controller(m, plain, values=(0.0, 1.0))
    r = c.generate([PROMPT])[0]
    assert events(r, "stop")[-1] == {"event": "stop", "reason": "confident", "thinking_tokens": 32}
    assert events(r, "answer")[-1]["forced_tokens"] == len("\nFinal Answer:")
    assert "\nFinal Answer:" in r.text and "</think>" not in r.text and isinstance(r.answer, str)


def tokenizer_text(tokenizer):
    return tokenizer.decode(chat_prefix(tokenizer, PROMPT))
