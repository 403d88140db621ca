"""``mix``: the built-in families over all their levels, in equal shares -- a stand-in for deployed traffic.

A deployed reasoning model sees heterogeneous queries: easy and hard, short searches and long chains. ``mix`` draws
each problem from ``arith`` or ``modeq`` with probability 1/2 (deterministically from the seed), at a level drawn
uniformly from that family's levels, so a controller evaluated on it must decide per query what each kind needs.
A problem keeps its family's id prefix (``arith-...`` / ``modeq-...``), prompt, answer and level;
``features["family"]`` names the family. Answers of both families are integers, checked the same way.
"""

from __future__ import annotations

import numpy as np

from thinkctl.tasks.arith import ArithTask, canonical_int
from thinkctl.tasks.base import Problem, Task, register
from thinkctl.tasks.modeq import ModEqTask

__all__ = ["MixTask", "MIX_FAMILIES"]

#: The families mixed, each drawn with probability ``1 / len(MIX_FAMILIES)``.
MIX_FAMILIES: dict[str, type[Task]] = {"arith": ArithTask, "modeq": ModEqTask}


@register("mix")
class MixTask(Task):
    """``arith`` and ``modeq`` problems in equal shares, over all their levels.

    ``level`` filters on the family's own level (a level that only one family has draws from that family alone).
    """

    name = "mix"
    levels = tuple(sorted({lvl for cls in MIX_FAMILIES.values() for lvl in cls.levels}))

    def __init__(self) -> None:
        self._families = {name: cls() for name, cls in MIX_FAMILIES.items()}

    def sample(self, n: int, *, seed: int, level: int | None = None) -> list[Problem]:
        self._check_sample_args(n, seed, level)
        names = [f for f, t in self._families.items() if level is None or level in t.levels]
        rng = np.random.default_rng([seed, 0x3717, level or 0])
        family = rng.integers(0, len(names), size=n)
        counts = np.bincount(family, minlength=len(names))
        # each family draws its share with its own seed stream, so a problem depends only on (seed, family, rank)
        drawn = {f: iter(self._families[f].sample(int(counts[i]), seed=seed, level=level))
                 for i, f in enumerate(names) if counts[i]}
        out = []
        for i, k in enumerate(family):
            p = next(drawn[names[k]])
            out.append(Problem(id=f"mix-{p.id}-{i:05d}", prompt=p.prompt, answer=p.answer, level=p.level,
                               features={**p.features, "family": names[k]}))
        return out

    def family_of(self, problem: Problem) -> Task:
        """The family task that ``problem`` was drawn from."""
        name = problem.features.get("family")
        if name not in self._families:
            raise ValueError(f"problem {problem.id!r} has no mix family (features['family']={name!r}); "
                             f"use one of {sorted(self._families)}")
        return self._families[name]

    def extract_answer(self, text: str) -> str | None:
        return self._families["arith"].extract_answer(text)

    def check_answer(self, problem: Problem, answer: str) -> bool:
        return canonical_int(answer) == canonical_int(problem.answer)
