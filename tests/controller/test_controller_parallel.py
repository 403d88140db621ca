"""Parallel strategy: waves of samples branching off one shared prefill, vote-based stopping, best-of-N, Dynasor,
and the baselines behind the strategy registry."""

from __future__ import annotations

import math

import pytest

from thinkctl.controller import (STRATEGIES, AdaptiveController, ControllerConfig, DeepConfOnline, HiddenStatePredictor,
                                 get_strategy)
from thinkctl.voting import majority_vote
from thinkctl.generation import chat_prefix
from thinkctl.registry import UnknownNameError
from controller_helpers import (FORCE, ConstantLike, FirstCharTask, RowScript, build_model, events,
                                generated_tokens, script_text)

PROMPT = "What is 2+3?"
CFG = ControllerConfig(token_cap=40, initial_budget=8, max_answer_tokens=4, easy_cap=40, max_samples=12,
                       wave_size=5)
GEN = CFG.token_cap  # this model never emits EOS: every sample thinks to the cap, is forced, answers 4 tokens, EOS


def n_prompt(tok, prompt=PROMPT):
    return len(chat_prefix(tok, prompt))


def test_waves_share_one_prefill_and_count_the_prompt_once(model, tok, counter):
    c = AdaptiveController(model, tok, config=CFG, task=FirstCharTask())
    count = counter(model)
    r = c.run_parallel([PROMPT], stop_rule=False, max_samples=12, wave_size=5)[0]
    n = n_prompt(tok)
    waves = events(r, "sample_wave")
    assert [w["size"] for w in waves] == [5, 5, 2] and r.samples == 12
    # the prompt goes through the model once; every wave branches off its cache: each row feeds only the prompt's
    # last token, then one token per step, for GEN steps (the EOS is never fed back)
    assert count.multi() == [(1, n)]
    assert count.calls[1:] == [(5, 1)] * GEN + [(5, 1)] * GEN + [(2, 1)] * GEN
    assert count.tokens == n + 12 * GEN
    # tokens: the prompt once, +1 per sample (the re-fed last prompt token), every generated token incl. EOS
    assert [w["tokens_so_far"] for w in waves] == [n - 1 + k * (1 + GEN) for k in (5, 10, 12)]
    assert r.tokens == n - 1 + 12 * (1 + GEN) == count.tokens + 12 - 1
    answers = [a for w in waves for a in w["answers"]]
    assert r.answer == majority_vote(answers)
    assert r.confidence == pytest.approx(answers.count(r.answer) / sum(a is not None for a in answers))
    vote = events(r, "vote")[-1]
    assert vote["samples"] == 12 and vote["leader"] == r.answer and vote["stop"] == "budget"


def test_self_consistency_draws_all_samples_in_one_wave(model, tok, counter):
    c = AdaptiveController(model, tok, config=CFG, task=FirstCharTask())
    count = counter(model)
    r = get_strategy("sc@12")(c, [PROMPT])[0]
    assert [w["size"] for w in events(r, "sample_wave")] == [12]
    assert r.samples == 12 and r.strategy == "sc@12"
    assert count.multi() == [(1, n_prompt(tok))] and count.calls[1:] == [(12, 1)] * GEN
    assert r.tokens == count.tokens + 12 - 1


def test_waves_of_a_batch_of_prompts_share_one_prefill(model, tok, counter):
    prompts = [PROMPT, "hi", "Name a prime"]
    c = AdaptiveController(model, tok, config=CFG, task=FirstCharTask())
    count = counter(model)
    results = c.run_parallel(prompts, stop_rule=False, max_samples=7, wave_size=4)
    width = max(n_prompt(tok, p) for p in prompts)
    assert count.multi() == [(3, width)]
    # each wave generates the rows of all prompts together: 3 x 4, then 3 x 3
    assert count.calls[1:] == [(12, 1)] * GEN + [(9, 1)] * GEN
    for p, r in zip(prompts, results):
        assert [w["size"] for w in events(r, "sample_wave")] == [4, 3]
        assert r.tokens == n_prompt(tok, p) - 1 + 7 * (1 + GEN)
    # the prefill processed the padded width for every prompt; the rest is exactly what the results count
    pads = sum(width - n_prompt(tok, p) for p in prompts)
    assert count.tokens == sum(r.tokens for r in results) + pads + len(prompts) - 3 * 7


