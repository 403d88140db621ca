"""ThinkingTracker and marker encoding on hand-made input_ids."""

from __future__ import annotations

import copy
import inspect
import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from thinkctl.stopping import BudgetForcing, ThinkingTracker, ThoughtSwitchPenalty
from thinkctl.stopping.tracking import (encode_text, ends_with, last_positions, marker_variants,
                                      precomputed_call_signature)


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def grow(tracker: ThinkingTracker, rows: list[list[int]], new: list[list[int]]) -> torch.Tensor:
    """Feed a left-padded prompt then one new column at a time; returns the final input_ids."""
    width = max(len(r) for r in rows)
    x = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    tracker.update(x)
    for col in zip(*new):
        x = torch.cat([x, torch.tensor(col)[:, None]], dim=1)
        tracker.update(x)
    return x


def test_prompt_opened_thinking_counts_every_generated_token(tok):
    tr = ThinkingTracker(tok)
    p = ids(tok, "<|user|>hi\n<|assistant|><think>\n")
    grow(tr, [p], [ids(tok, "abcde")])
    assert tr.phase == [ThinkingTracker.THINKING]
    assert tr.think_tokens == [5]
    assert tr.prompt_length == len(p)


def test_end_marker_switches_to_answer_and_eos_to_done(tok):
    tr = ThinkingTracker(tok)
    p = ids(tok, "q<think>\n")
    gen = ids(tok, "ab</think>\nFinal Answer: 7") + [tok.eos_token_id]
    grow(tr, [p], [gen])
    assert tr.phase == [ThinkingTracker.DONE]
    assert tr.think_tokens == [2]
    assert tr.answer_tokens == [len(ids(tok, "\nFinal Answer: 7"))]


def test_model_emitted_think_start_resets_count_and_rows_are_independent(tok):
    tr = ThinkingTracker(tok)
    prompts = [ids(tok, "q\n"), ids(tok, "longer q\n")]  # no <think> in either prompt
    g0 = ids(tok, "xy<think>abc")  # model opens thinking itself after 2 tokens
    g1 = ids(tok, "abcdefgh")
    grow(tr, prompts, [g0, g1[: len(g0)]])
    assert tr.think_tokens == [3, len(g0)]
    assert tr.seen_start == [True, False]


def test_prompt_that_closed_thinking_starts_in_answer_phase(tok):
    tr = ThinkingTracker(tok)
    x = torch.tensor([ids(tok, "q<think>\n\n</think>\n\n")])
    tr.update(x)
    assert tr.phase == [ThinkingTracker.ANSWER]


def test_multi_piece_markers_are_detected(tok_pieces):
    tr = ThinkingTracker(tok_pieces)
    p = ids(tok_pieces, "q<think>\n")
    gen = ids(tok_pieces, "abc</think>\nF")
    grow(tr, [p], [gen])
    assert tr.phase == [ThinkingTracker.ANSWER]
    assert tr.think_tokens == [3]
    assert tr.answer_tokens == [2]


def test_without_markers_everything_is_thinking(tok_plain):
    tr = ThinkingTracker(tok_plain, think_start=None, think_end=None)
    grow(tr, [ids(tok_plain, "q\n")], [ids(tok_plain, "a</think>b")])
    assert tr.phase == [ThinkingTracker.THINKING]
    assert tr.think_tokens == [len(ids(tok_plain, "a</think>b"))]


def test_new_generation_detected_and_reset(tok):
    tr = ThinkingTracker(tok)
    p = ids(tok, "q<think>\n")
    grow(tr, [p], [ids(tok, "abcd")])
    assert tr.think_tokens == [4]
    # a shorter input (a new generate call) starts over
    assert tr.update(torch.tensor([p])) is True
    assert tr.think_tokens == [0]
    # a different batch size starts over even when the length grows by one
    x = torch.tensor([p + [5], p + [6]])
    assert tr.update(x) is True and tr.batch_size == 2
    tr.reset()
    assert tr.update(torch.cat([x, x[:, :1]], dim=1)) is True


def test_stopping_criteria_mode_counts_first_token(tok):
    tr = ThinkingTracker(tok, includes_new_token=True)
    p = ids(tok, "q<think>\n")
    tr.update(torch.tensor([p + ids(tok, "a")]))
    assert tr.prompt_length == len(p)
    assert tr.think_tokens == [1]


def test_marker_positions_and_completions(tok_pieces):
    x = torch.tensor([[1, 3, 4, 5, 2], [7, 1, 1, 3, 4], [0, 0, 0, 0, 7]])
    assert last_positions(x, [(7,), (3, 4, 5)]) == [4, 1, 5]
    assert ends_with([1, 3, 4], (3, 4)) and not ends_with([4], (3, 4)) and not ends_with([1, 2], ())
    tr = ThinkingTracker(tok_pieces)
    marker = ids(tok_pieces, "</think>")
    assert tr.completing_tokens(marker[:-1]) == [marker[-1]]
    assert tr.completing_tokens(marker[:-2]) == []


def test_marker_variants_include_canonical_first(tok, tok_pieces):
    assert marker_variants(tok, "</think>", name="think_end") == [(4,)]
    v = marker_variants(tok_pieces, "</think>", name="think_end")
    assert v[0] == tuple(ids(tok_pieces, "</think>")) and len(v[0]) == 8


