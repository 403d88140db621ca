"""Reasoning traces that teach the embedded model to think like a reasoning model.

For every built-in problem this module writes the thinking a careful solver would do, in the format of real
reasoning models: the forward computation, one line per verifiable step; then, often, a re-check introduced by
"Wait" that recomputes each step a different way and repairs the first wrong one it finds. Some training traces
carry a deliberate slip in the forward pass so that the re-check has something to repair: the model learns a real
self-correction behaviour rather than a verbal tic. Forced-answer examples (thinking cut short, then the answer)
teach it to answer from whatever it has worked out so far, as budget forcing requires.

The numbers that shape this behaviour are fields of :class:`TraceStyle`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from thinkctl.tasks.arith import ArithTask, apply_op
from thinkctl.tasks.base import Problem
from thinkctl.tasks.modeq import ModEqTask

__all__ = ["TraceStyle", "Thought", "arith_thought", "modeq_thought", "thought_for", "CHECK_TEXT", "RECHECK_TEXT"]

CHECK_TEXT = "Wait, let me check."
RECHECK_TEXT = "Wait, let me check again."
UNIQUE_TEXT = "Let me make sure no other x works."


@dataclass(frozen=True)
class TraceStyle:
    """Probabilities that shape the synthetic reasoning traces.

    Attributes
    ----------
    p_check : float
        Probability that a clean trace re-checks its work after the forward pass (the "overthinking" that
        early stopping can save; real reasoning models re-check even easy problems, Chen et al. 2024,
        "Do NOT Think That Much for 2+3=?").
    p_slip : float
        Probability that a training trace contains one wrong step in its forward pass. A trace with a slip always
        re-checks and repairs it, so the model learns that "Wait" leads to a real correction.
    p_second_check : float
        Probability that a re-checked trace checks once more ("Wait, let me check again."), so that a "Wait"
        appended by budget forcing after a finished check is still in distribution.
    split_checks : bool
        Re-check an arith step by splitting an operand, so that the check computes numbers not already on the page
        (``143-23`` as ``143-23: 143-20=123, 123-3=120``) instead of commuting or inverting the step, whose correct
        result is always written above and which a small model learns to copy rather than compute.
    """

    p_check: float = 0.7
    p_slip: float = 0.15
    p_second_check: float = 0.15
    split_checks: bool = False

    def __post_init__(self) -> None:
        for name in ("p_check", "p_slip", "p_second_check"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ValueError(f"{name}={v!r} must be a probability in [0, 1]")
        if not isinstance(self.split_checks, bool):
            raise ValueError(f"split_checks={self.split_checks!r} must be True or False")


@dataclass(frozen=True)
class Thought:
    """A synthetic thinking trace, as lines, with what the solver believes after each line.

    ``beliefs[i]`` is the answer the solver would give if stopped after line ``i`` (None while its forward pass
    is unfinished); ``answer`` is the belief at the end. ``answer_cut`` is where the answer is one operation away:
    the character offset in :attr:`text` just after the ``=`` of the step that first yields an answer, with that
    step's result as ``answer_cut_belief`` (both None for a family without such a point). ``slips`` are the
    character spans of :attr:`text` that hold a deliberately wrong result (the re-check's material, which training
    may keep out of the loss so that the model reads slips but never learns to make them).
    """

    lines: tuple[str, ...]
    beliefs: tuple[str | None, ...]
    answer_cut: int | None = None
    answer_cut_belief: str | None = None
    slips: tuple[tuple[int, int], ...] = ()

    @property
    def answer(self) -> str:
        final = self.beliefs[-1]
        assert final is not None, "a finished thought always has a belief"  # internal invariant
        return final

    @property
    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)


def _span_in_text(lines: list[str], index: int, start: int, end: int) -> tuple[int, int]:
    """Characters ``start:end`` of ``lines[index]`` as a span of the thought's text (lines joined by newlines)."""
    offset = sum(len(line) + 1 for line in lines[:index])
    return offset + start, offset + end