def test_parallel_samples_differ_and_are_reproducible(model, tok):
    c = AdaptiveController(model, tok, config=CFG, task=FirstCharTask())
    a = get_strategy("sc@5")(c, [PROMPT])[0]
    b = get_strategy("sc@5")(c, [PROMPT])[0]
    assert a.trace == b.trace and a.text == b.text
    assert len(set(events(a, "sample_wave")[0]["answers"])) > 1  # sampled, not five greedy copies


@pytest.mark.parametrize("name", ["adaptive-rule", "esc", "asc"])
def test_settled_vote_stops_after_the_first_wave(model, tok, counter, name):
    cfg = ControllerConfig(token_cap=40, initial_budget=8, max_answer_tokens=4, easy_cap=40, max_samples=40,
                           wave_size=5)
    c = AdaptiveController(model, tok, config=cfg, task=ConstantLike("7"))
    count = counter(model)
    r = (c.run_parallel([PROMPT]) if name == "adaptive-rule" else get_strategy(name)(c, [PROMPT]))[0]
    assert r.samples == 5 and r.answer == "7" and r.confidence == 1.0
    assert len(events(r, "sample_wave")) == 1
    assert events(r, "vote")[-1]["stop"] == "settled" and events(r, "vote")[-1]["votes"] == [["7", 5.0]]
    assert r.tokens == n_prompt(tok) - 1 + 5 * (1 + GEN)
    assert count.calls[1:] == [(5, 1)] * GEN  # one wave only


def test_without_any_vote_a_greedy_answer_is_forced(tok):
    # every sample closes its thinking at once and ends without writing an answer: no votes
    m = build_model(tok, seed=0, script=script_text(tok, "</think><eos>", start=1))
    c = AdaptiveController(m, tok, config=CFG)
    r = get_strategy("sc@5")(c, [PROMPT])[0]
    wave = events(r, "sample_wave")[0]
    assert wave["answers"] == [None] * 5
    assert events(r, "vote")[-1]["leader"] is None and events(r, "vote")[-1]["votes"] == []
    stops = events(r, "stop")
    assert stops[0] == {"event": "stop", "reason": "no_votes"}
    assert stops[1]["budgets"] == CFG.budgets(CFG.easy_cap - FORCE - 4 - 1)  # a serial run under easy_cap
    assert r.samples == 6 and isinstance(r.answer, str)
    n = n_prompt(tok)
    # the samples (2 tokens each), then the greedy run from the same prefill: the prompt still counted once
    assert r.tokens == n - 1 + 5 * (1 + 2) + 1 + generated_tokens(r)


def test_deepconf_drops_low_confidence_samples_and_forces_an_answer_without_votes(model, tok, counter):
    """DeepConf online with a threshold above any group confidence: the warm-up samples run to the end but are
    filtered out of the vote, later samples end as soon as their window is full, and with no vote left a greedy
    answer is forced."""
    class DropAll(DeepConfOnline):
        def threshold(self, lowest):
            return 1e9  # nats: above any group confidence

    cfg = ControllerConfig(token_cap=60, initial_budget=8, max_answer_tokens=4, easy_cap=60, max_samples=4,
                           wave_size=2, confidence_window=8)
    c = AdaptiveController(model, tok, config=cfg, task=FirstCharTask())
    count = counter(model)
    r = c.run_parallel([PROMPT], stop_rule=False, max_samples=4, deepconf=DropAll(warmup=2))[0]
    assert events(r, "deepconf_threshold")[0]["threshold"] == 1e9
    warm, online = events(r, "sample_wave")
    assert warm["kept"] == [False, False] and warm["answers"] == [None, None]
    assert online["kept"] == [False, False] and online["answers"] == [None, None]
    assert events(r, "stop")[0]["reason"] == "no_votes"
    assert r.text.split("</think>\nFinal Answer:")[1] and r.answer
    n = n_prompt(tok)
    assert warm["tokens_so_far"] == n - 1 + 2 * (1 + 60)  # warm-up samples run to the cap
    assert online["tokens_so_far"] == n - 1 + 2 * (1 + 60) + 2 * (1 + 8)  # dropped once the 8-token window is full
    assert r.tokens == online["tokens_so_far"] + 1 + 60
    assert count.tokens == r.tokens + 1 - 5  # 4 samples + 1 greedy row each leave their last token unfed


