"""Parallel strategy: waves sharing one prefill, vote-based stopping, baselines through the same interface."""

from __future__ import annotations

import pytest

from thinkctl.controller import STRATEGIES, AdaptiveController, ControllerConfig, get_strategy
from thinkctl.eval.voting import majority_vote
from thinkctl.generation import chat_prefix
from thinkctl.registry import UnknownNameError
from controller_helpers import FirstCharTask, events

PROMPT = "What is 2+3?"
CFG = ControllerConfig(token_cap=40, initial_budget=8, max_answer_tokens=4, easy_cap=40, max_samples=12,
                       wave_size=5)


class ConstantTask:
    def extract_answer(self, text: str) -> str | None:
        return "7"


def test_waves_share_one_prefill_and_count_the_prompt_once(model, tok, counter):
    c = AdaptiveController(model, tok, config=CFG, task=FirstCharTask())
    count = counter(model)
    r = get_strategy("sc@12")(c, [PROMPT])[0]
    n_prompt = len(chat_prefix(tok, PROMPT))
    waves = events(r, "sample_wave")
    assert [w["size"] for w in waves] == [5, 5, 2] and r.samples == 12 and r.strategy == "sc@12"
    # one pass over the prompt; every wave starts by feeding only the prompt's last token to each row
    assert [call for call in count.calls if call[1] > 1] == [(1, n_prompt)]
    assert [call for call in count.calls if call[0] > 1 and call[1] == 1][:1] == [(5, 1)]
    # this model never emits EOS: each sample generates token_cap tokens
    assert r.tokens == n_prompt + 12 * (1 + CFG.token_cap)
    assert count.tokens == r.tokens - 12  # each sample's last token is never fed back
    answers = [a for w in waves for a in w["answers"]]
    assert r.answer == majority_vote(answers)
    assert r.confidence == pytest.approx(answers.count(r.answer) / sum(a is not None for a in answers))


def test_parallel_samples_differ_and_are_reproducible(model, tok):
    c = AdaptiveController(model, tok, config=CFG, task=FirstCharTask())
    a = get_strategy("sc@5")(c, [PROMPT])[0]
    b = get_strategy("sc@5")(c, [PROMPT])[0]
    assert a.trace == b.trace
    assert len(set(events(a, "sample_wave")[0]["answers"])) > 1  # sampled, not five greedy copies


@pytest.mark.parametrize("name", ["adaptive-rule", "esc", "asc"])
def test_settled_vote_stops_after_the_first_wave(model, tok, name):
    cfg = ControllerConfig(token_cap=40, initial_budget=8, max_answer_tokens=4, easy_cap=40, max_samples=40,
                           wave_size=5)
    c = AdaptiveController(model, tok, config=cfg, task=ConstantTask())
    r = (c.run_parallel([PROMPT]) if name == "adaptive-rule" else get_strategy(name)(c, [PROMPT]))[0]
    assert r.samples == 5 and r.answer == "7" and r.confidence == 1.0
    assert events(r, "vote")[-1]["stop"] == "settled"
    assert r.tokens == len(chat_prefix(tok, PROMPT)) + 5 * (1 + 40)


def test_without_any_vote_an_answer_is_forced(model, tok):
    c = AdaptiveController(model, tok, config=CFG)  # no task and no "Final Answer:" in random text: no votes
    r = get_strategy("sc@5")(c, [PROMPT])[0]
    stop = events(r, "stop")[-1]
    assert stop["reason"] == "no_votes" and stop["thinking_tokens"] == CFG.token_cap - 15 - 4
    assert isinstance(r.answer, str) and "</think>\nFinal Answer:" in r.text and r.samples == 5
    n_prompt = len(chat_prefix(tok, PROMPT))
    # samples, then the first sample's thinking re-fed from the shared prefill, the marker and the answer
    assert r.tokens == n_prompt + 5 * (1 + 40) + 1 + stop["thinking_tokens"] + 15 + 4


def test_strategy_registry_names_and_errors():
    assert STRATEGIES.names() == ["adaptive", "asc", "esc", "fixed", "sc"]
    with pytest.raises(UnknownNameError, match="unknown strategy 'beam'; known: adaptive, asc, esc, fixed, sc"):
        get_strategy("beam@4")
    with pytest.raises(ValueError, match="needs a thinking budget, e.g. fixed@256"):
        get_strategy("fixed")
    with pytest.raises(ValueError, match="must be a positive integer, got 'x'"):
        get_strategy("sc@x")
    with pytest.raises(ValueError, match="got 0"):
        get_strategy("sc@0")
    with pytest.raises(ValueError, match="takes no parameter"):
        get_strategy("adaptive@3")


class RowScript:
    """A stand-in probe returning the next ``B`` values of a script for a batch of ``B`` states."""

    def __init__(self, values):
        self.values, self.pos, self.inputs = list(values), 0, []

    def __call__(self, hidden):
        import torch

        self.inputs.append(hidden.clone())
        out = self.values[self.pos:self.pos + hidden.shape[0]]
        self.pos += hidden.shape[0]
        return torch.tensor(out)


def test_confidence_weighted_vote(model, tok):
    from thinkctl.controller import HiddenStatePredictor

    cfg = ControllerConfig(token_cap=40, initial_budget=8, max_answer_tokens=4, easy_cap=40, max_samples=5,
                           wave_size=5, weighted_vote=True)
    plain = get_strategy("sc@5")(AdaptiveController(model, tok, config=cfg, task=FirstCharTask()), [PROMPT])[0]
    answers = events(plain, "sample_wave")[0]["answers"]
    # give all the weight to the sample whose answer lost the unweighted vote
    loser = next(i for i, a in enumerate(answers) if a is not None and a != plain.answer)
    weights = [0.01] * 5
    weights[loser] = 0.99
    probe = RowScript(weights)
    c = AdaptiveController(model, tok, config=cfg, task=FirstCharTask(),
                           confidence=HiddenStatePredictor(probe, 1, threshold=0.9))
    r = get_strategy("sc@5")(c, [PROMPT])[0]
    assert events(r, "sample_wave")[0]["answers"] == answers  # same seeded samples
    assert r.answer == answers[loser] == majority_vote(answers, weights) != plain.answer
    assert events(r, "vote")[-1]["weighted"] is True
    assert probe.inputs[0].shape == (5, 32)
    assert r.tokens == plain.tokens  # the states come from generation itself: no extra tokens
    assert 0 <= r.confidence <= 1
