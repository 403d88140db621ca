"""Where the benchmark problem files are, and how they are read.

The data directory holds ``problems/*.jsonl`` (and the recorded outputs read by :mod:`thinkctl.traces.readers`). It
is given as an argument (``data_dir=``) or by the environment variable ``$THINKCTL_DATA``; nothing else is
searched. The problem files share one schema::

    {source, dataset, id, question, answer, solution?, difficulty: {kind, value} | null, meta}

Examples
--------
>>> from thinkctl.tasks.data import load_problems, problem_file
>>> problems = load_problems(problem_file("gsm8k", data_dir="/path/to/data"))  # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from thinkctl.jsonl import iter_jsonl
from thinkctl.tasks.answers import _last_boxed, canonical_answer
from thinkctl.tasks.base import Problem

__all__ = [
    "DATA_ENV_VAR",
    "PROBLEM_FILES",
    "DEFAULT_INSTRUCTION",
    "DataNotFoundError",
    "find_data_dir",
    "problem_file",
    "load_problems",
]

#: Environment variable naming the data directory (the one holding ``problems/``), used when no ``data_dir`` is given.
DATA_ENV_VAR = "THINKCTL_DATA"

#: Registry name -> file of the data directory.
PROBLEM_FILES: dict[str, str] = {
    "math": "problems/math_test4500_no_math500.jsonl",
    "gsm8k": "problems/gsm8k_test.jsonl",
    "aime": "problems/aime24_aime25_amc23.jsonl",
}

#: Instruction appended to each question: the prompt recommended for evaluating DeepSeek-R1 and used by the
#: Qwen2.5-Math evaluation harness, so that the final answer comes in ``\\boxed{}``.
DEFAULT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

#: Prefix of ``difficulty.kind`` for rows whose difficulty is a MATH level (1-5).
_MATH_LEVEL_KIND = "MATH level"


# -- where the data is ------------------------------------------------------------------------------------------

class DataNotFoundError(FileNotFoundError):
    """The data directory or a problem file in it could not be found."""


def find_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data directory (the one holding ``problems/`` and ``replay/``): ``data_dir``, else ``$THINKCTL_DATA``.

    Parameters
    ----------
    data_dir : str or path-like, optional
        The directory; when None, the environment variable :data:`DATA_ENV_VAR` (``THINKCTL_DATA``) names it.

    Returns
    -------
    pathlib.Path
        The directory.

    Raises
    ------
    DataNotFoundError
        (a FileNotFoundError) when neither is given, or what is given is not a directory; the message says what to
        set.
    """
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if path.is_dir():
            return path
        raise DataNotFoundError(
            f"data_dir={str(data_dir)!r} is not a directory; pass the data directory (the one that holds "
            f"problems/), or leave data_dir out and set {DATA_ENV_VAR}")
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if path.is_dir():
            return path
        raise DataNotFoundError(
            f"${DATA_ENV_VAR}={env!r} is not a directory; point it at the data directory (the one that "
            f"holds problems/), e.g. export {DATA_ENV_VAR}=/path/to/data")
    raise DataNotFoundError(
        f"no data directory given: set {DATA_ENV_VAR} to the directory that holds problems/ "
        f"(export {DATA_ENV_VAR}=/path/to/data), or pass data_dir=")