def test_a_dropped_sample_counts_only_the_tokens_it_generated(model, tok, monkeypatch):
    import thinkctl.stopping

    class DropRowZero(thinkctl.stopping.TokenConfidenceStopping):
        """Drops the first row of a wave after 8 tokens, keeps the others."""

        def _decide(self, input_ids, scores, thinking, n_tokens):
            return [r == 0 and n >= 8 for r, n in enumerate(n_tokens)]

    class KeepWarmup(DeepConfOnline):
        def threshold(self, lowest):
            return -1e9

    monkeypatch.setattr(thinkctl.stopping, "TokenConfidenceStopping", DropRowZero)
    cfg = ControllerConfig(token_cap=40, initial_budget=8, max_answer_tokens=4, easy_cap=40, max_samples=6,
                           wave_size=4)
    c = AdaptiveController(model, tok, config=cfg, task=FirstCharTask())
    r = c.run_parallel([PROMPT], stop_rule=False, max_samples=6, deepconf=KeepWarmup(warmup=2))[0]
    warm, online = events(r, "sample_wave")
    assert online["kept"] == [False, True, True, True]  # the scripted situation
    assert online["tokens_so_far"] - warm["tokens_so_far"] == (1 + 8) + 3 * (1 + GEN)


def test_deepconf_stops_sampling_at_consensus():
    from thinkctl.voting import VoteTally

    dc = DeepConfOnline(consensus=0.75)
    assert dc.should_stop(VoteTally(["a", "a", "a", "b"]), 16) and not dc.should_stop(VoteTally(["a", "b"]), 16)
    assert dc.threshold([1.0, 2.0, 3.0, float("inf")]) == pytest.approx(1.2)  # 10th percentile of the finite ones
    assert dc.threshold([float("inf")]) == float("-inf")
    with pytest.raises(ValueError, match="consensus"):
        DeepConfOnline(consensus=0.4)


def test_strategy_registry_names_and_errors():
    assert STRATEGIES.names() == ["adaptive", "asc", "beam", "best_of", "deepconf", "dvts", "dynasor", "esc", "fixed",
                                  "prune", "sc", "serial"]
    with pytest.raises(UnknownNameError, match="unknown strategy 'bean'; known: adaptive, asc, beam, best_of, "
                                               "deepconf, dvts, dynasor, esc, fixed, prune, sc"):
        get_strategy("bean@4")
    with pytest.raises(ValueError, match="needs a thinking budget, e.g. fixed@256"):
        get_strategy("fixed")
    with pytest.raises(ValueError, match="needs a number of samples, e.g. best_of@256"):
        get_strategy("best_of")
    with pytest.raises(ValueError, match="must be a positive integer, got 'x'"):
        get_strategy("sc@x")
    with pytest.raises(ValueError, match="got 0"):
        get_strategy("sc@0")
    with pytest.raises(ValueError, match="takes no parameter"):
        get_strategy("adaptive@3")


def test_esc_and_asc_take_an_optional_sample_budget(model, tok):
    c = AdaptiveController(model, tok, config=CFG, task=FirstCharTask())
    for name in ("esc@7", "asc@7"):
        r = get_strategy(name)(c, [PROMPT])[0]
        assert r.strategy == name and r.samples <= 7
        sizes = [w["size"] for w in events(r, "sample_wave")]
        assert sizes == [5, 2][:len(sizes)] and sum(sizes) == r.samples


