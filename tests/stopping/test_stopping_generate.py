"""The hooks inside real ``model.generate`` on tiny random GPT-2, Llama, Qwen2 and Qwen3 models."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import LogitsProcessorList

from thinkctl.stopping import BudgetForcing, ThoughtSwitchPenalty, build_inputs

ARCHS = ("gpt2", "llama", "qwen2", "qwen3")
PROMPTS = ["2+3?", "what is 17*3?", "x"]


def generated(out: torch.Tensor, prompt_len: int, pad: int) -> list[list[int]]:
    rows = []
    for row in out[:, prompt_len:].tolist():
        while row and row[-1] == pad:
            row.pop()
        rows.append(row)
    return rows


def hooks(tokenizer):
    return [ThoughtSwitchPenalty(tokenizer, alpha=3.0, beta=6),
            BudgetForcing(tokenizer, min_tokens=4, max_tokens=10, max_answer_tokens=3)]


@pytest.mark.parametrize("arch", ARCHS)
def test_row_alone_equals_row_in_left_padded_batch(arch, tok, models_for):
    """Greedy: every row generates the same tokens, and gets the same forcing, alone and in a batch."""
    model = models_for[arch]
    batch = build_inputs(tok, PROMPTS, style="cot")
    assert (batch["attention_mask"][:, 0] == 0).any()  # the batch really is left-padded
    procs = hooks(tok)
    out = model.generate(**batch, max_new_tokens=40, do_sample=False, logits_processor=LogitsProcessorList(procs))
    rows = generated(out, batch["input_ids"].shape[1], tok.pad_token_id)
    bf = procs[1]
    forced, think = bf.forced_tokens.tolist(), bf.think_tokens.tolist()
    for i, prompt in enumerate(PROMPTS):
        alone = build_inputs(tok, [prompt], style="cot")
        solo = hooks(tok)
        o = model.generate(**alone, max_new_tokens=40, do_sample=False,
                           logits_processor=LogitsProcessorList(solo))
        assert generated(o, alone["input_ids"].shape[1], tok.pad_token_id)[0] == rows[i]
        assert solo[1].forced_tokens.tolist() == [forced[i]]
        assert solo[1].think_tokens.tolist() == [think[i]]
    text = tok.batch_decode(out[:, batch["input_ids"].shape[1]:])
    for i, t in enumerate(text):
        if bf.forced_stop[i]:
            assert "</think>\nFinal Answer:" in t


@pytest.mark.parametrize("arch", ARCHS)
def test_budget_holds_with_sampling_and_kv_cache(arch, tok, models_for):
    model = models_for[arch]
    batch = build_inputs(tok, PROMPTS, style="none")
    bf = BudgetForcing(tok, min_tokens=3, max_tokens=8, max_answer_tokens=2)
    torch.manual_seed(0)
    out = model.generate(**batch, max_new_tokens=40, do_sample=True, temperature=1.5, top_k=30, use_cache=True,
                         logits_processor=LogitsProcessorList([bf]))
    end = tok.convert_tokens_to_ids("</think>")
    for i, row in enumerate(generated(out, batch["input_ids"].shape[1], tok.pad_token_id)):
        assert end in row and 3 <= row.index(end) <= 8
        if bf.forced_stop[i]:
            assert tok.decode(row[row.index(end):]).startswith("</think>\nFinal Answer:")
            assert row[-1] == tok.eos_token_id


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(min_tokens=st.integers(0, 6), extra=st.integers(0, 8), max_answer_tokens=st.integers(1, 3),
       sample=st.booleans(), pieces=st.booleans(), seed=st.integers(0, 1000))
def test_property_generate_never_exceeds_budget_and_forced_stops_answer(
        check_budget, tok, tok_pieces, gpt2, gpt2_pieces, min_tokens, extra, max_answer_tokens, sample, pieces, seed):
    t, model = (tok_pieces, gpt2_pieces) if pieces else (tok, gpt2)
    max_tokens = min_tokens + extra
    batch = build_inputs(t, PROMPTS, style="none")
    bf = BudgetForcing(t, min_tokens=min_tokens, max_tokens=max_tokens, max_answer_tokens=max_answer_tokens,
                       wait_trigger="sample" if sample else "argmax")
    torch.manual_seed(seed)
    budget = max_tokens + 2 * len(t.encode("\nWait")) + len(t.encode("</think>\nFinal Answer:")) + max_answer_tokens
    out = model.generate(**batch, max_new_tokens=budget + 2, do_sample=sample,
                         logits_processor=LogitsProcessorList([bf]))
    rows = [r.tolist() for r in out[:, batch["input_ids"].shape[1]:]]
    check_budget(t, bf, rows, min_tokens, max_tokens, max_answer_tokens, opened=[True] * len(PROMPTS))
    # with this many new tokens every row reaches the end of its thinking
    end = t.encode("</think>")
    assert all(any(r[i:i + len(end)] == end for i in range(len(r))) for r in rows)


def test_plain_instruct_model_gets_answer_prefix_only(tok_plain, make):
    model = make("llama", tok_plain, seed=3)
    batch = build_inputs(tok_plain, PROMPTS, style="none")
    bf = BudgetForcing(tok_plain, max_tokens=5, max_answer_tokens=2, think_start=None, think_end=None)
    out = model.generate(**batch, max_new_tokens=30, do_sample=False, logits_processor=LogitsProcessorList([bf]))
    for i, row in enumerate(generated(out, batch["input_ids"].shape[1], tok_plain.pad_token_id)):
        text = tok_plain.decode(row)
        if bf.forced_stop[i]:
            assert text.index("\nFinal Answer:") == 5 and "</think>" not in text.split("Final Answer:")[0][5:]
            assert row[-1] == tok_plain.eos_token_id


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_thought_switch_penalty_in_generate(arch, tok, models_for):
    """A processor that makes "Alternatively" the top token: TIP keeps it out of the first beta thinking tokens."""
    model = models_for[arch]
    alt = tok.convert_tokens_to_ids("Alternatively")

    end = [tok.convert_tokens_to_ids("</think>"), tok.eos_token_id, tok.pad_token_id]

    def push_switch(input_ids, scores):
        out = scores.clone()
        out[:, end] = float("-inf")  # keep every row thinking
        out[:, alt] = out.max(dim=1).values + 2.0  # top token by a margin of 2 < alpha
        return out

    batch = build_inputs(tok, PROMPTS, style="none")
    tip = ThoughtSwitchPenalty(tok, alpha=3.0, beta=5)
    out = model.generate(**batch, max_new_tokens=8, do_sample=False,
                         logits_processor=LogitsProcessorList([push_switch, tip]))
    for row in generated(out, batch["input_ids"].shape[1], tok.pad_token_id):
        assert alt not in row[:5]
        assert row[5:] == [alt] * 3
