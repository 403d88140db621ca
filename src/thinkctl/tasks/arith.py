"""``arith``: multi-step integer arithmetic evaluated left to right.

A problem is a chain ``37 + 45 - 12 * 3`` evaluated from left to right. Its chain of thought is a sequence of
verifiable intermediate results (``37+45=82``, ``82-12=70``, ``70*3=210``), so every step of a trace can be
checked on its own. The level sets the number of operations and the size of the operands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from thinkctl.tasks.base import Problem, Task, extract_marked_answer, register

__all__ = ["ArithTask", "ArithLevel", "ARITH_LEVELS", "apply_op"]


@dataclass(frozen=True)
class ArithLevel:
    """Shape of the problems of one difficulty level."""

    n_ops: int          # operations in the chain
    max_operand: int    # largest added/subtracted operand
    max_start: int      # largest starting value
    allow_mul: bool     # whether single-digit multiplications appear
    max_value: int      # every intermediate result stays in [0, max_value]


#: Level 1 is one small addition or subtraction; level 6 is a chain of seven steps on three-digit numbers.
ARITH_LEVELS: dict[int, ArithLevel] = {
    1: ArithLevel(n_ops=1, max_operand=9, max_start=9, allow_mul=False, max_value=99),
    2: ArithLevel(n_ops=2, max_operand=20, max_start=30, allow_mul=False, max_value=99),
    3: ArithLevel(n_ops=3, max_operand=99, max_start=99, allow_mul=False, max_value=999),
    4: ArithLevel(n_ops=4, max_operand=99, max_start=99, allow_mul=True, max_value=999),
    5: ArithLevel(n_ops=5, max_operand=999, max_start=999, allow_mul=True, max_value=9999),
    6: ArithLevel(n_ops=7, max_operand=999, max_start=999, allow_mul=True, max_value=9999),
}

_MUL_MIN, _MUL_MAX = 2, 9
_MAX_ANSWER_DIGITS = 40  # longer digit strings are garbage, not answers (and int() refuses very long ones)
_INT_RE = re.compile(r"-?\d+")


def apply_op(a: int, op: str, b: int) -> int:
    """``a op b`` for op in ``+ - *``."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    raise ValueError(f"op={op!r} is not an arith operation; use '+', '-' or '*'")


def canonical_int(raw: str) -> str | None:
    """Canonical text of an integer (``"007"`` -> ``"7"``, ``"-0"`` -> ``"0"``), None for non-integers."""
    raw = raw.strip()
    digits = raw.lstrip("-")
    if not digits.isdigit() or len(digits) > _MAX_ANSWER_DIGITS or raw.count("-") > 1:
        return None
    return str(int(raw))


@register("arith")
class ArithTask(Task):
    """Left-to-right integer arithmetic chains, levels 1 (easiest) to 6.

    ``Problem.features`` holds ``n_ops``, ``n_mul``, ``max_digits``, ``start`` and ``operands`` (query-side facts).
    ``Problem.features["steps"]`` is not stored: the chain is recomputed from the prompt by :meth:`chain`.
    """

    name = "arith"
    levels = tuple(sorted(ARITH_LEVELS))

    def sample(self, n: int, *, seed: int, level: int | None = None) -> list[Problem]:
        self._check_sample_args(n, seed, level)
        rng = np.random.default_rng([seed, 0xA217, level or 0])
        out = []
        for i in range(n):
            lvl = int(level if level is not None else rng.choice(self.levels))
            start, ops = self._draw_chain(rng, ARITH_LEVELS[lvl])
            out.append(self._make_problem(f"arith-{seed}-{i:05d}", lvl, start, ops))
        return out

    @staticmethod
    def _draw_chain(rng: np.random.Generator, spec: ArithLevel) -> tuple[int, list[tuple[str, int]]]:
        value = int(rng.integers(1, spec.max_start + 1))
        start = value
        ops: list[tuple[str, int]] = []
        for _ in range(spec.n_ops):
            choices = ["+", "-"]
            if spec.allow_mul and value * _MUL_MIN <= spec.max_value:
                choices.append("*")
            op = str(rng.choice(choices))
            if op == "*":
                hi = min(_MUL_MAX, spec.max_value // max(value, 1))
                b = int(rng.integers(_MUL_MIN, hi + 1))
            elif op == "+":
                hi = min(spec.max_operand, spec.max_value - value)
                if hi < 1:
                    op, hi = "-", min(spec.max_operand, value)
                b = int(rng.integers(1, hi + 1))
            else:
                hi = min(spec.max_operand, value)
                if hi < 1:
                    op, hi = "+", min(spec.max_operand, spec.max_value - value)
                b = int(rng.integers(1, hi + 1))
            value = apply_op(value, op, b)
            ops.append((op, b))
        return start, ops

    @staticmethod
    def _make_problem(pid: str, level: int, start: int, ops: list[tuple[str, int]]) -> Problem:
        expr = " ".join([str(start)] + [f"{op} {b}" for op, b in ops])
        value = start
        for op, b in ops:
            value = apply_op(value, op, b)
        operands = [start] + [b for _, b in ops]
        features = {
            "n_ops": len(ops),
            "n_mul": sum(op == "*" for op, _ in ops),
            "max_digits": max(len(str(x)) for x in operands),
            "total_digits": sum(len(str(x)) for x in operands),
        }
        prompt = f"Evaluate from left to right: {expr}"
        return Problem(id=pid, prompt=prompt, answer=str(value), level=level, features=features)

    @staticmethod
    def chain(problem: Problem) -> tuple[int, list[tuple[str, int]]]:
        """The start value and ``(op, operand)`` list of an arith problem, parsed from its prompt."""
        expr = problem.prompt.split(":", 1)[1]
        tokens = expr.split()
        start = int(tokens[0])
        ops = [(tokens[i], int(tokens[i + 1])) for i in range(1, len(tokens) - 1, 2)]
        return start, ops

    def extract_answer(self, text: str) -> str | None:
        return extract_marked_answer(text, _INT_RE, canonical_int)

    def check_answer(self, problem: Problem, answer: str) -> bool:
        return canonical_int(answer) == canonical_int(problem.answer)
