"""Real benchmark problems (MATH, GSM8K, AIME/AMC) as tasks, with a math-aware, time-bounded answer checker.

The problem files live in the data directory (``data_dir=``, else ``$THINKCTL_DATA``; see :func:`find_data_dir`)
under ``problems/``. :class:`JsonlProblemsTask` loads any file of their schema (:func:`load_problems`).
``math_task``, ``gsm8k_task`` and ``aime_task`` locate the three shipped files; :data:`BENCHMARK_TASKS` maps their
registry names to them.

The parts live in their own modules and are importable from here too: :mod:`thinkctl.tasks.data` (finding and
reading the files), :mod:`thinkctl.tasks.answers` (answer extraction and canonical form) and
:mod:`thinkctl.tasks.verify` (the math-verify comparison, bounded in time).

Examples
--------
>>> from thinkctl.tasks.benchmarks import JsonlProblemsTask, answers_equivalent
>>> answers_equivalent("\\\\frac{1}{2}", "0.5")
True
"""

from __future__ import annotations

import logging
import math
import os
import threading
from pathlib import Path
from typing import Callable

import numpy as np

from thinkctl.tasks.answers import canonical_answer, extract_final_answer
from thinkctl.tasks.base import Problem, Task
from thinkctl.tasks.data import (DATA_ENV_VAR, DEFAULT_INSTRUCTION, PROBLEM_FILES, DataNotFoundError, find_data_dir,
                                 load_problems, problem_file)
from thinkctl.tasks.verify import DEFAULT_VERIFY_TIMEOUT_S, MAX_ANSWER_CHARS, answers_equivalent

__all__ = [
    "DATA_ENV_VAR",
    "PROBLEM_FILES",
    "DEFAULT_INSTRUCTION",
    "DEFAULT_VERIFY_TIMEOUT_S",
    "MAX_ANSWER_CHARS",
    "DataNotFoundError",
    "find_data_dir",
    "problem_file",
    "load_problems",
    "extract_final_answer",
    "canonical_answer",
    "answers_equivalent",
    "JsonlProblemsTask",
    "math_task",
    "gsm8k_task",
    "aime_task",
    "BENCHMARK_TASKS",
]

logger = logging.getLogger(__name__)