def problem_file(name: str, *, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Path of the shipped problem file registered as ``name`` (``"math"``, ``"gsm8k"`` or ``"aime"``).

    Parameters
    ----------
    name : str
        A key of :data:`PROBLEM_FILES`.
    data_dir : str or path-like, optional
        The data directory; by default ``$THINKCTL_DATA`` (see :func:`find_data_dir`).

    Raises
    ------
    ValueError
        For an unknown name (the message lists the known ones).
    DataNotFoundError
        When the data directory or the file in it is missing.
    """
    if name not in PROBLEM_FILES:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(sorted(PROBLEM_FILES))}")
    path = find_data_dir(data_dir) / PROBLEM_FILES[name]
    if not path.is_file():
        raise DataNotFoundError(
            f"{path} does not exist; the data directory {path.parent.parent} lacks {PROBLEM_FILES[name]}. "
            f"Point {DATA_ENV_VAR} (or data_dir=) at a complete copy of the data")
    return path


# -- loading ----------------------------------------------------------------------------------------------------

_LATEX_CMD_RE = re.compile(r"\\[A-Za-z]+")
_NUMBER_IN_TEXT_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?")


def _level_of(difficulty: dict[str, Any] | None) -> int | None:
    if not difficulty or not str(difficulty.get("kind", "")).startswith(_MATH_LEVEL_KIND):
        return None
    value = difficulty.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        return None
    return int(value)


def _query_features(row: dict[str, Any]) -> dict[str, Any]:
    """Query-side facts of a row: never the answer or the solution."""
    question = str(row["question"])
    difficulty = row.get("difficulty") or {}
    value = difficulty.get("value")
    meta = row.get("meta") or {}
    return {
        "dataset": str(row["dataset"]),
        "subject": meta.get("subject"),
        "difficulty_kind": difficulty.get("kind"),
        "difficulty_value": float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None,
        "question_chars": len(question),
        "question_words": len(question.split()),
        "question_lines": question.count("\n") + 1,
        "question_latex_commands": len(_LATEX_CMD_RE.findall(question)),
        "question_math_spans": question.count("$") // 2,
        "question_numbers": len(_NUMBER_IN_TEXT_RE.findall(question)),
    }


def load_problems(path: str | os.PathLike[str], *, instruction: str | None = DEFAULT_INSTRUCTION,
                  gold_from_solution: bool = True, numeric: bool = False) -> list[Problem]:
    """Read a problem file of the shared schema into :class:`~thinkctl.tasks.base.Problem` objects, in file order.

    Parameters
    ----------
    path : str or path-like
        A JSONL file, one ``{source, dataset, id, question, answer, ...}`` object per line.
    instruction : str or None, default=DEFAULT_INSTRUCTION
        Appended to each question (on its own line) to form the prompt; None for the bare question.
    gold_from_solution : bool, default=True
        Take the gold answer from the last ``\\boxed{...}`` of the row's reference ``solution`` when it has one and
        the question does not use ``\\boxed`` itself (the MATH convention), else from the ``answer`` field. The
        MATH file's ``answer`` field went through its source's whitespace and unit stripping and is damaged in about
        80 of 4500 rows (matrices lost their ``\\\\`` row breaks, ``"squareinches"``, ``"19"`` for
        ``"19 and 43"``); the boxed answers are intact.
    numeric : bool, default=False
        Canonicalise gold answers as numbers (see :func:`canonical_answer`).

    Returns
    -------
    list of Problem
        ``answer`` in canonical form (:func:`canonical_answer`), ``id`` is ``"{dataset}-{id}"``, ``level`` the MATH
        level when the row has one (else None), ``features`` the query-side facts (dataset, subject, difficulty
        proxy kind and value, question length, ...).

    Raises
    ------
    DataNotFoundError
        When the file does not exist.
    ValueError
        On a malformed line, a missing field or a repeated id (the message names the file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"problem file {path} does not exist; pass the path of a JSONL file of the shared "
                                f"problem schema (see find_data_dir() and ${DATA_ENV_VAR})")
    problems: list[Problem] = []
    seen: set[str] = set()
    for lineno, row in iter_jsonl(path):
        where = f"{path}:{lineno}"
        missing = [k for k in ("dataset", "id", "question", "answer") if k not in row or row[k] is None]
        if missing:
            raise ValueError(f"{where}: missing field(s) {missing}; the problem schema needs "
                             f"dataset, id, question and answer")
        pid = f"{row['dataset']}-{row['id']}"
        if pid in seen:
            raise ValueError(f"{where}: problem id {pid!r} appears twice; ids must be unique per file")
        seen.add(pid)
        question = str(row["question"])
        prompt = f"{question}\n{instruction}" if instruction else question
        gold = str(row["answer"]).strip()
        solution = row.get("solution")
        if gold_from_solution and isinstance(solution, str) and "\\boxed" not in question:
            boxed = _last_boxed(solution)
            if boxed is not None and boxed.strip():
                gold = boxed
        gold = canonical_answer(gold, numeric=numeric) or gold
        problems.append(Problem(id=pid, prompt=prompt, answer=gold,
                                level=_level_of(row.get("difficulty")), features=_query_features(row)))
    return problems
