"""Problems, the task interface and the task registry.

A task is a family of verifiable problems. It knows how to sample problems deterministically from a seed,
how to pull the final answer out of generated text, and how to check that answer.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable

from thinkctl.registry import Registry

__all__ = [
    "Problem",
    "Task",
    "TASKS",
    "register",
    "get",
    "names",
    "answer_section",
    "extract_marked_answer",
    "THINK_OPEN",
    "THINK_CLOSE",
    "ANSWER_PREFIX",
]

#: Markers of the reasoning-model output format ``<think> ... </think>`` then ``Final Answer: X``.
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
ANSWER_PREFIX = "Final Answer:"


@dataclass(frozen=True)
class Problem:
    """One verifiable problem.

    Attributes
    ----------
    id : str
        Stable identifier, unique within its task (``"arith-7-0003"``).
    prompt : str
        The user message given to the model.
    answer : str
        The gold answer in the task's canonical form.
    level : int or None
        Difficulty tier (1 = easiest) when the task knows it.
    features : dict
        Query-side facts a difficulty model may use (never the answer).
    """

    id: str
    prompt: str
    answer: str
    level: int | None = None
    features: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "prompt": self.prompt, "answer": self.answer, "level": self.level,
                "features": dict(self.features)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Problem":
        return cls(id=str(d["id"]), prompt=str(d["prompt"]), answer=str(d["answer"]), level=d.get("level"),
                   features=dict(d.get("features") or {}))


class Task(ABC):
    """A family of verifiable problems.

    Subclasses implement :meth:`sample`, :meth:`extract_answer` and :meth:`check_answer`;
    :meth:`is_correct` composes the last two and never raises on garbage text.
    """

    #: Registry name of the task.
    name: str = ""
    #: Difficulty levels this task can sample, easiest first (empty when unknown).
    levels: tuple[int, ...] = ()

    @abstractmethod
    def sample(self, n: int, *, seed: int, level: int | None = None) -> list[Problem]:
        """Return ``n`` problems, identical for identical ``(n, seed, level)``."""

    @abstractmethod
    def extract_answer(self, text: str) -> str | None:
        """Return the final answer of ``text`` in canonical form, or None when there is none."""

    @abstractmethod
    def check_answer(self, problem: Problem, answer: str) -> bool:
        """Whether an extracted (canonical) ``answer`` is right for ``problem``."""

    def is_correct(self, problem: Problem, text: str) -> bool:
        """Extract the answer from generated ``text`` and check it; False when there is no answer."""
        if not isinstance(text, str):
            return False
        answer = self.extract_answer(text)
        if answer is None:
            return False
        try:
            return bool(self.check_answer(problem, answer))
        except (ValueError, TypeError, ArithmeticError, RecursionError):
            return False

    # -- helpers shared by the built-in families -------------------------------------------------------

    def _check_sample_args(self, n: int, seed: int, level: int | None) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"n={n!r} must be a non-negative integer number of problems")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed={seed!r} must be a non-negative integer")
        if level is not None and self.levels and level not in self.levels:
            raise ValueError(
                f"level={level!r} is not a level of task {self.name!r}; use one of {list(self.levels)} or None for all")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


# -- answer extraction shared by tasks --------------------------------------------------------------------

_MARKER_RE = re.compile(r"(?:final\s+answer|answer)\s*(?:is)?\s*[:=]?\s*", re.IGNORECASE)
_BOXED_RE = re.compile(r"\\boxed\s*\{")


def answer_section(text: str) -> str | None:
    """The part of ``text`` after the reasoning, or None while the reasoning is unfinished.

    Text with ``</think>`` returns what follows the last one; text that opened ``<think>`` without closing it
    has no answer yet (None); text without markers (a model that does not think aloud) is returned whole.
    """
    if THINK_CLOSE in text:
        return text.rsplit(THINK_CLOSE, 1)[1]
    if THINK_OPEN in text:
        return None
    return text


def _boxed_contents(text: str) -> list[str]:
    out = []
    for m in _BOXED_RE.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            out.append(text[m.end(): i - 1])
    return out


def extract_marked_answer(text: str, token_re: "re.Pattern[str]",
                          canonical: Callable[[str], str | None]) -> str | None:
    """Find a final answer matching ``token_re`` in the answer section of ``text``.

    Order of preference: the last ``\\boxed{...}``; the first match after the last answer marker
    ("Final Answer:", "the answer is"); the last match anywhere in the answer section.
    ``canonical`` maps a raw match to canonical form (or None to reject it).
    """
    if not isinstance(text, str):
        return None
    section = answer_section(text)
    if section is None:
        return None
    for boxed in reversed(_boxed_contents(section)):
        m = token_re.search(boxed)
        if m:
            value = canonical(m.group(0))
            if value is not None:
                return value
    markers = list(_MARKER_RE.finditer(section))
    if markers:
        m = token_re.search(section, markers[-1].end())
        if m:
            value = canonical(m.group(0))
            if value is not None:
                return value
    for m in reversed(list(token_re.finditer(section))):
        value = canonical(m.group(0))
        if value is not None:
            return value
    return None


# -- registry -------------------------------------------------------------------------------------------

TASKS: Registry[Callable[[], Task]] = Registry("task")


def register(name: str) -> Callable[[Callable[[], Task]], Callable[[], Task]]:
    """Register a task factory (usually the class) under ``name``: ``@register("arith")``."""
    return TASKS.register(name)


def names() -> list[str]:
    """Names of the registered task families, sorted."""
    return TASKS.names()


def get(name: str) -> Task:
    """Return a fresh instance of the task registered as ``name``.

    Raises
    ------
    thinkctl.registry.UnknownNameError
        (a KeyError and a ValueError) when no task has that name; the message lists the known names.
    """
    return TASKS.get(name)()