def test_confidence_weighted_vote(model, tok):
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
                           confidence=HiddenStatePredictor(probe, 0, threshold=0.9))
    r = get_strategy("sc@5")(c, [PROMPT])[0]
    assert events(r, "sample_wave")[0]["answers"] == answers  # same seeded samples
    assert events(r, "sample_wave")[0]["scores"] == pytest.approx(weights)
    assert r.answer == answers[loser] == majority_vote(answers, weights) != plain.answer
    assert events(r, "vote")[-1]["weighted"] is True
    assert len(probe.inputs) == 1 and probe.inputs[0].shape == (5, 32)  # one read of the 5 ends of thinking
    assert r.tokens == plain.tokens  # the states come from generation itself: no extra tokens
    assert 0 <= r.confidence <= 1


def test_best_of_picks_the_sample_with_the_highest_score(model, tok):
    seen = []

    def scorer(prompt, text):
        seen.append((prompt, text))
        return float(sum(ch in "aeiouV" for ch in text))

    c = AdaptiveController(model, tok, config=CFG, task=FirstCharTask(), scorer=scorer)
    r = get_strategy("best_of@6")(c, [PROMPT])[0]
    assert len(seen) == 6 and all(p == PROMPT for p, _ in seen)
    scores = [scorer(PROMPT, t) for _, t in seen[:6]]
    best = max(range(6), key=lambda i: (scores[i], -i))
    assert r.text == seen[best][1]
    wave = events(r, "sample_wave")[0]
    assert wave["scores"] == scores
    rec = events(r, "best_of")[-1]
    assert rec["best"] == best and rec["score"] == scores[best] and rec["samples"] == 6
    assert r.answer == rec["leader"] == wave["answers"][best]
    assert len(set(scores)) > 1 and r.samples == 6 and r.strategy == "best_of@6"
    assert r.confidence == pytest.approx(1 / (1 + math.exp(-scores[best])))  # a raw score through a sigmoid
    assert r.tokens == n_prompt(tok) - 1 + 6 * (1 + GEN)


def test_best_of_by_default_scores_with_the_confidence_predictor(model, tok):
    c = AdaptiveController(model, tok, config=CFG, task=FirstCharTask())
    with pytest.raises(ValueError, match="scorer='confidence' needs a confidence predictor"):
        get_strategy("best_of@4")(c, [PROMPT])
    values = [0.2, 0.7, 0.9, 0.1]
    c = AdaptiveController(model, tok, config=CFG, task=FirstCharTask(),
                           confidence=HiddenStatePredictor(RowScript(values), 0, threshold=0.95))
    r = get_strategy("best_of@4")(c, [PROMPT])[0]
    assert events(r, "best_of")[-1]["best"] == 2
    assert r.answer == events(r, "sample_wave")[0]["answers"][2]
    assert r.confidence == pytest.approx(0.9)


def test_dynasor_counts_its_probe_tokens(model, tok, counter):
    cfg = ControllerConfig(token_cap=120, initial_budget=8, max_answer_tokens=4, easy_cap=60)
    c = AdaptiveController(model, tok, config=cfg, task=ConstantLike("7"))  # probed answers always agree
    count = counter(model)
    r = get_strategy("dynasor@8")(c, [PROMPT])[0]
    stop = events(r, "stop")[-1]
    # probes at 8, 16, 24 thinking tokens agree three times: stop at 24
    assert stop["reason"] == "consistent" and stop["thinking_tokens"] == 24
    n = n_prompt(tok)
    # each probe re-reads the prompt and the thinking so far, the forced marker, and generates 4 answer tokens
    probe_tokens = sum(n + k + FORCE + 4 for k in (8, 16, 24))
    assert stop["probe_tokens"] == probe_tokens
    assert r.tokens == n + generated_tokens(r) + probe_tokens
    # the probes' passes are real forward passes: 3 prefills and 3 x 3 decoding steps
    assert count.multi() == [(1, n)] + [(1, n + k + FORCE) for k in (8, 16, 24)]
    assert count.tokens == r.tokens - 3  # each probe's last answer token is never fed back