class JsonlProblemsTask(Task):
    """Problems of a JSONL file of the shared problem schema, with math-verify answer checking.

    Parameters
    ----------
    path : str or path-like
        The problem file (see :func:`find_data_dir` for the shipped ones).
    name : str, optional
        Task name (default: the file's stem).
    numeric : bool, default=False
        Answers are plain numbers (GSM8K, AIME): extraction drops units and currency (see :func:`canonical_answer`).
    instruction : str or None, default=DEFAULT_INSTRUCTION
        Appended to each question to form the prompt.
    gold_from_solution : bool, default=True
        Gold answer from the reference solution's last ``\\boxed{}`` where there is one (see :func:`load_problems`).
    verify_timeout_s : float, default=DEFAULT_VERIFY_TIMEOUT_S
        Bound of one math-aware comparison (:func:`answers_equivalent`).

    Notes
    -----
    The file is read on first use. ``levels`` are the MATH levels present in the file (empty when it has none).
    For GSM8K the difficulty proxy in ``features`` (number of reference solution steps) is derived from the
    reference solution, so it is not available for a new query.

    Examples
    --------
    >>> task = math_task()                            # doctest: +SKIP
    >>> problems = task.sample(5, seed=0, level=3)    # doctest: +SKIP
    >>> task.is_correct(problems[0], "... \\\\boxed{" + problems[0].answer + "}")  # doctest: +SKIP
    True
    """

    def __init__(self, path: str | os.PathLike[str], *, name: str | None = None, numeric: bool = False,
                 instruction: str | None = DEFAULT_INSTRUCTION, gold_from_solution: bool = True,
                 verify_timeout_s: float = DEFAULT_VERIFY_TIMEOUT_S) -> None:
        if not (isinstance(verify_timeout_s, (int, float)) and verify_timeout_s > 0
                and math.isfinite(verify_timeout_s)):
            raise ValueError(f"verify_timeout_s={verify_timeout_s!r} must be a positive number of seconds")
        self.path = Path(path)
        self.name = name if name is not None else self.path.stem
        self.numeric = numeric
        self.instruction = instruction
        self.gold_from_solution = gold_from_solution
        self.verify_timeout_s = float(verify_timeout_s)
        self._problems: tuple[Problem, ...] | None = None
        self._lock = threading.Lock()

    @property
    def problems(self) -> tuple[Problem, ...]:
        """All problems of the file, in file order (read on first access)."""
        if self._problems is None:
            with self._lock:
                if self._problems is None:
                    self._problems = tuple(load_problems(self.path, instruction=self.instruction,
                                                         gold_from_solution=self.gold_from_solution,
                                                         numeric=self.numeric))
                    logger.debug("loaded %d problems from %s", len(self._problems), self.path)
        return self._problems

    @property
    def levels(self) -> tuple[int, ...]:  # type: ignore[override]
        """MATH levels present in the file, easiest first (empty when it has none)."""
        return tuple(sorted({p.level for p in self.problems if p.level is not None}))

    def __len__(self) -> int:
        return len(self.problems)

    def sample(self, n: int, *, seed: int, level: int | None = None) -> list[Problem]:
        """``n`` distinct problems drawn without replacement, identical for identical ``(n, seed, level)``.

        The draw is the first ``n`` of ``numpy.random.default_rng(seed).permutation`` over the file's problems (of
        ``level`` when given), so a smaller ``n`` with the same seed gives a prefix of a larger one.

        Raises
        ------
        ValueError
            For a bad ``n``/``seed``/``level``, or when ``n`` exceeds the number of problems available.
        """
        self._check_sample_args(n, seed, level)
        if seed < 0:
            raise ValueError(f"seed={seed!r} must be a non-negative integer")
        if level is not None and not self.levels:
            raise ValueError(f"task {self.name!r} has no difficulty levels; use level=None")
        pool = [p for p in self.problems if level is None or p.level == level]
        if n > len(pool):
            where = f" at level {level}" if level is not None else ""
            raise ValueError(f"n={n} exceeds the {len(pool)} problems available{where} in {self.path}; "
                             f"use n <= {len(pool)}")
        order = np.random.default_rng(seed).permutation(len(pool))[:n]
        return [pool[i] for i in order]

    def extract_answer(self, text: str) -> str | None:
        """Final answer of generated ``text`` (see :func:`extract_final_answer`), or None."""
        return extract_final_answer(text, numeric=self.numeric)

    def check_answer(self, problem: Problem, answer: str) -> bool:
        """Whether ``answer`` equals ``problem.answer`` mathematically (see :func:`answers_equivalent`)."""
        return answers_equivalent(problem.answer, answer, timeout_s=self.verify_timeout_s, numeric=self.numeric)

    def is_correct(self, problem: Problem, text: str) -> bool:
        """Extract the answer from ``text`` and check it; False for no answer. Never raises, bounded in time."""
        try:
            return super().is_correct(problem, text)
        except Exception as e:  # a checker must not take a run down
            logger.warning("is_correct failed (%s: %s); counting the answer as wrong", type(e).__name__, e)
            return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, path={str(self.path)!r})"


def math_task(data_dir: str | os.PathLike[str] | None = None) -> JsonlProblemsTask:
    """MATH test problems (4500, MATH-500 removed), levels 1-5, LaTeX answers; task name ``"math"``.

    ``data_dir`` is the data directory; by default ``$THINKCTL_DATA`` (see :func:`find_data_dir`).
    """
    return JsonlProblemsTask(problem_file("math", data_dir=data_dir), name="math")


def gsm8k_task(data_dir: str | os.PathLike[str] | None = None) -> JsonlProblemsTask:
    """GSM8K test problems (1319), numeric answers; task name ``"gsm8k"``.

    ``data_dir`` is the data directory; by default ``$THINKCTL_DATA`` (see :func:`find_data_dir`).
    """
    return JsonlProblemsTask(problem_file("gsm8k", data_dir=data_dir), name="gsm8k", numeric=True)


def aime_task(data_dir: str | os.PathLike[str] | None = None) -> JsonlProblemsTask:
    """AIME 2024, AIME 2025 and AMC 2023 problems (100), numeric answers; task name ``"aime"``.

    ``data_dir`` is the data directory; by default ``$THINKCTL_DATA`` (see :func:`find_data_dir`).
    """
    return JsonlProblemsTask(problem_file("aime", data_dir=data_dir), name="aime", numeric=True)


#: Registry name -> factory, for ``thinkctl.tasks``.
BENCHMARK_TASKS: dict[str, Callable[[], Task]] = {"math": math_task, "gsm8k": gsm8k_task, "aime": aime_task}
