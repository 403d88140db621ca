"""Step scorers: one score per reasoning step, and the aggregations that turn them into one score per solution.

A *step* is one line of a solution's reasoning (blank lines dropped; :func:`split_steps`). A step scorer sees the
problem and the steps so far and returns one score per step, higher meaning "this step is right" (a process reward
model's probability that the step is correct, a checker's 1/0). Three kinds ship:

* :class:`~thinkctl.process.checker.ExactStepChecker` - exact verification of the built-in tasks' thinking lines;
* :class:`~thinkctl.process.probe.ProcessProbeScorer` - a hidden-state probe read at the end of every step;
* :class:`CallableStepScorer` - any callable ``f(prompt, steps) -> scores`` (a real PRM on a GPU, an API verifier).

Aggregations follow search-and-learn (Beeching, Tunstall & Rush 2024, "Scaling test-time compute with open
models"): ``last`` (the PRM's score of the final step), ``min`` (the weakest step) and ``prod`` (product of step
scores, the probability that every step is right if steps were independent). ``mean`` is added as a common
baseline.

Examples
--------
>>> from thinkctl.process import CallableStepScorer, aggregate
>>> scorer = CallableStepScorer(lambda prompt, steps: [0.9] * len(steps))
>>> scores = scorer.score_text("What is 2+2?", "2+2=4\\nanswer 4")
>>> [round(float(s), 2) for s in scores], round(aggregate(scores, "prod"), 2)
([0.9, 0.9], 0.81)
"""

from __future__ import annotations

import math
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from thinkctl.registry import Registry
from thinkctl.tasks.base import Problem

__all__ = ["StepScorer", "CallableStepScorer", "AGGREGATIONS", "aggregate", "split_steps", "check_step_scores"]


def split_steps(text: str) -> list[str]:
    """The steps of a reasoning text: its non-empty lines, stripped, in order."""
    return [line.strip() for line in text.splitlines() if line.strip()]


@runtime_checkable
class StepScorer(Protocol):
    """Anything that scores the steps of a (partial) solution.

    ``score(problem, steps)`` returns an array of shape ``(len(steps),)``: the score of each step given the problem
    and the steps before it (higher = more likely right). Scorers must be deterministic for given inputs, so that
    search results are reproducible.
    """

    #: Name used in reports and JSON (e.g. ``"check"``, ``"process-probe"``).
    name: str

    def score(self, problem: Problem, steps: Sequence[str]) -> NDArray[np.float64]:
        ...


def check_step_scores(scores: Any, n_steps: int, who: str) -> NDArray[np.float64]:
    """Validate a scorer's output: a finite float array of shape ``(n_steps,)``; a clear error otherwise."""
    try:
        arr = np.asarray(scores, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{who} returned {type(scores).__name__}, not a sequence of numbers: {exc}") from exc
    if arr.shape != (n_steps,):
        raise ValueError(f"{who} returned {arr.size} scores for {n_steps} steps; a step scorer returns one score per "
                         "step")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{who} returned non-finite scores {arr.tolist()}; scores must be finite numbers")
    return arr


class CallableStepScorer:
    """Wrap any callable ``fn(prompt, steps) -> sequence of floats`` as a :class:`StepScorer`.

    Parameters
    ----------
    fn : callable
        ``fn(prompt: str, steps: list[str]) -> sequence of len(steps) floats``, higher = better. A process reward
        model served anywhere plugs in here (e.g. Math-Shepherd's score of the "+" token at each step tag).
    name : str, default="callable"
        Name in reports.
    """

    def __init__(self, fn: Callable[[str, list[str]], Sequence[float]], *, name: str = "callable") -> None:
        if not callable(fn):
            raise ValueError(f"fn={fn!r} is not callable; pass a function fn(prompt, steps) -> scores")
        self.fn = fn
        self.name = name

    def score(self, problem: Problem, steps: Sequence[str]) -> NDArray[np.float64]:
        steps = list(steps)
        if not steps:
            return np.zeros(0)
        return check_step_scores(self.fn(problem.prompt, steps), len(steps), f"step scorer {self.name!r}")

    def score_text(self, prompt: str, text: str) -> NDArray[np.float64]:
        """Score the steps of ``text`` (see :func:`split_steps`) for a bare prompt."""
        steps = split_steps(text)
        return check_step_scores(self.fn(prompt, steps), len(steps), f"step scorer {self.name!r}") if steps \
            else np.zeros(0)


def _last(s: NDArray[np.float64]) -> float:
    return float(s[-1])


def _min(s: NDArray[np.float64]) -> float:
    return float(s.min())


def _prod(s: NDArray[np.float64]) -> float:
    # in log space: long solutions would underflow; scores <= 0 give 0 (a step judged certainly wrong)
    if np.any(s <= 0.0):
        return 0.0
    return float(math.exp(float(np.sum(np.log(s)))))


def _mean(s: NDArray[np.float64]) -> float:
    return float(s.mean())


#: Step-score aggregations by name: ``last``, ``min``, ``prod`` (search-and-learn's three) and ``mean``.
AGGREGATIONS: Registry[Callable[[NDArray[np.float64]], float]] = Registry("aggregation")
AGGREGATIONS.add("last", _last)
AGGREGATIONS.add("min", _min)
AGGREGATIONS.add("prod", _prod)
AGGREGATIONS.add("mean", _mean)


def aggregate(step_scores: Sequence[float] | NDArray[np.float64], how: str = "min") -> float:
    """One score for a solution from its step scores (``how`` in :data:`AGGREGATIONS`); NaN for no steps."""
    fn = AGGREGATIONS.get(how)
    s = np.asarray(step_scores, dtype=np.float64).reshape(-1)
    if s.size == 0:
        return math.nan
    return fn(s)