def _slip(rng: np.random.Generator, value: int) -> int:
    """A plausible arithmetic slip: one digit off by one (a dropped or spurious carry)."""
    digits = len(str(abs(value)))
    for _ in range(8):
        place = 10 ** int(rng.integers(0, digits))
        wrong = value + int(rng.choice([-1, 1])) * place
        if wrong >= 0 and wrong != value:
            return wrong
    return value + 1


def _arith_line(a: int, op: str, b: int, r: int) -> str:
    return f"{a}{op}{b}={r}"


def _arith_split_check_line(a: int, op: str, b: int, claimed: int) -> tuple[str, bool] | None:
    """Re-derive a step through numbers not on the page: + and - take the tens of ``b`` then its units, * takes the
    tens and the units of ``a`` apart. None when the split is trivial (a single-digit or round operand)."""
    if op in "+-":
        tens, units = b - b % 10, b % 10
        if tens == 0 or units == 0:
            return None
        mid = apply_op(a, op, tens)
        true = apply_op(mid, op, units)
        line = f"{a}{op}{b}: {a}{op}{tens}={mid}, {mid}{op}{units}={true}"
    else:
        tens, units = a - a % 10, a % 10
        if tens == 0 or units == 0:
            return None
        x, y = tens * b, units * b
        true = x + y
        line = f"{a}*{b}: {tens}*{b}={x}, {units}*{b}={y}, {x}+{y}={true}"
    return line, true == claimed


def _arith_check_line(a: int, op: str, b: int, claimed: int, split: bool = False) -> tuple[str, bool]:
    """Re-derive a step a different way: split an operand (``split``, where that is not trivial), else commute + and
    *, undo - with +."""
    if split:
        checked = _arith_split_check_line(a, op, b, claimed)
        if checked is not None:
            return checked
    if op == "+":
        return f"{b}+{a}={a + b}", a + b == claimed
    if op == "*":
        return f"{b}*{a}={a * b}", a * b == claimed
    return f"{claimed}+{b}={claimed + b}", claimed + b == a


def arith_thought(problem: Problem, rng: np.random.Generator, style: TraceStyle) -> Thought:
    start, ops = ArithTask.chain(problem)
    slip_at = int(rng.integers(0, len(ops))) if rng.random() < style.p_slip else -1
    lines: list[str] = []
    beliefs: list[str | None] = []
    steps: list[tuple[int, str, int, int]] = []  # (a, op, b, claimed result)
    slips: list[tuple[int, int]] = []
    value = start
    for i, (op, b) in enumerate(ops):
        r = apply_op(value, op, b)
        if i == slip_at:
            r = _slip(rng, r)
        steps.append((value, op, b, r))
        lines.append(_arith_line(value, op, b, r))
        if i == slip_at:
            slips.append(_span_in_text(lines, i, len(lines[i]) - len(str(r)), len(lines[i])))
        beliefs.append(str(r) if i == len(ops) - 1 else None)
        value = r
    # the last forward step's "=": its result is the first answer the trace holds
    forward_text = "".join(line + "\n" for line in lines[:-1])
    answer_cut, answer_cut_belief = len(forward_text) + lines[-1].index("=") + 1, str(value)
    slip_spans = tuple(slips)
    if slip_at < 0 and rng.random() >= style.p_check:
        return Thought(tuple(lines), tuple(beliefs), answer_cut, answer_cut_belief, slip_spans)
    belief = str(value)
    n_checks = 2 if rng.random() < style.p_second_check else 1
    for k in range(n_checks):
        lines.append(CHECK_TEXT if k == 0 else RECHECK_TEXT)
        beliefs.append(belief)
        for i, (a, op, b, claimed) in enumerate(steps):
            line, ok = _arith_check_line(a, op, b, claimed, style.split_checks)
            lines.append(line + (" ok" if ok else " no"))
            beliefs.append(belief)
            if ok:
                continue
            # repair: redo this step and recompute the rest of the chain from it
            fixed = apply_op(a, op, b)
            lines.append("so " + _arith_line(a, op, b, fixed))
            value = fixed
            new_steps = steps[:i] + [(a, op, b, fixed)]
            for op2, b2 in ops[i + 1:]:
                r2 = apply_op(value, op2, b2)
                new_steps.append((value, op2, b2, r2))
                lines.append(_arith_line(value, op2, b2, r2))
                value = r2
            belief = str(value)
            beliefs.extend([None] * (len(lines) - len(beliefs) - 1) + [belief])
            steps = new_steps
            break
    return Thought(tuple(lines), tuple(beliefs), answer_cut, answer_cut_belief, slip_spans)


