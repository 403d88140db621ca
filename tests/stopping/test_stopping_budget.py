"""BudgetForcing on hand-made scores, through a model-free copy of generate's decoding loop."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thinkctl.registry import UnknownNameError
from thinkctl.stopping import BudgetForcing, DeadlineStopping
from thinkctl.stopping.budget import MAX_LEADING_BLANKS

HIGH, LOW = 10.0, 1.0


def enc(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def left_pad(rows: list[list[int]], pad: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([[pad] * (width - len(r)) + r for r in rows])


def prefer(vocab: int, choose):
    """Scores where ``choose(row, generated_ids) -> (best, fallback)`` get HIGH and LOW; the rest 0."""

    def score_fn(ids: torch.Tensor, prompt_len: int) -> torch.Tensor:
        s = torch.zeros(ids.shape[0], vocab)
        for r in range(ids.shape[0]):
            best, fallback = choose(r, ids[r, prompt_len:].tolist())
            s[r, fallback] = LOW
            s[r, best] = HIGH
        return s

    return score_fn


def run(sim, tokenizer, bf, prompts, choose, steps=60, **kw):
    x = left_pad([enc(tokenizer, p) for p in prompts], tokenizer.pad_token_id)
    score = prefer(len(tokenizer), choose)
    out = sim([bf], x, lambda ids: score(ids, x.shape[1]), steps, eos=tokenizer.eos_token_id,
              pad=tokenizer.pad_token_id, **kw)
    return [row[x.shape[1]:].tolist() for row in out]


def strip_pad(row: list[int], pad: int) -> list[int]:
    while row and row[-1] == pad:
        row = row[:-1]
    return row


def test_max_tokens_forces_end_answer_and_eos_per_row(sim, tok):
    a, eos = enc(tok, "a")[0], tok.eos_token_id
    natural = enc(tok, "b</think>\nFinal Answer: 5") + [eos]

    def choose(r, gen):
        if r == 1:  # row 1 ends its thinking by itself after one token
            return (natural[len(gen)] if len(gen) < len(natural) else eos), a
        return a, a

    bf = BudgetForcing(tok, max_tokens=3, max_answer_tokens=2)
    out = run(sim, tok, bf, ["q<think>\n", "a longer prompt<think>\n"], choose)
    assert out[0] == enc(tok, "aaa</think>\nFinal Answer:aa") + [eos]
    assert strip_pad(out[1], tok.pad_token_id) == natural
    stop = enc(tok, "</think>\nFinal Answer:")
    assert bf.forced_tokens.tolist() == [len(stop) + 1, 0]
    assert bf.think_tokens.tolist() == [3, 1]
    assert bf.stop_reasons == ["max_tokens", None]
    assert bf.forced_stop.tolist() == [True, False]


def test_min_tokens_injects_wait_when_model_tries_to_stop(sim, tok):
    end, eos, a = tok.convert_tokens_to_ids("</think>"), tok.eos_token_id, enc(tok, "a")[0]

    def choose(r, gen):
        return (eos if end in gen else end), a

    bf = BudgetForcing(tok, min_tokens=6)
    out = run(sim, tok, bf, ["q<think>\n"], choose)
    assert out[0] == enc(tok, "\nWait\nWait</think>") + [eos]
    assert bf.waits.tolist() == [2]
    assert bf.think_tokens.tolist() == [10]
    assert bf.forced_tokens.tolist() == [10]
    assert bf.stop_reasons == [None]  # the model ended thinking itself, after the minimum


def test_min_tokens_with_multi_piece_marker_bans_only_the_completing_piece(sim, tok_pieces):
    t = tok_pieces
    marker, eos, a = enc(t, "</think>"), t.eos_token_id, enc(t, "a")[0]

    def choose(r, gen):  # writes "</think>" piece by piece, then wants EOS
        return (marker[len(gen)] if len(gen) < len(marker) else eos), a

    bf = BudgetForcing(t, min_tokens=10, max_answer_tokens=4)
    out = run(sim, t, bf, ["q<think>\n"], choose)
    text = t.decode(strip_pad(out[0], t.pad_token_id))
    # ">" would complete the marker at 7 thinking tokens: the continuation is injected instead; at 12 thinking
    # tokens the model wants EOS, so its thinking ends with a forced answer (answer_on_eos)
    assert text == "</think\nWait</think>\nFinal Answer:a<eos>"
    assert bf.stop_reasons == ["eos"]
    assert bf.think_tokens.tolist() == [12]


def test_forced_answer_is_non_blank_and_bounded(sim, tok):
    eos, nl, x = tok.eos_token_id, enc(tok, "\n")[0], enc(tok, "x")[0]
    bf = BudgetForcing(tok, max_tokens=0)
    out = run(sim, tok, bf, ["q<think>\n"], lambda r, gen: (eos, nl) if len(gen) < 30 else (eos, x))
    # EOS cannot open the answer; blanks may, MAX_LEADING_BLANKS times; then the best remaining token (uniform 0
    # scores) is the first id that is neither EOS nor blank
    row = strip_pad(out[0], tok.pad_token_id)
    text = tok.decode(row)
    assert text.startswith("</think>\nFinal Answer:") and text.endswith("<eos>")
    answer = row[len(enc(tok, "</think>\nFinal Answer:")):]
    assert answer[:MAX_LEADING_BLANKS] == [nl] * MAX_LEADING_BLANKS
    first = answer[MAX_LEADING_BLANKS]
    assert first not in (eos, nl, tok.pad_token_id) and tok.decode([first]).strip()

    bf = BudgetForcing(tok, max_tokens=2, max_answer_tokens=3)
    out = run(sim, tok, bf, ["q<think>\n"], lambda r, gen: (x, x))
    assert out[0] == enc(tok, "xx</think>\nFinal Answer:xxx") + [eos]


def test_forced_answer_keeps_a_space_token_before_the_answer(sim, tok):
    """A tokenizer that writes " 48" as " ", "4", "8" (the embedded model's does) keeps the model's own answer; a ban
    on the blank made the embedded model answer "-48"."""
    eos, sp, minus = tok.eos_token_id, enc(tok, " ")[0], enc(tok, "-")[0]
    answer = enc(tok, " 48")
    assert answer[0] == sp

    def choose(r, gen):
        k = len(gen) - len(enc(tok, "ab</think>\nFinal Answer:"))
        if k < 0:
            return enc(tok, "a")[0], minus
        return (answer[k] if k < len(answer) else eos), minus

    out = run(sim, tok, BudgetForcing(tok, max_tokens=2), ["q<think>\n"], choose)
    assert tok.decode(strip_pad(out[0], tok.pad_token_id)) == "aa</think>\nFinal Answer: 48<eos>"
    # with room for one answer token only, that token must have content: the blank is banned from the start
    out = run(sim, tok, BudgetForcing(tok, max_tokens=2, max_answer_tokens=1), ["q<think>\n"], choose)
    assert tok.decode(strip_pad(out[0], tok.pad_token_id)) == "aa</think>\nFinal Answer:-<eos>"


def test_plain_model_without_markers(sim, tok_plain):
    t = tok_plain
    b, eos = enc(t, "b")[0], t.eos_token_id
    bf = BudgetForcing(t, max_tokens=2, max_answer_tokens=1, think_start=None, think_end=None)
    out = run(sim, t, bf, ["q\n"], lambda r, gen: (b, b))
    assert out[0] == enc(t, "bb\nFinal Answer:b") + [eos]
    # without markers EOS is the natural end of the output, never turned into a forced answer
    bf = BudgetForcing(t, max_tokens=5, think_start=None, think_end=None)
    out = run(sim, t, bf, ["q\n"], lambda r, gen: (eos if len(gen) == 1 else b, b))
    assert out[0] == [b, eos]


def test_scores_are_not_modified_and_result_is_new(tok):
    bf = BudgetForcing(tok, min_tokens=2, max_tokens=4)
    x = left_pad([enc(tok, "q<think>\n"), enc(tok, "qq<think>\n")], tok.pad_token_id)
    scores = torch.randn(2, len(tok))
    before = scores.clone()
    out = bf(x, scores)
    assert torch.equal(scores, before)
    assert out.data_ptr() != scores.data_ptr() and out.shape == scores.shape and out.dtype == scores.dtype
    # below min: EOS and </think> are banned in both rows
    assert torch.isinf(out[:, [tok.eos_token_id, tok.convert_tokens_to_ids("</think>")]]).all()


def test_reuse_across_generations_resets_counters(sim, tok):
    x_tok = enc(tok, "x")[0]
    bf = BudgetForcing(tok, max_tokens=3, max_answer_tokens=1)
    first = run(sim, tok, bf, ["q<think>\n", "qq<think>\n"], lambda r, gen: (x_tok, x_tok))
    counts = bf.forced_tokens.clone()
    second = run(sim, tok, bf, ["q<think>\n"], lambda r, gen: (x_tok, x_tok))  # batch size changes
    assert second[0] == first[0]
    assert bf.forced_tokens.tolist() == counts[:1].tolist()
    bf.reset()
    third = run(sim, tok, bf, ["q<think>\n"], lambda r, gen: (x_tok, x_tok))
    assert third == second and bf.forced_tokens.tolist() == counts[:1].tolist()


def test_stop_rule_forces_answer_with_its_name(sim, tok):
    x_tok = enc(tok, "x")[0]
    now = [0.0]
    deadline = DeadlineStopping(5.0, clock=lambda: now[0])
    bf = BudgetForcing(tok, min_tokens=2, max_tokens=50, max_answer_tokens=1, stop_rules=[deadline])

    def choose(r, gen):
        now[0] = 10.0 if len(gen) >= 1 else 0.0  # the deadline passes after the first token
        return x_tok, x_tok

    out = run(sim, tok, bf, ["q<think>\n"], choose)
    # the rule fires at 1 thinking token but is honoured only from min_tokens=2 on
    assert out[0] == enc(tok, "xx</think>\nFinal Answer:x") + [tok.eos_token_id]
    assert bf.stop_reasons == ["DeadlineStopping"]


def test_sample_trigger_matches_end_probability(tok):
    """Monte-Carlo: with wait_trigger="sample" the continuation is injected with P(end of thinking)."""
    end = tok.convert_tokens_to_ids("</think>")
    n_rows, p_end = 4000, 0.3
    v = len(tok)
    probs = torch.full((v,), (1 - p_end) / (v - 2))
    probs[end], probs[tok.eos_token_id] = p_end, 0.0
    scores = torch.log(probs.clamp(min=1e-30)).expand(n_rows, v).clone()
    x = torch.tensor(enc(tok, "q<think>\n")).expand(n_rows, -1).clone()
    bf = BudgetForcing(tok, min_tokens=5, wait_trigger="sample", generator=torch.Generator().manual_seed(0))
    out = bf(x, scores)
    rate = bf.waits.float().mean().item()
    assert abs(rate - p_end) < 4 * (p_end * (1 - p_end) / n_rows) ** 0.5
    forced = bf.waits.bool()
    nl = enc(tok, "\nWait")[0]
    assert (out[forced].argmax(dim=1) == nl).all() and torch.isinf(out[forced]).sum(1).eq(v - 1).all()
    assert torch.isinf(out[~forced][:, end]).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(min_tokens=5, max_tokens=3), "min_tokens=5 > max_tokens=3"),
        (dict(min_tokens=-1), "min_tokens=-1"),
        (dict(max_tokens=-2), "max_tokens=-2"),
        (dict(max_answer_tokens=0), "max_answer_tokens=0"),
        (dict(think_end="</thînk>"), "think_end='</thînk>'"),
        (dict(wait_text="ß"), "wait_text="),
        (dict(stop_rules=[object()]), "not a StopRule"),
    ],
)
def test_bad_arguments_raise_clear_errors(tok, kwargs, match):
    with pytest.raises(ValueError, match=match):
        BudgetForcing(tok, **kwargs)


def test_unknown_wait_trigger_lists_known(tok):
    with pytest.raises(UnknownNameError, match="argmax, sample"):
        BudgetForcing(tok, wait_trigger="nope")


# ---- properties ------------------------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    min_tokens=st.integers(0, 8),
    extra=st.integers(0, 10),
    max_answer_tokens=st.integers(1, 4),
    end_bias=st.floats(-2.0, 6.0),
    sample=st.booleans(),
    pieces=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_budget_respected_and_forced_stops_answer(sim, check_budget, tok, tok_pieces, min_tokens, extra,
                                                           max_answer_tokens, end_bias, sample, pieces, seed):
    t = tok_pieces if pieces else tok
    max_tokens = min_tokens + extra
    g = torch.Generator().manual_seed(seed)
    v = len(t)
    bias = torch.zeros(v)
    bias[enc(t, "</think>")[-1]] += end_bias  # make natural (or attempted) ends likely
    bias[t.eos_token_id] += end_bias
    x = left_pad([enc(t, "q<think>\n"), enc(t, "a longer q<think>\n"), enc(t, "q?\n")], t.pad_token_id)
    bf = BudgetForcing(t, min_tokens=min_tokens, max_tokens=max_tokens, max_answer_tokens=max_answer_tokens,
                       wait_trigger="sample" if sample else "argmax", generator=torch.Generator().manual_seed(seed))
    # thinking <= max_tokens, after at most max_tokens tokens before a <think> the model writes itself (row 2)
    steps = 2 * max_tokens + len(enc(t, "</think>\nFinal Answer:")) + max_answer_tokens + 2
    out = sim([bf], x, lambda ids: torch.randn(ids.shape[0], v, generator=g) * 2 + bias, steps,
              eos=t.eos_token_id, pad=t.pad_token_id, sample=sample, generator=g)
    gen = [row[x.shape[1]:].tolist() for row in out]
    check_budget(t, bf, gen, min_tokens, max_tokens, max_answer_tokens, opened=[True, True, False])
    assert (bf.think_tokens <= max_tokens).all()
