"""The committed embedded checkpoint: offline loading, chat template, reasoning output format."""

from __future__ import annotations

import socket

import pytest

import thinkctl
from thinkctl.embedded import CHECKPOINT_DIR
from thinkctl.embedded.tokenizer import render_chat
from thinkctl.generation import chat_prefix, generate_from_prefixes, reasoning_format

pytestmark = pytest.mark.skipif(not (CHECKPOINT_DIR / "config.json").is_file(),
                                reason="no embedded checkpoint committed yet")


@pytest.fixture(scope="module")
def embedded():
    return thinkctl.load_embedded()


def test_loads_offline_without_touching_the_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("load_embedded tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    model, tok = thinkctl.load_embedded()
    assert model.config.model_type == "llama"
    assert sum(p.numel() for p in model.parameters()) < 5_000_000


def test_checkpoint_is_small_enough_to_commit():
    size = sum(f.stat().st_size for f in CHECKPOINT_DIR.iterdir() if f.is_file())
    assert size < 20 * 2**20


def test_chat_template_is_the_training_prefix(embedded):
    _, tok = embedded
    prompt = thinkctl.tasks.get("arith").sample(1, seed=1)[0].prompt
    ids = chat_prefix(tok, prompt)
    assert tok.decode(ids) == render_chat(prompt)
    assert tok.decode(ids).endswith("<think>\n")


def test_greedy_output_has_the_reasoning_format_and_solves_easy_problems(embedded):
    model, tok = embedded
    fmt = reasoning_format(tok)
    assert fmt.thinks_in_markers
    for name in ["arith", "modeq"]:
        task = thinkctl.tasks.get(name)
        problems = task.sample(24, seed=123, level=task.levels[0])
        outs = generate_from_prefixes(model, [chat_prefix(tok, p.prompt) for p in problems], pad_id=fmt.pad_id,
                                      eos_ids=fmt.eos_ids, max_new_tokens=400)
        texts = [tok.decode(o) for o in outs]
        for t in texts:
            assert t.count("</think>") == 1 and "\nFinal Answer: " in t.split("</think>")[1]
            assert t.endswith(tok.eos_token)
        right = sum(task.is_correct(p, t) for p, t in zip(problems, texts))
        assert right >= 20, (name, right, texts[:2])


def test_forced_answer_after_a_cut_thought_is_extractable(embedded):
    model, tok = embedded
    fmt = reasoning_format(tok)
    task = thinkctl.tasks.get("arith")
    problems = task.sample(8, seed=321, level=4)
    prefixes = [chat_prefix(tok, p.prompt) + tok("12+3=", add_special_tokens=False)["input_ids"]
                + list(fmt.force_answer_ids) for p in problems]
    outs = generate_from_prefixes(model, prefixes, pad_id=fmt.pad_id, eos_ids=fmt.eos_ids, max_new_tokens=12)
    for o in outs:
        assert task.extract_answer("</think>\nFinal Answer:" + tok.decode(o)) is not None


def test_generation_is_deterministic_for_a_seed(embedded):
    model, tok = embedded
    fmt = reasoning_format(tok)
    p = thinkctl.tasks.get("modeq").sample(1, seed=5, level=3)[0]
    kw = dict(pad_id=fmt.pad_id, eos_ids=fmt.eos_ids, max_new_tokens=60, do_sample=True, seed=11)
    a = generate_from_prefixes(model, [chat_prefix(tok, p.prompt)] * 4, **kw)
    b = generate_from_prefixes(model, [chat_prefix(tok, p.prompt)] * 4, **kw)
    assert a == b
