"""An exact step checker for the built-in tasks: every thinking line that can be verified is verified.

For arith and modeq, a reasoning step is a line of arithmetic, so its correctness is decidable, the way unit tests
decide a code step (execution verification). :class:`ExactStepChecker` scores a step 1.0 when it is right and 0.0
when it is not:

* **arithmetic claims**: every chain ``e1 = e2 = ...`` of integer expressions (``+``, ``-``, ``*``, standard
  precedence) in the line must hold;
* **arith forward steps** (``a op b = r``): the step must apply the problem's next operation to the result the
  previous step claimed (a right sum of the wrong numbers is an error); a repair ``so a op b = r`` restarts the
  chain at that operation;
* **arith checks** (``... ok`` / ``... no``): the verdict must say whether the re-derived value agrees with the
  result the checked step claimed;
* **modeq tries** (``x=X: a*X+b=V=R``): the coefficients are the problem's, ``V = a*X + b``, ``R = V mod p``, and
  the line says ``found`` exactly when ``R`` is the right-hand side; tries go through ``x = 0, 1, ...`` in order
  (a skipped ``x`` may skip the solution); modeq checks' verdicts and the closing ``only x=X`` are checked too.

Lines with nothing to verify (``Wait, let me check.``) score 1.0. For any other task, or text in other formats (an
instruct model's prose), only the arithmetic claims are checked, which is what an exact checker can promise there.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np
from numpy.typing import NDArray

from thinkctl.tasks.arith import ArithTask, apply_op
from thinkctl.tasks.base import Problem
from thinkctl.tasks.modeq import ModEqTask

#: How the built-in tasks' prompts start, to recognise a bare prompt's family.
ARITH_PROMPT_START = "Evaluate from left to right:"
MODEQ_PROMPT_RE = re.compile(r"Solve (\d+)x \+ (\d+) = (\d+) \(mod (\d+)\)")

__all__ = ["ExactStepChecker", "arithmetic_claims_hold", "CHECKED_FAMILIES"]

#: Task families whose step structure the checker knows; others get arithmetic claims only.
CHECKED_FAMILIES = ("arith", "modeq")

_INT = r"-?\d{1,60}"
_EXPR = rf"{_INT}(?:\s*[-+*]\s*\d{{1,60}})*"
_CHAIN_RE = re.compile(rf"(?<![\w.=])({_EXPR}(?:\s*=\s*{_EXPR})+)(?!\w|\.\d)")  # not inside 2.5 or x2
_TOKEN_RE = re.compile(r"\d+|[-+*]")
_FORWARD_RE = re.compile(r"^(-?\d+)([-+*])(\d+)=(-?\d+)$")
_REPAIR_RE = re.compile(r"^so (-?\d+)([-+*])(\d+)=(-?\d+)$")
_VERDICT_RE = re.compile(r"^(.*) (ok|no)$")
_SPLIT_HEAD_RE = re.compile(r"^(-?\d+)([-+*])(\d+):")
_MODEQ_TRY_RE = re.compile(r"^x=(\d+): (-?\d+)\*(\d+)\+(-?\d+)=(-?\d+)=(-?\d+)( found|, still x=(\d+))?$")
_MODEQ_ONLY_RE = re.compile(r"^only x=(\d+)$")


def _evaluate(expr: str) -> int:
    """Value of an integer expression of ``+``, ``-``, ``*`` with the usual precedence (a leading minus allowed)."""
    tokens = _TOKEN_RE.findall(expr.replace(" ", ""))
    if tokens and tokens[0] == "-":
        tokens = ["0", "-"] + tokens[1:]
        # "-5*3" is -(5*3): the same value as 0 - 5*3
    total, sign, term = 0, 1, int(tokens[0])
    i = 1
    while i < len(tokens):
        op, value = tokens[i], int(tokens[i + 1])
        if op == "*":
            term *= value
        else:
            total += sign * term
            sign, term = (1 if op == "+" else -1), value
        i += 2
    return total + sign * term


def _claims(line: str) -> list[list[int]]:
    return [[_evaluate(part) for part in chain.split("=")] for chain in _CHAIN_RE.findall(line)]


def arithmetic_claims_hold(line: str) -> bool:
    """Whether every chain ``e1 = e2 = ...`` of integer expressions in ``line`` holds (True when there is none)."""
    return all(len(set(values)) == 1 for values in _claims(line))


def _last_value(text: str) -> int | None:
    claims = _claims(text)
    return claims[-1][-1] if claims else None


_ARITH_EXPR_RE = re.compile(r"Evaluate from left to right: (-?\d+(?: [-+*] \d+)*)")


class _ArithState:
    def __init__(self, problem: Problem) -> None:
        # the expression alone: a prompt may go on with an instruction (an instruct model's suffix)
        m = _ARITH_EXPR_RE.search(problem.prompt)
        bare = problem if m is None else Problem(id=problem.id, prompt=f"{ARITH_PROMPT_START} {m[1]}", answer="")
        self.start, self.ops = ArithTask.chain(bare)
        self.value, self.k = self.start, 0
        self.claims: list[tuple[int, str, int, int]] = []  # (a, op, b, claimed result) of the chain's steps, in order
        self.checked = 0  # checks go through the steps in order: the first step a verdict may refer to

    def step(self, line: str) -> bool:
        if (m := _FORWARD_RE.match(line)) and self.k < len(self.ops):
            a, op, b, r = int(m[1]), m[2], int(m[3]), int(m[4])
            ok = a == self.value and (op, b) == self.ops[self.k] and r == apply_op(a, op, b)
            self.claims[self.k:] = [(a, op, b, r)]
            self.value, self.k = r, self.k + 1
            return ok
        if m := _REPAIR_RE.match(line):
            a, op, b, r = int(m[1]), m[2], int(m[3]), int(m[4])
            redone = [i for i, c in enumerate(self.claims) if c[:3] == (a, op, b)]
            ok = r == apply_op(a, op, b) and bool(redone)
            if redone:
                i = redone[-1]
                self.claims[i:] = [(a, op, b, r)]
                self.value, self.k = r, i + 1
            return ok
        if m := _VERDICT_RE.match(line):
            return arithmetic_claims_hold(m[1]) and self._verdict_right(m[1], m[2] == "ok")
        if not _claims(line):  # "Wait, let me check (again)." : the checks start over from the first step
            self.checked = 0
        return arithmetic_claims_hold(line)

    def _verdict_right(self, body: str, says_ok: bool) -> bool:
        """Whether a check's verdict is right about the step it re-derives (True when that step cannot be told)."""
        head = _SPLIT_HEAD_RE.match(body)
        m = _FORWARD_RE.match(body)
        for i in range(self.checked, len(self.claims)):
            a, op, b, claimed = self.claims[i]
            if head:  # "a op b: ... = true": the split re-derivation of step (a, op, b)
                if (int(head[1]), head[2], int(head[3])) != (a, op, b):
                    continue
                value, agrees = _last_value(body[head.end():]), None
                agrees = None if value is None else value == claimed
            elif m and op in "+*" and m[2] == op and (int(m[1]), int(m[3])) == (b, a):  # commuted
                agrees = int(m[4]) == claimed
            elif m and op == "-" and m[2] == "+" and (int(m[1]), int(m[3])) == (claimed, b):  # "r + b = a" undoes a-b
                agrees = int(m[4]) == a
            else:
                continue
            self.checked = i + 1
            return True if agrees is None else says_ok == agrees
        return True


