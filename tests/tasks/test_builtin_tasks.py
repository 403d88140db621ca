"""Built-in task families: registry, deterministic sampling, answer extraction on hostile text."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import thinkctl
from thinkctl.registry import UnknownNameError
from thinkctl.tasks.arith import ArithTask, apply_op
from thinkctl.tasks.modeq import ModEqTask

BUILTIN = ["arith", "modeq", "mix"]


def test_registry_lists_builtin_families():
    assert set(BUILTIN) <= set(thinkctl.tasks.names())


def test_unknown_task_lists_known_names():
    with pytest.raises(UnknownNameError) as err:
        thinkctl.tasks.get("no-such-task")
    msg = str(err.value)
    assert "no-such-task" in msg and "arith" in msg and "modeq" in msg
    assert isinstance(err.value, KeyError) and isinstance(err.value, ValueError)


@pytest.mark.parametrize("name", BUILTIN)
def test_sampling_is_deterministic_and_seed_dependent(name):
    task = thinkctl.tasks.get(name)
    a = task.sample(50, seed=7)
    b = task.sample(50, seed=7)
    c = task.sample(50, seed=8)
    assert a == b
    assert [p.prompt for p in a] != [p.prompt for p in c]
    assert len({p.id for p in a}) == 50


@pytest.mark.parametrize("name", BUILTIN)
def test_at_least_five_levels_and_level_filter(name):
    task = thinkctl.tasks.get(name)
    assert len(task.levels) >= 5
    for level in task.levels:
        ps = task.sample(20, seed=3, level=level)
        assert {p.level for p in ps} == {level}
    mixed = task.sample(200, seed=3)
    assert {p.level for p in mixed} == set(task.levels)


@pytest.mark.parametrize("name", BUILTIN)
def test_bad_sample_arguments(name):
    task = thinkctl.tasks.get(name)
    with pytest.raises(ValueError, match="level"):
        task.sample(3, seed=1, level=99)
    with pytest.raises(ValueError, match="seed"):
        task.sample(3, seed=-1)
    with pytest.raises(ValueError, match="n="):
        task.sample(-2, seed=1)


def test_arith_answers_are_left_to_right_values():
    task = ArithTask()
    for p in task.sample(300, seed=11):
        start, ops = ArithTask.chain(p)
        value = start
        for op, b in ops:
            value = apply_op(value, op, b)
            assert value >= 0
        assert str(value) == p.answer
        assert p.features["n_ops"] == len(ops)


def test_harder_arith_levels_have_longer_chains_and_bigger_numbers():
    task = ArithTask()
    easy = task.sample(100, seed=2, level=task.levels[0])
    hard = task.sample(100, seed=2, level=task.levels[-1])
    assert max(p.features["n_ops"] for p in easy) < min(p.features["n_ops"] for p in hard)
    assert max(int(p.answer) for p in easy) < max(int(p.answer) for p in hard)


def test_modeq_answers_solve_the_congruence():
    task = ModEqTask()
    for p in task.sample(300, seed=5):
        a, b, c, mod = ModEqTask.coefficients(p)
        x = int(p.answer)
        assert 0 <= x < mod and (a * x + b) % mod == c
        assert sum((a * y + b) % mod == c for y in range(mod)) == 1  # unique in 0..p-1


def test_features_never_contain_the_answer_key():
    for name in BUILTIN:
        for p in thinkctl.tasks.get(name).sample(30, seed=1):
            assert "answer" not in p.features


@pytest.mark.parametrize("name", BUILTIN)
def test_extract_and_check(name):
    task = thinkctl.tasks.get(name)
    p = task.sample(1, seed=4)[0]
    good = f"<think>\nsome work 12+3=15\n</think>\nFinal Answer: {p.answer}"
    assert task.extract_answer(good) == p.answer
    assert task.is_correct(p, good)
    wrong = str(int(p.answer) + 1)
    assert not task.is_correct(p, f"<think>\n{p.answer}\n</think>\nFinal Answer: {wrong}")
    assert task.is_correct(p, f"The answer is \\boxed{{{p.answer}}}.")
    assert task.is_correct(p, f"Final Answer: 000{p.answer}")


HOSTILE = [
    "", " ", "\x00", "<think>", "</think>", "<think>\nFinal Answer: 12", "Final Answer:", "Final Answer: -",
    "Final Answer: --5", "\\boxed{", "\\boxed{{{{", "\\boxed{}", "9" * 5000, "Final Answer: " + "9" * 5000,
    "</think></think></think>", "Answer: ١٢٣", "Final Answer: 1e5", "💥" * 100, "Final Answer: 0x1F",
    "<think>" * 1000 + "</think>", "answer is is is", "\\boxed{\\boxed{\\boxed{3}}}",
]


@pytest.mark.parametrize("name", BUILTIN)
@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_never_raises(name, text):
    task = thinkctl.tasks.get(name)
    p = task.sample(1, seed=0)[0]
    out = task.extract_answer(text)
    assert out is None or (out.lstrip("-").isdigit() and len(out) <= 41)
    assert task.is_correct(p, text) in (True, False)


def test_unfinished_thinking_has_no_answer():
    task = ArithTask()
    assert task.extract_answer("<think>\n12+3=15\nFinal Answer: 15") is None
    assert task.extract_answer("<think>\n12+3=15\n</think>\nFinal Answer: 15") == "15"


def test_answer_after_last_think_close_wins():
    task = ArithTask()
    text = "<think>Final Answer: 1</think> x <think>y</think>\nFinal Answer: 2 (checked 3 times)"
    assert task.extract_answer(text) == "2"


def test_non_string_input_is_not_correct():
    task = ArithTask()
    p = task.sample(1, seed=0)[0]
    assert task.is_correct(p, None) is False  # type: ignore[arg-type]
    assert task.extract_answer(12345) is None  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_text_never_raises(text):
    for name in BUILTIN:
        task = thinkctl.tasks.get(name)
        p = task.sample(1, seed=0)[0]
        task.extract_answer(text)
        assert task.is_correct(p, text) in (True, False)


def test_mix_draws_both_families_in_equal_shares_over_all_their_levels():
    from scipy.stats import binomtest

    ps = thinkctl.tasks.get("mix").sample(1000, seed=11)
    fams = [p.features["family"] for p in ps]
    n_arith = fams.count("arith")
    assert binomtest(n_arith, len(ps), 0.5).pvalue > 0.001  # equal shares (fails for a 60/40 mix at this n)
    for fam, task in (("arith", ArithTask()), ("modeq", ModEqTask())):
        mine = [p for p in ps if p.features["family"] == fam]
        assert {p.level for p in mine} == set(task.levels)
        assert all(p.id.startswith(f"mix-{fam}-") for p in mine)
        # the problems are the family's own: its checker accepts the gold answer written as the model writes it
        assert all(task.is_correct(p, f"</think>\nFinal Answer: {p.answer}") for p in mine[:50])
    mix = thinkctl.tasks.get("mix")
    p = ps[0]
    assert mix.is_correct(p, f"</think>\nFinal Answer: {p.answer}")
    assert not mix.is_correct(p, f"</think>\nFinal Answer: {int(p.answer) + 1}")
    assert mix.family_of(p).name == p.features["family"]
