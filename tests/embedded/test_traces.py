"""Synthetic reasoning traces: every step verifiable, re-checks repair slips, beliefs track the answer."""

from __future__ import annotations

import re

import numpy as np
import pytest

import thinkctl
from thinkctl.embedded.traces import CHECK_TEXT, TraceStyle, thought_for
from thinkctl.tasks.arith import ArithTask

LINE_RE = re.compile(r"^(\d+)([+*-])(\d+)=(\d+)$")
SIGNED_LINE_RE = re.compile(r"^(-?\d+)([+*-])(\d+)=(-?\d+)$")  # intermediate results can go below 0 at levels 5-6


@pytest.mark.parametrize("name", ["arith", "modeq"])
def test_final_belief_is_the_gold_answer_even_with_slips(name):
    task = thinkctl.tasks.get(name)
    rng = np.random.default_rng(0)
    style = TraceStyle(p_slip=0.5, p_check=0.5)
    n_slips = 0
    for p in task.sample(400, seed=9):
        th = thought_for(name, p, rng, style)
        assert th.answer == p.answer
        assert len(th.beliefs) == len(th.lines)
        n_slips += any(line.endswith(" no") for line in th.lines)
    assert n_slips > 50  # slips happen and are caught


def test_arith_forward_lines_are_correct_without_slips():
    task = ArithTask()
    rng = np.random.default_rng(1)
    style = TraceStyle(p_slip=0.0, p_check=1.0, p_second_check=0.0)
    for p in task.sample(200, seed=2):
        th = thought_for("arith", p, rng, style)
        forward = th.lines[: th.lines.index(CHECK_TEXT)]
        start, ops = ArithTask.chain(p)
        assert len(forward) == len(ops)
        for line in forward:
            a, op, b, r = LINE_RE.match(line).groups()
            assert eval(f"{a}{op}{b}") == int(r)  # noqa: S307 - digits and one operator only
        assert all(line.endswith(" ok") for line in th.lines[len(forward) + 1:])


def test_slipped_arith_step_is_repaired_by_the_recheck():
    task = ArithTask()
    rng = np.random.default_rng(3)
    style = TraceStyle(p_slip=1.0)
    p = task.sample(1, seed=4, level=4)[0]
    th = thought_for("arith", p, rng, style)
    n_ops = len(ArithTask.chain(p)[1])
    assert th.beliefs[n_ops - 1] != p.answer  # the forward pass ended on a wrong value
    assert CHECK_TEXT in th.lines and any(line.startswith("so ") for line in th.lines)
    assert th.answer == p.answer


def test_no_check_means_thinking_ends_after_the_forward_pass():
    rng = np.random.default_rng(5)
    style = TraceStyle(p_slip=0.0, p_check=0.0, p_second_check=0.0)
    for name in ["arith", "modeq"]:
        for p in thinkctl.tasks.get(name).sample(50, seed=6):
            th = thought_for(name, p, rng, style)
            assert CHECK_TEXT not in th.lines


def test_style_rejects_bad_probabilities():
    with pytest.raises(ValueError, match="p_check"):
        TraceStyle(p_check=1.5)


def test_modeq_uniqueness_sweep_restates_the_solution_on_every_line():
    # forced mid-sweep, the answer must be on the line just written (a small model does not look many lines back)
    task = thinkctl.tasks.get("modeq")
    rng = np.random.default_rng(7)
    style = TraceStyle(p_slip=0.0, p_check=1.0, p_second_check=0.0)
    swept = 0
    for p in task.sample(100, seed=8):
        th = thought_for("modeq", p, rng, style)
        if "Let me make sure no other x works." not in th.lines:
            continue  # the solution is p - 1: nothing left to sweep
        start = th.lines.index("Let me make sure no other x works.") + 1
        sweep = th.lines[start:-1]
        assert sweep and all(line.endswith(f", still x={p.answer}") for line in sweep)
        assert all(b == p.answer for b in th.beliefs[start:])
        swept += 1
    assert swept > 50