class _ModEqState:
    def __init__(self, problem: Problem) -> None:
        self.a, self.b, self.c, self.p = ModEqTask.coefficients(problem)
        self.next_x = 0

    def _solves(self, x: int) -> bool:
        return (self.a * x + self.b) % self.p == self.c

    def step(self, line: str) -> bool:
        if m := _MODEQ_TRY_RE.match(line):
            x, a, x2, b, v, r = (int(m[i]) for i in range(1, 7))
            ok = (a, b) == (self.a, self.b) and x2 == x and v == a * x + b and r == v % self.p and x < self.p
            ok = ok and x == self.next_x
            if m[7] == " found":
                ok = ok and r == self.c
            elif m[8] is not None:  # the uniqueness sweep restates the solution it defends
                ok = ok and r != self.c and self._solves(int(m[8]))
            else:
                ok = ok and r != self.c
            self.next_x = x + 1
            return ok
        if m := _MODEQ_ONLY_RE.match(line):
            return self._solves(int(m[1]))
        if m := _VERDICT_RE.match(line):
            if not arithmetic_claims_hold(m[1]):
                return False
            residue = _last_value(m[1])
            return True if residue is None else ((m[2] == "ok") == (residue == self.c))
        return arithmetic_claims_hold(line)


class ExactStepChecker:
    """Score each step 1.0 (verified right) or 0.0 (an error) for the built-in tasks; see the module docstring.

    Parameters
    ----------
    family : {"arith", "modeq"} or None, default=None
        The task family whose step structure to check. None: taken from each problem (``features["family"]`` for
        ``mix`` problems, else the id's prefix ``arith-`` / ``modeq-``, else the prompt's form); problems of other
        tasks get the arithmetic-claims check only.

    Examples
    --------
    >>> from thinkctl.tasks.base import Problem
    >>> p = Problem(id="arith-1-0", prompt="Evaluate from left to right: 3 + 4 * 2", answer="14", level=1)
    >>> ExactStepChecker("arith").score(p, ["3+4=7", "7*2=15"]).tolist()
    [1.0, 0.0]
    """

    name = "check"

    def __init__(self, family: str | None = None) -> None:
        if family is not None and family not in CHECKED_FAMILIES:
            raise ValueError(f"family={family!r} is not checked step by step; use one of {CHECKED_FAMILIES} or None")
        self.family = family

    def _family(self, problem: Problem) -> str | None:
        if self.family is not None:
            return self.family
        fam = problem.features.get("family") if isinstance(problem.features, dict) else None
        if fam in CHECKED_FAMILIES:
            return str(fam)
        for f in CHECKED_FAMILIES:
            if problem.id.startswith(f + "-"):
                return f
        if problem.prompt.startswith(ARITH_PROMPT_START):
            return "arith"
        if MODEQ_PROMPT_RE.search(problem.prompt):
            return "modeq"
        return None

    def score(self, problem: Problem, steps: Sequence[str]) -> NDArray[np.float64]:
        family = self._family(problem)
        state: _ArithState | _ModEqState | None
        state = _ArithState(problem) if family == "arith" else _ModEqState(problem) if family == "modeq" else None
        out = np.empty(len(steps), dtype=np.float64)
        for i, raw in enumerate(steps):
            line = raw.strip()
            out[i] = float(state.step(line) if state is not None else arithmetic_claims_hold(line))
        return out