@pytest.mark.parametrize("text", ["</thînk>", "", "   "])
def test_unencodable_text_raises_naming_the_argument(tok, text):
    with pytest.raises(ValueError, match="think_end="):
        encode_text(tok, text, name="think_end")


def test_think_markers_detects_reasoning_tokenizers(tok, tok_pieces, tok_plain):
    from thinkctl.stopping import think_markers

    assert think_markers(tok) == ("<think>", "</think>")  # </think> is a vocabulary token
    assert think_markers(tok_pieces) == ("<think>", "</think>")  # the chat template opens thinking
    assert think_markers(tok_plain) == (None, None)  # plain instruct model


def test_prompt_one_token_longer_is_a_new_generation_but_passed_back_output_continues(tok):
    tr = ThinkingTracker(tok)
    x = grow(tr, [ids(tok, "q<think>\n")], [ids(tok, "abc")])
    assert tr.think_tokens == [3]
    other = torch.tensor([ids(tok, "zzzzzzzzzzzz<think>\n")[: x.shape[1] + 1]])  # same batch, one token longer
    assert other.shape[1] == x.shape[1] + 1
    assert tr.is_new_generation(other) is True
    # the finished output of a generate call (one token the hook never saw) passed back: a continuation
    out = torch.cat([x, torch.tensor([ids(tok, "d")])], dim=1)
    assert tr.update(out) is False and tr.think_tokens == [4]


def test_precomputed_call_signature_is_what_logits_processor_list_reads(tok):
    for proc in (BudgetForcing(tok, max_tokens=4), ThoughtSwitchPenalty(tok, alpha=1.0, beta=4)):
        sig = inspect.signature(proc.__call__)
        assert list(sig.parameters) == ["input_ids", "scores"]  # the 2 arguments LogitsProcessorList passes
        assert inspect.signature(proc.__call__) is sig  # stored once, not derived again at every step
        ids, scores = torch.tensor([[1, 2]]), torch.zeros(1, len(tok))
        assert torch.equal(proc.__call__(ids, scores), type(proc).__call__(proc, ids, scores))

    @precomputed_call_signature
    class Base:
        def __init__(self, offset=0.0):
            self.offset = offset

        def __call__(self, input_ids, scores):
            return scores + self.offset

    class Extra(Base):  # an override keeps its own signature
        def __call__(self, input_ids, scores, cur_len=0):
            return scores

    assert list(inspect.signature(Base().__call__).parameters) == ["input_ids", "scores"]
    assert list(inspect.signature(Extra().__call__).parameters) == ["input_ids", "scores", "cur_len"]
    assert Base(offset=2.0)(None, 1.0) == 3.0 and Base(offset=2.0).__call__(None, 1.0) == 3.0
    # a copy's __call__ is its own, not the original's
    original = Base(offset=2.0)
    for dup in (copy.copy(original), copy.deepcopy(original)):
        dup.offset = 5.0
        assert dup.__call__(None, 1.0) == 6.0 and original.__call__(None, 1.0) == 3.0
        assert list(inspect.signature(dup.__call__).parameters) == ["input_ids", "scores"]
    bf = BudgetForcing(tok, max_tokens=4)
    for dup in (copy.copy(bf), copy.deepcopy(bf), pickle.loads(pickle.dumps(bf))):
        assert dup.__call__.args == (dup,) and bf.__call__.args == (bf,)


class _NeverDisjoint(frozenset):
    """A watch set that sends every step down the per-row path of ThinkingTracker._advance."""

    def isdisjoint(self, other):
        return False


@settings(max_examples=60, deadline=None)
@given(data=st.data(), pieces=st.booleans(), batch=st.integers(1, 4))
def test_usual_step_shortcut_counts_exactly_as_the_per_row_path(tok, tok_pieces, data, pieces, batch):
    tokenizer = tok_pieces if pieces else tok
    texts = ["a", "b", " ", "\n", "<think>", "</think>", "<eos>", "7"]
    alphabet = sorted({i for t in texts for i in ids(tokenizer, t)})
    plain = [i for i in alphabet if i not in ids(tokenizer, "<think></think><eos>")]
    # mostly plain tokens (the shortcut), with markers and EOS now and then (the per-row path)
    choice = st.one_of(st.sampled_from(plain), st.sampled_from(plain), st.sampled_from(alphabet))
    new = [data.draw(st.lists(choice, min_size=12, max_size=12)) for _ in range(batch)]
    # rows that start thinking, and (when drawn) one that starts answering
    answering = data.draw(st.booleans())
    prompts = [ids(tokenizer, "q<think>\n")] * batch
    if answering:
        prompts[-1] = ids(tokenizer, "zz<think>\n</think>\n")
    fast, slow = ThinkingTracker(tokenizer), ThinkingTracker(tokenizer)
    slow._watch = _NeverDisjoint(slow._watch)
    width = max(len(r) for r in prompts)
    x = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in prompts])
    for step in range(13):
        if step:
            x = torch.cat([x, torch.tensor([row[step - 1] for row in new])[:, None]], dim=1)
        assert fast.update(x) == slow.update(x) == (step == 0)
        for name in ("phase", "think_tokens", "answer_tokens", "generated_tokens", "seen_start"):
            assert getattr(fast, name) == getattr(slow, name), (name, step)
        assert fast.newest_tokens == x[:, -1].tolist()
