"""``modeq``: solve a linear congruence ``a*x + b = c (mod p)`` by search.

Structurally unlike ``arith``: the chain of thought is a search whose length is not known from the prompt. The
model tries ``x = 0, 1, 2, ...``, computing ``a*x+b`` and its residue modulo ``p`` on each line, until the
residue equals ``c``. Each line is verifiable on its own; a wrong residue either misses the solution (the
search overshoots) or claims a false one. The level sets the prime ``p``, which sets both the length of the
search and the size of the numbers reduced. The embedded model trains on levels 1-6 only: level 7 (p = 19) is
beyond its training, where a search line ``x=17`` is one it has never written.
"""

from __future__ import annotations

import re

import numpy as np

from thinkctl.tasks.arith import canonical_int
from thinkctl.tasks.base import Problem, Task, extract_marked_answer, register

__all__ = ["ModEqTask", "MODEQ_PRIMES"]

#: Prime modulus of each level.
MODEQ_PRIMES: dict[int, int] = {1: 3, 2: 5, 3: 7, 4: 11, 5: 13, 6: 17, 7: 19}

_INT_RE = re.compile(r"-?\d+")
_PROMPT_RE = re.compile(r"Solve (\d+)x \+ (\d+) = (\d+) \(mod (\d+)\)")


@register("modeq")
class ModEqTask(Task):
    """Linear congruences ``a*x + b = c (mod p)`` with a unique solution ``x`` in ``0..p-1``, levels 1 to 7.

    ``Problem.features`` holds ``p``, ``a``, ``b``, ``c`` and ``digits_p``.
    """

    name = "modeq"
    levels = tuple(sorted(MODEQ_PRIMES))

    def sample(self, n: int, *, seed: int, level: int | None = None) -> list[Problem]:
        self._check_sample_args(n, seed, level)
        rng = np.random.default_rng([seed, 0x30DE, level or 0])
        out = []
        for i in range(n):
            lvl = int(level if level is not None else rng.choice(self.levels))
            p = MODEQ_PRIMES[lvl]
            a = int(rng.integers(1, p))
            b = int(rng.integers(0, p))
            x = int(rng.integers(0, p))
            c = (a * x + b) % p
            prompt = f"Solve {a}x + {b} = {c} (mod {p}) for x in 0..{p - 1}."
            features = {"p": p, "a": a, "b": b, "c": c, "digits_p": len(str(p))}
            out.append(Problem(id=f"modeq-{seed}-{i:05d}", prompt=prompt, answer=str(x), level=lvl,
                               features=features))
        return out

    @staticmethod
    def coefficients(problem: Problem) -> tuple[int, int, int, int]:
        """``(a, b, c, p)`` of a modeq problem, parsed from its prompt."""
        m = _PROMPT_RE.search(problem.prompt)
        if m is None:
            raise ValueError(f"problem {problem.id!r} is not a modeq problem: {problem.prompt!r}")
        a, b, c, p = (int(g) for g in m.groups())
        return a, b, c, p

    def extract_answer(self, text: str) -> str | None:
        return extract_marked_answer(text, _INT_RE, canonical_int)

    def check_answer(self, problem: Problem, answer: str) -> bool:
        return canonical_int(answer) == canonical_int(problem.answer)