def test_arith_answer_cut_is_just_after_the_last_forward_step_equals_sign():
    task = ArithTask()
    rng = np.random.default_rng(6)
    style = TraceStyle(p_slip=0.3, p_check=0.5)
    for p in task.sample(300, seed=7):
        th = thought_for("arith", p, rng, style)
        n_ops = len(ArithTask.chain(p)[1])
        last_forward = th.lines[n_ops - 1]
        head = th.text[: th.answer_cut]
        assert head.endswith("=") and head.count("\n") == n_ops - 1  # inside the last forward line, after its "="
        assert last_forward == head.rsplit("\n", 1)[-1] + th.answer_cut_belief  # the result that line writes
        assert th.answer_cut_belief == th.beliefs[n_ops - 1]  # the first answer the trace holds (slipped or not)


def test_modeq_has_no_answer_cut():
    task = thinkctl.tasks.get("modeq")
    th = thought_for("modeq", task.sample(1, seed=1)[0], np.random.default_rng(0), TraceStyle())
    assert th.answer_cut is None and th.answer_cut_belief is None


@pytest.mark.parametrize("name", ["arith", "modeq"])
def test_slip_spans_hold_exactly_the_wrong_results(name):
    task = thinkctl.tasks.get(name)
    rng = np.random.default_rng(8)
    n_slipped = 0
    for p in task.sample(300, seed=11, level=3):
        th = thought_for(name, p, rng, TraceStyle(p_slip=0.6))
        assert len(th.slips) <= 1
        for start, end in th.slips:
            n_slipped += 1
            line_start = th.text.rfind("\n", 0, start) + 1
            line = th.text[line_start: th.text.index("\n", end)]
            head, wrong = th.text[line_start:start], th.text[start:end]
            assert head.endswith("=") and wrong.isdigit() and line.startswith(head + wrong)
            if name == "arith":  # the line claims a result its operands do not give
                a, op, b = re.match(r"^(\d+)([+*-])(\d+)=$", head).groups()
                assert eval(f"{a}{op}{b}") != int(wrong)  # noqa: S307 - digits and one operator only
            else:  # the claimed residue makes a false solution
                assert line.endswith(" found") and head.rstrip("=").rsplit("=", 1)[-1] != wrong
    assert n_slipped > 50


def test_split_checks_compute_through_numbers_and_flag_exactly_the_slipped_step():
    task = ArithTask()
    rng = np.random.default_rng(12)
    style = TraceStyle(p_slip=0.5, p_check=1.0, p_second_check=0.0, split_checks=True)
    split_lines = flagged = 0
    for p in task.sample(300, seed=13, level=5):
        th = thought_for("arith", p, rng, style)
        n_ops = len(ArithTask.chain(p)[1])
        forward = {}
        for line in th.lines[:n_ops]:
            a, op, b, r = SIGNED_LINE_RE.match(line).groups()
            forward[(a, op, b)] = r
        for line in th.lines[n_ops + 1:]:
            m = re.match(r"^(-?\d+)([+*-])(\d+): (.*) (ok|no)$", line)
            if not m:
                continue
            split_lines += 1
            a, op, b, body, verdict = m.groups()
            parts = [SIGNED_LINE_RE.match(part).groups() for part in body.split(", ")]
            for x, o, y, z in parts:  # every piece of the check is right
                assert eval(f"({x}){o}{y}") == int(z)  # noqa: S307 - digits and one operator only
            assert int(parts[-1][3]) == eval(f"({a}){op}{b}")  # noqa: S307 - the check ends on the true result
            claimed = forward.get((a, op, b))
            if claimed is not None:  # a step of the forward pass (not one recomputed after a repair)
                assert (verdict == "ok") == (int(claimed) == eval(f"({a}){op}{b}"))  # noqa: S307
                flagged += verdict == "no"
    assert split_lines > 500 and flagged > 50
