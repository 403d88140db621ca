"""Stop rules: ProbeStopping, AnswerConsistencyStopping (+ ForcedAnswerProber), TokenConfidenceStopping,
DeadlineStopping; alone as StoppingCriteria and inside BudgetForcing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from transformers import LogitsProcessorList, StoppingCriteriaList

from thinkctl.stopping import (
    AnswerConsistencyStopping,
    BudgetForcing,
    DeadlineStopping,
    ForcedAnswerProber,
    HiddenStateTap,
    ProbeStopping,
    TokenConfidenceStopping,
    build_inputs,
)

PROMPTS = ["2+3?", "what is 17*3?", "x"]


@pytest.fixture()
def llama(models_for):
    return models_for["llama"]


@pytest.fixture()
def tap(llama):
    t = HiddenStateTap(llama, layers=(-1,))
    yield t
    t.remove()


def ids(n_rows: int = 3, length: int = 6) -> torch.Tensor:
    return torch.arange(10, 10 + length).repeat(n_rows, 1)


# ---- ProbeStopping -------------------------------------------------------------------------------------------

def test_probe_schedule_threshold_and_confidence(tap):
    conf = torch.tensor([0.95, 0.5, 0.99])
    calls = []

    def predictor(h):
        calls.append(h.shape)
        return conf

    probe = ProbeStopping(tap, predictor, threshold=0.9, every=4, min_tokens=4)
    x = ids()
    tap.latest[1] = torch.randn(3, 32)
    probe.begin(x)
    thinking = [True, True, False]
    assert probe.update(x, None, thinking, [3, 3, 3]) == [False, False, False] and not calls  # not due
    assert probe.update(x, None, thinking, [4, 4, 4]) == [True, False, False]  # row 2 is not thinking
    assert calls == [(3, 32)]
    torch.testing.assert_close(probe.confidence[:2], conf[:2])
    assert math.isnan(probe.confidence[2]) and probe.probes.tolist() == [1, 1, 0]
    assert probe.update(x, None, thinking, [5, 8, 8]) == [True, False, False]  # sticky
    assert probe.probes.tolist() == [1, 2, 0]


def test_probe_every_row_at_once_and_label_outputs_become_float_confidences(tap):
    # every=1 probes every row at each step (the whole-batch bookkeeping); a predictor returning 0/1 labels
    probe = ProbeStopping(tap, lambda h: torch.tensor([1, 0, 1]), threshold=0.5, every=1)
    x = ids()
    tap.latest[1] = torch.randn(3, 32)
    probe.begin(x)
    assert probe.update(x, None, [True] * 3, [1, 1, 1]) == [True, False, True]
    # rows that fired are no longer probed: the next step probes row 1 alone (the per-row bookkeeping)
    assert probe.update(x, None, [True] * 3, [2, 2, 2]) == [True, False, True]
    assert probe.history == [[(1, 1.0)], [(1, 0.0), (2, 0.0)], [(1, 1.0)]]
    assert all(type(c) is float for row in probe.history for _, c in row)
    assert probe.probes.tolist() == [1, 2, 1] and probe.fired_at.tolist() == [1, -1, 1]
    assert probe.confidence.tolist() == [1.0, 0.0, 1.0]


def test_probe_history_read_mid_generation_stays_current_and_owns_its_numbers(tap):
    # history is built from the per-step log when read: a read between steps must see later probes, and the
    # caller's lists (the tracker updates its counts in place) must not change recorded pairs
    probe = ProbeStopping(tap, lambda h: torch.tensor([0.1, 0.2, 0.3]), threshold=None, every=1)
    x = ids()
    tap.latest[1] = torch.randn(3, 32)
    probe.begin(x)
    counts = [1, 1, 1]
    probe.update(x, None, [True] * 3, counts)
    assert [[n for n, _ in h] for h in probe.history] == [[1], [1], [1]]
    counts[0] = 99  # the caller reuses its list
    probe.update(x, None, [True, False, True], [2, 2, 2])  # row 1 has stopped thinking: rows 0 and 2 only
    assert [[n for n, _ in h] for h in probe.history] == [[1, 2], [1], [1, 2]]
    assert probe.history[2][1] == (2, pytest.approx(0.3)) and probe.probes.tolist() == [2, 1, 2]
    probe.begin(x)
    assert probe.history == [[], [], []]


def test_probe_delimiters_and_none_threshold(tok, tap):
    nl = tok.encode("\n")[0]
    probe = ProbeStopping(tap, lambda h: torch.ones(h.shape[0]), threshold=None, every=None, delimiters=("\n",),
                          tokenizer=tok)
    assert nl in probe.delimiter_ids
    x = torch.tensor([[5, 6, nl], [5, 6, 7]])
    tap.latest[1] = torch.randn(2, 32)
    probe.begin(x)
    assert probe.update(x, None, [True, True], [2, 2]) == [False, False]  # None: record, never stop
    assert probe.probes.tolist() == [1, 0] and probe.confidence[0] == 1.0


def test_probe_accepts_sklearn_estimators_and_checks_output(tap):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(50, 32)), rng.integers(0, 2, 50)
    clf = LogisticRegression().fit(X, y)
    probe = ProbeStopping(tap, clf, threshold=0.5, every=1)
    h = torch.randn(3, 32)
    expected = clf.predict_proba(h.numpy())[:, 1]
    np.testing.assert_allclose(probe.predict(h).numpy(), expected, rtol=1e-5)
    bad = ProbeStopping(tap, lambda h: torch.ones(h.shape[0] + 1), threshold=0.5, every=1)
    with pytest.raises(ValueError, match=r"returned \(4,\) for 3 hidden states"):
        bad.predict(h)


@pytest.mark.parametrize("kwargs, match", [
    (dict(threshold=1.5), "threshold=1.5 must be a probability"),
    (dict(every=0), "every=0 must be a positive int"),
    (dict(every=None), "would never probe"),
    (dict(layer=0), "layer=0 is not tapped"),
    (dict(min_tokens=-1), "min_tokens=-1"),
    (dict(predictor=3), "predictor=3 must be callable"),
])
def test_probe_bad_arguments(tap, kwargs, match):
    args = dict(predictor=lambda h: h[:, 0], threshold=0.5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ProbeStopping(tap, **args)


def test_probe_needs_a_tap():
    with pytest.raises(ValueError, match="must be a HiddenStateTap"):
        ProbeStopping(object(), lambda h: h, threshold=0.5)


def test_probe_with_budget_forcing_forces_answer_per_row(tok, llama, tap):
    """Rows 0 and 2 are confident at their first probe (4 thinking tokens): their answer is forced there."""
    seen = []

    def predictor(h):
        seen.append(h.clone())
        return torch.tensor([0.95, 0.1, 0.97])

    probe = ProbeStopping(tap, predictor, threshold=0.9, every=4)
    bf = BudgetForcing(tok, max_tokens=10, max_answer_tokens=2, stop_rules=[probe])
    batch = build_inputs(tok, PROMPTS, style="none")
    end = tok.convert_tokens_to_ids("</think>")

    def keep_thinking(input_ids, scores):  # the random model must not end thinking by itself
        out = scores.clone()
        out[:, [end, tok.eos_token_id]] = float("-inf")
        return out

    out = llama.generate(**batch, max_new_tokens=30, do_sample=False,
                         logits_processor=LogitsProcessorList([keep_thinking, bf]))
    assert bf.stop_reasons == ["ProbeStopping", "max_tokens", "ProbeStopping"]
    assert bf.think_tokens.tolist() == [4, 10, 4]
    p = batch["input_ids"].shape[1]
    for r, n in enumerate([4, 10, 4]):
        row = out[r, p:].tolist()
        assert row[n] == end and tok.decode(row[n:]).startswith("</think>\nFinal Answer:")
    assert all(h.shape == (3, 32) for h in seen)
    assert probe.probes.tolist() == [1, 2, 1]


def test_probe_alone_as_stopping_criteria_ends_rows(tok, llama, tap):
    probe = ProbeStopping(tap, lambda h: torch.tensor([1.0, 0.0, 1.0]), threshold=0.5, every=3, tokenizer=tok)
    batch = build_inputs(tok, PROMPTS, style="none")
    end = tok.convert_tokens_to_ids("</think>")

    def keep_thinking(input_ids, scores):
        out = scores.clone()
        out[:, [end, tok.eos_token_id, tok.pad_token_id]] = float("-inf")
        return out

    out = llama.generate(**batch, max_new_tokens=8, do_sample=False,
                         logits_processor=LogitsProcessorList([keep_thinking]),
                         stopping_criteria=StoppingCriteriaList([probe]))
    gen = out[:, batch["input_ids"].shape[1]:]
    assert gen.shape[1] == 8  # row 1 runs to the end
    assert (gen[[0, 2], 3:] == tok.pad_token_id).all() and (gen[1] != tok.pad_token_id).all()
    assert probe.stop.tolist() == [True, False, True]


def test_probe_at_schedule_probes_exactly_at_listed_counts_per_row(tap):
    """every=None, at=(2, 5, 9): each row is probed when its own count reaches a listed value, and only then."""
    calls = []
    step = 0

    def predictor(h):
        calls.append(step)
        return torch.tensor([0.2, 0.95, 0.4])

    probe = ProbeStopping(tap, predictor, threshold=0.9, every=None, at=(2, 5, 9))
    assert probe.at == (2, 5, 9) and probe.every is None
    x = ids()
    tap.latest[1] = torch.randn(3, 32)
    probe.begin(x)
    assert probe.fired_at.tolist() == [-1, -1, -1] and probe.history == [[], [], []]
    # row 2 runs 3 tokens behind (it opened thinking later); counts 1..12 for rows 0-1, -2..9 for row 2
    for step in range(1, 13):
        n = [step, step, max(0, step - 3)]
        fired = probe.update(x, None, [True, True, step >= 3], n)
        assert fired == [False, step >= 2, False]
    assert [[c for c, _ in h] for h in probe.history] == [[2, 5, 9], [2], [2, 5, 9]]
    assert probe.history[0] == [(2, pytest.approx(0.2)), (5, pytest.approx(0.2)), (9, pytest.approx(0.2))]
    assert probe.probes.tolist() == [3, 1, 3]
    assert probe.fired_at.tolist() == [-1, 2, -1]  # row 1 fired at its first probe and is not probed again
    assert calls == [2, 5, 8, 9, 12]  # one predictor call per step where some row is due (2, 5, 9 and 5, 8, 12)
    torch.testing.assert_close(probe.confidence, torch.tensor([0.2, 0.95, 0.4]))


def test_probe_at_combines_with_every_and_min_tokens(tap):
    probe = ProbeStopping(tap, lambda h: torch.zeros(h.shape[0]), threshold=None, every=4, at=(3, 6), min_tokens=4)
    x = ids(n_rows=1)
    tap.latest[1] = torch.randn(1, 32)
    probe.begin(x)
    for n in range(1, 14):
        probe.update(x, None, [True], [n])
    assert [c for c, _ in probe.history[0]] == [4, 6, 8, 12]  # 3 is below min_tokens; 4, 8, 12 from every
    assert probe.fired_at.tolist() == [-1]  # threshold=None never fires


def test_probe_fired_at_with_every(tap):
    conf = iter([torch.tensor([0.1, 0.1]), torch.tensor([0.1, 0.99]), torch.tensor([0.99, 0.99])])
    probe = ProbeStopping(tap, lambda h: next(conf), threshold=0.9, every=3)
    x = ids(n_rows=2)
    tap.latest[1] = torch.randn(2, 32)
    probe.begin(x)
    for n in range(1, 10):
        probe.update(x, None, [True, True], [n, n])
    assert probe.fired_at.tolist() == [9, 6]
    assert probe.history[1] == [(3, pytest.approx(0.1)), (6, pytest.approx(0.99))]
    assert probe.stop.tolist() == [True, True]


@pytest.mark.parametrize("at, match", [
    ((), r"at=\(\) is empty"),
    ((4, 2), r"not strictly increasing \(4 then 2\)"),
    ((2, 2), r"not strictly increasing \(2 then 2\)"),
    ((0, 4), "contains 0; every entry must be a positive int"),
    ((-8,), "contains -8"),
    ((1.5, 4), "contains 1.5"),
    ((True, 4), "contains True"),
    ("32", "must be a sequence of thinking-token counts"),
    (32, "must be a sequence of thinking-token counts"),
])
def test_probe_bad_at(tap, at, match):
    with pytest.raises(ValueError, match=match):
        ProbeStopping(tap, lambda h: h[:, 0], threshold=0.5, every=None, at=at)


def test_probe_at_alone_is_a_schedule_but_nothing_is_not(tap):
    assert ProbeStopping(tap, lambda h: h[:, 0], threshold=0.5, every=None, at=[32, 64]).at == (32, 64)
    assert ProbeStopping(tap, lambda h: h[:, 0], threshold=0.5, at=np.array([8, 16])).at == (8, 16)
    with pytest.raises(ValueError, match="neither at= nor delimiters= would never probe"):
        ProbeStopping(tap, lambda h: h[:, 0], threshold=0.5, every=None, at=None)


def test_probe_at_schedule_in_generate_with_left_padding(tok, llama, tap):
    """A real generate: rows reach 4 and 8 thinking tokens at different steps; each is probed exactly there."""
    think = tok.convert_tokens_to_ids("<think>")
    end = tok.convert_tokens_to_ids("</think>")
    opened = build_inputs(tok, ["2+3?", "what is 17*3?"], style="none")["input_ids"].tolist()
    plain = tok.encode("q?\n", add_special_tokens=False)  # no <think>: row 1 opens thinking itself
    rows = [opened[0], plain, opened[1]]
    width = max(len(r) for r in rows)
    input_ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows])
    attention_mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(r) for r in rows])[:, None]).long()
    assert (attention_mask[:, 0] == 0).any()  # left-padded

    steps_at_call = []

    def predictor(h):
        steps_at_call.append(tap.steps)  # forward passes so far: generated tokens + 1
        return torch.tensor([0.1, 0.1, 0.95 if len(steps_at_call) > 1 else 0.1])

    def script(input_ids, scores):  # keep thinking; row 1 writes <think> as its 3rd generated token
        out = scores.clone()
        out[:, [end, tok.eos_token_id]] = float("-inf")
        if input_ids.shape[1] == width + 2:
            out[1] = float("-inf")
            out[1, think] = 0.0
        return out

    probe = ProbeStopping(tap, predictor, threshold=0.9, every=None, at=(4, 8, 16))
    bf = BudgetForcing(tok, max_tokens=10, max_answer_tokens=2, stop_rules=[probe])
    llama.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=24, do_sample=False,
                   logits_processor=LogitsProcessorList([script, bf]))
    # rows 0 and 2 reach 4 and 8 thinking tokens after 4 and 8 generated tokens, row 1 three tokens later
    assert steps_at_call == [5, 8, 9, 12]
    assert [[c for c, _ in h] for h in probe.history] == [[4, 8], [4, 8], [4, 8]]
    assert probe.history[2][1] == (8, pytest.approx(0.95))
    assert probe.fired_at.tolist() == [-1, -1, 8]
    assert probe.probes.tolist() == [2, 2, 2]
    assert bf.think_tokens.tolist() == [10, 10, 8]
    assert bf.stop_reasons == ["max_tokens", "max_tokens", "ProbeStopping"]


def test_probe_alone_reads_delimiters_from_the_newest_tokens(tok, tap):
    """Used as a StoppingCriteria, the rule probes right after a delimiter (newest token read once per step)."""
    nl = tok.encode("\n")[0]
    a = tok.encode("a")[0]
    probe = ProbeStopping(tap, lambda h: torch.tensor([0.2, 0.8]), threshold=0.5, every=None, delimiters=("\n",),
                          tokenizer=tok, think_start=None, think_end=None)
    x = torch.tensor([[5, 6, 7], [5, 6, 7]])
    tap.latest[1] = torch.randn(2, 32)
    done = []
    for col in ([a, a], [nl, a], [a, nl], [nl, a]):
        x = torch.cat([x, torch.tensor(col)[:, None]], dim=1)
        done.append(probe(x, None).tolist())
    assert done == [[False, False], [False, False], [False, True], [False, True]]
    assert [[c for c, _ in h] for h in probe.history] == [[2, 4], [3]]
    assert probe.fired_at.tolist() == [-1, 3]


# ---- AnswerConsistencyStopping -------------------------------------------------------------------------------

def test_consistency_needs_k_agreeing_non_none_answers(tok):
    answers = iter(["7", None, "7", " 7 ", "7", "9"])
    texts = []

    def answer_fn(text):
        texts.append(text)
        return next(answers), 5

    rule = AnswerConsistencyStopping(answer_fn, tok, every=2, k=3)
    prompt = tok.encode("<pad><pad>q<think>\n")
    x = torch.tensor([prompt + tok.encode("ab")])
    rule.begin(x)
    fired = [rule.update(x, None, [True], [n])[0] for n in (1, 2, 4, 6, 8, 10, 12)]
    # probes at 2, 4, ...: 7, None, 7, 7 (normalised), 7 -> the last three agree at n=10; sticky after
    assert fired == [False, False, False, False, False, True, True]
    assert rule.history == [["7", None, "7", "7", "7"]] and rule.answers == ["7"]
    assert rule.probe_tokens.tolist() == [25] and rule.probes.tolist() == [5]
    assert texts[0] == "q<think>\nab"  # left padding removed, special tokens kept


def test_consistency_alone_in_generate_and_prober(tok, llama, tap):
    prober = ForcedAnswerProber(llama, tok, max_answer_tokens=3, extract=lambda s: "const", pause_taps=[tap])
    answer, used = prober(tok.decode(build_inputs(tok, ["2+3?"], style="none")["input_ids"][0]))
    assert answer == "const"
    prompt = len(tok.encode(tok.apply_chat_template([{"role": "user", "content": "2+3?"}], tokenize=False,
                                                    add_generation_prompt=True)))
    prefill = prompt + len(tok.encode("</think>\nFinal Answer:"))
    assert prefill < used <= prefill + 3  # the probe's prefill plus 1..3 generated tokens

    rule = AnswerConsistencyStopping(prober, tok, every=2, k=2)
    batch = build_inputs(tok, PROMPTS, style="none")
    end = tok.convert_tokens_to_ids("</think>")

    def keep_thinking(input_ids, scores):
        out = scores.clone()
        out[:, [end, tok.eos_token_id, tok.pad_token_id]] = float("-inf")
        return out

    steps_before = tap.steps
    out = llama.generate(**batch, max_new_tokens=10, do_sample=False,
                         logits_processor=LogitsProcessorList([keep_thinking]),
                         stopping_criteria=StoppingCriteriaList([rule]))
    assert out.shape[1] - batch["input_ids"].shape[1] == 4  # probes at 2 and 4 tokens agree
    assert rule.answers == ["const"] * 3 and (rule.probe_tokens > 0).all()
    assert tap.steps - steps_before == 4  # the probes' own forward passes were not recorded


def test_consistency_with_budget_forcing_forces_answer(tok, llama):
    rule = AnswerConsistencyStopping(lambda text: "5", tok, every=3, k=2)
    bf = BudgetForcing(tok, max_tokens=20, max_answer_tokens=1, stop_rules=[rule])
    batch = build_inputs(tok, PROMPTS, style="none")
    end = tok.convert_tokens_to_ids("</think>")

    def keep_thinking(input_ids, scores):
        out = scores.clone()
        out[:, [end, tok.eos_token_id]] = float("-inf")
        return out

    llama.generate(**batch, max_new_tokens=40, do_sample=False,
                   logits_processor=LogitsProcessorList([keep_thinking, bf]))
    assert bf.stop_reasons == ["AnswerConsistencyStopping"] * 3
    assert bf.think_tokens.tolist() == [6, 6, 6]


@pytest.mark.parametrize("kwargs, match", [
    (dict(every=0), "every=0"), (dict(k=0), "k=0"), (dict(answer_fn=None), "must be callable"),
])
def test_consistency_bad_arguments(tok, kwargs, match):
    args = dict(answer_fn=lambda t: None, tokenizer=tok)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        AnswerConsistencyStopping(**args)


# ---- TokenConfidenceStopping ---------------------------------------------------------------------------------

def test_token_confidence_is_negative_mean_topk_logprob():
    rule = TokenConfidenceStopping(threshold=1.0, window=4, top_k=3)
    scores = torch.randn(2, 10)
    expected = -torch.log_softmax(scores, -1).topk(3, dim=-1).values.mean(-1)
    torch.testing.assert_close(rule.token_confidence(scores), expected)
    masked = scores.clone()
    masked[0, masked[0].argsort()[:8]] = float("-inf")  # only 2 finite entries: the mean ignores -inf
    lp = torch.log_softmax(masked[0], -1)
    torch.testing.assert_close(rule.token_confidence(masked)[0], -lp[torch.isfinite(lp)].mean())


def test_sliding_window_group_confidence_matches_reference():
    rng = np.random.default_rng(0)
    window, top_k, threshold = 4, 3, 1.7
    rule = TokenConfidenceStopping(threshold=threshold, window=window, top_k=top_k)
    x = ids(2)
    rule.begin(x)
    history = [[], []]
    fired_at = [None, None]
    for step in range(12):
        scores = torch.tensor(rng.normal(scale=rng.uniform(0.5, 3.0), size=(2, 20)), dtype=torch.float32)
        thinking = [True, step % 3 != 0]  # row 1 skips some steps (not thinking): they do not enter its window
        conf = rule.token_confidence(scores).tolist()
        fired = rule.update(x, scores, thinking, [step, step])
        for r in range(2):
            if thinking[r]:
                history[r].append(conf[r])
            if history[r]:
                ref = float(np.mean(history[r][-window:]))
                assert rule.group_confidence[r].item() == pytest.approx(ref, rel=1e-5)
            should = len(history[r]) >= window and np.mean(history[r][-window:]) < threshold
            if should and fired_at[r] is None:
                fired_at[r] = step
            assert fired[r] == (fired_at[r] is not None)
    lowest = [min(np.mean(h[i - window:i]) for i in range(window, len(h) + 1)) for h in history]
    np.testing.assert_allclose(rule.lowest_group_confidence.numpy(), lowest, rtol=1e-5)


def test_token_confidence_alone_needs_scores(tok, llama):
    batch = build_inputs(tok, PROMPTS, style="none")
    rule = TokenConfidenceStopping(threshold=1e9, window=3, tokenizer=tok)  # fires as soon as 3 tokens are in
    out = llama.generate(**batch, max_new_tokens=10, do_sample=False, output_scores=True,
                         return_dict_in_generate=True, stopping_criteria=StoppingCriteriaList([rule]))
    assert out.sequences.shape[1] - batch["input_ids"].shape[1] == 3
    rule.reset()
    with pytest.raises(ValueError, match="output_scores=True"):
        llama.generate(**batch, max_new_tokens=3, do_sample=False, stopping_criteria=StoppingCriteriaList([rule]))


@pytest.mark.parametrize("kwargs, match", [
    (dict(threshold=math.nan), "threshold=nan"), (dict(window=0), "window=0"), (dict(top_k=0), "top_k=0"),
    (dict(min_tokens=9, window=4), "min_tokens=9"),
])
def test_token_confidence_bad_arguments(kwargs, match):
    args = dict(threshold=1.0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        TokenConfidenceStopping(**args)


# ---- DeadlineStopping ----------------------------------------------------------------------------------------

def test_deadline_alone_and_reset(tok, llama):
    now = [0.0]
    rule = DeadlineStopping(2.5, clock=lambda: now[0])
    batch = build_inputs(tok, PROMPTS, style="none")
    end = tok.convert_tokens_to_ids("</think>")

    def tick(input_ids, scores):  # one "second" per decoding step
        now[0] += 1.0
        out = scores.clone()
        out[:, [end, tok.eos_token_id, tok.pad_token_id]] = float("-inf")
        return out

    out = llama.generate(**batch, max_new_tokens=10, do_sample=False, logits_processor=LogitsProcessorList([tick]),
                         stopping_criteria=StoppingCriteriaList([rule]))
    assert out.shape[1] - batch["input_ids"].shape[1] == 3 and rule.elapsed == 3.0
    rule.reset()
    assert rule.elapsed == 0.0 and rule.stop.numel() == 0


def test_deadline_bad_seconds():
    for bad in (0, -1.0, math.inf):
        with pytest.raises(ValueError, match="seconds="):
            DeadlineStopping(bad)