def _modeq_line(a: int, b: int, x: int, p: int, residue: int) -> str:
    return f"x={x}: {a}*{x}+{b}={a * x + b}={residue}"


def modeq_thought(problem: Problem, rng: np.random.Generator, style: TraceStyle) -> Thought:
    a, b, c, p = ModEqTask.coefficients(problem)
    solution = int(problem.answer)
    # A slip claims a false solution at some x before the true one; the re-check catches it.
    slip_x = int(rng.integers(0, solution)) if solution > 0 and rng.random() < style.p_slip else -1
    lines: list[str] = []
    beliefs: list[str | None] = []
    slips: list[tuple[int, int]] = []
    x = 0
    while True:
        true_res = (a * x + b) % p
        claimed = c if x == slip_x else true_res
        found = claimed == c
        lines.append(_modeq_line(a, b, x, p, claimed) + (" found" if found else ""))
        if x == slip_x:
            end = len(_modeq_line(a, b, x, p, claimed))
            slips.append(_span_in_text(lines, len(lines) - 1, end - len(str(claimed)), end))
        beliefs.append(str(x) if found else None)
        if found:
            if x == slip_x:
                # re-check the false find, reject it, and search on
                lines.append(CHECK_TEXT)
                beliefs.append(str(x))
                ax, axb = a * x, a * x + b
                lines.append(f"{x}*{a}={ax}, {ax}+{b}={axb}, {axb}-{p * (axb // p)}={true_res} no")
                beliefs.append(None)
                x += 1
                continue
            break
        x += 1
    if slip_x < 0 and rng.random() >= style.p_check:
        return Thought(tuple(lines), tuple(beliefs), slips=tuple(slips))
    n_checks = 2 if rng.random() < style.p_second_check else 1
    v = a * x + b
    for k in range(n_checks):
        lines.append(CHECK_TEXT if k == 0 else RECHECK_TEXT)
        lines.append(f"{x}*{a}={a * x}, {a * x}+{b}={v}, {v}-{p * (v // p)}={v % p} ok")
        if k == 0 and x < p - 1:
            # the first check also confirms that the solution is unique by finishing the search; each line of that
            # sweep restates the solution it defends, so an answer forced mid-sweep is on the line just written (a
            # 4-layer model does not learn the long-range lookup: it answered with the x it was testing)
            lines.append(UNIQUE_TEXT)
            lines.extend(_modeq_line(a, b, y, p, (a * y + b) % p) + f", still x={x}" for y in range(x + 1, p))
            lines.append(f"only x={x}")
    beliefs.extend([str(x)] * (len(lines) - len(beliefs)))
    return Thought(tuple(lines), tuple(beliefs), slips=tuple(slips))


def thought_for(task_name: str, problem: Problem, rng: np.random.Generator, style: TraceStyle) -> Thought:
    """The synthetic thought for a problem of a built-in task."""
    if task_name == "arith":
        return arith_thought(problem, rng, style)
    if task_name == "modeq":
        return modeq_thought(problem, rng, style)
    raise ValueError(f"task {task_name!r} has no synthetic traces; the embedded model trains on 'arith' and 'modeq'")
