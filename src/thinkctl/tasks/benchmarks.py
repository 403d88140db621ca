"""Real benchmark problems (MATH, GSM8K, AIME/AMC) as tasks, with a math-aware, time-bounded answer checker.

The problem files live in the shared data directory (``../shared/data/problems/*.jsonl`` next to the repository,
or wherever ``$THINKCTL_DATA`` points) and share one schema::

    {source, dataset, id, question, answer, solution?, difficulty: {kind, value} | null, meta}

:class:`JsonlProblemsTask` loads any file of that schema. ``math_task``, ``gsm8k_task`` and ``aime_task`` locate the
three shipped files; :data:`BENCHMARK_TASKS` maps their registry names to them.

Answers are compared with `math-verify <https://github.com/huggingface/Math-Verify>`_ (``parse`` + ``verify``), which
knows that ``\\frac{1}{2}``, ``0.5`` and ``1/2`` are the same number. math-verify bounds its own run time with
``signal.alarm``, which only works in the main thread; :func:`answers_equivalent` therefore runs it under one overall
deadline of its own in the main thread and in a helper process from any other thread, so that a hostile answer
(``10^{10^{10}}``) can neither hang the caller nor raise.

Examples
--------
>>> from thinkctl.tasks.benchmarks import JsonlProblemsTask, answers_equivalent
>>> answers_equivalent("\\\\frac{1}{2}", "0.5")
True
"""

from __future__ import annotations

import atexit
import gc
import json
import logging
import math
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from thinkctl.jsonl import iter_jsonl
from thinkctl.tasks.base import Problem, Task, answer_section

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

#: Environment variable naming the shared data directory (the one holding ``problems/``).
DATA_ENV_VAR = "THINKCTL_DATA"

#: Registry name -> file of the shared data directory.
PROBLEM_FILES: dict[str, str] = {
    "math": "problems/math_test4500_no_math500.jsonl",
    "gsm8k": "problems/gsm8k_test.jsonl",
    "aime": "problems/aime24_aime25_amc23.jsonl",
}

#: Instruction appended to each question: the prompt recommended for evaluating DeepSeek-R1 and used by the
#: Qwen2.5-Math evaluation harness, so that the final answer comes in ``\\boxed{}``.
DEFAULT_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

#: Overall wall-clock bound of one math-verify comparison, in seconds (math-verify's own default is 5 s per step).
DEFAULT_VERIFY_TIMEOUT_S = 5.0

#: Answers longer than this are judged wrong without being parsed: no benchmark answer is anywhere near it, and
#: parsing arbitrarily long LaTeX is where math-verify's time goes.
MAX_ANSWER_CHARS = 1000

#: Prefix of ``difficulty.kind`` for rows whose difficulty is a MATH level (1-5).
_MATH_LEVEL_KIND = "MATH level"

#: Seconds a helper verifier process may take to start (import sympy + math-verify on a loaded machine).
_VERIFIER_STARTUP_TIMEOUT_S = 60.0
#: Extra seconds granted to a helper process over the comparison deadline before it is killed.
_VERIFIER_GRACE_S = 2.0


# -- where the data is ------------------------------------------------------------------------------------------

class DataNotFoundError(FileNotFoundError):
    """The shared data directory or a problem file in it could not be found."""


def _data_dir_candidates() -> list[Path]:
    repo = Path(__file__).resolve().parents[3]  # src/thinkctl/tasks/benchmarks.py -> repository root
    cwd = Path.cwd()
    out: list[Path] = []
    for p in (cwd.parent / "shared" / "data", repo.parent / "shared" / "data", cwd / "shared" / "data",
              repo / "shared" / "data"):
        if p not in out:
            out.append(p)
    return out


def find_data_dir() -> Path:
    """Locate the shared data directory (the one holding ``problems/`` and ``replay/``).

    Looks at ``$THINKCTL_DATA`` when it is set, else at ``../shared/data`` relative to the current directory and to
    the repository, then ``shared/data`` inside them.

    Returns
    -------
    pathlib.Path
        The directory.

    Raises
    ------
    DataNotFoundError
        (a FileNotFoundError) naming every place looked at and how to point thinkctl at the data.
    """
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        path = Path(env).expanduser()
        if path.is_dir():
            return path
        raise DataNotFoundError(
            f"${DATA_ENV_VAR}={env!r} is not a directory; point it at the shared data directory (the one that "
            f"holds problems/), e.g. export {DATA_ENV_VAR}=/path/to/shared/data")
    candidates = _data_dir_candidates()
    for path in candidates:
        if path.is_dir():
            return path
    looked = ", ".join(str(p) for p in candidates)
    raise DataNotFoundError(
        f"shared data directory not found; looked at {looked}. Set {DATA_ENV_VAR} to the directory that holds "
        f"problems/ (export {DATA_ENV_VAR}=/path/to/shared/data)")


def problem_file(name: str) -> Path:
    """Path of the shipped problem file registered as ``name`` (``"math"``, ``"gsm8k"`` or ``"aime"``).

    Raises
    ------
    ValueError
        For an unknown name (the message lists the known ones).
    DataNotFoundError
        When the data directory or the file in it is missing.
    """
    if name not in PROBLEM_FILES:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(sorted(PROBLEM_FILES))}")
    path = find_data_dir() / PROBLEM_FILES[name]
    if not path.is_file():
        raise DataNotFoundError(
            f"{path} does not exist; the data directory {path.parent.parent} lacks {PROBLEM_FILES[name]}. "
            f"Set {DATA_ENV_VAR} to a complete copy of the shared data")
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


# -- answer extraction and canonical form -----------------------------------------------------------------------

# A plain decimal number: optional sign, digits with optional thousands groups, optional fraction.
_NUMBER = r"[-\u2212]?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?|[-\u2212]?\.[0-9]+"
_NUMBER_RE = re.compile(_NUMBER)
_PLAIN_NUMBER_RE = re.compile(rf"(?:{_NUMBER})")
# Tokens for the one-pass brace matcher: a box opener, an escaped brace (ignored), or a brace.
_BOX_TOKEN_RE = re.compile(r"\\(?:boxed|fbox)\s*\{|\\[{}]|[{}]")
_MARKER_RE = re.compile(r"(?:final\s+answer(?:\s+is)?|the\s+answer\s+is)\s*\**\s*[:\uff1a]?\s*\**", re.IGNORECASE)
_MATH_SPAN_RE = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
_SENTENCE_END_RE = re.compile(r"\.(?:\s|$)")
_TEXT_CMD_RE = re.compile(r"\\(?:text|textbf|mathrm|mbox|textnormal|mathbf)\s*\{([^{}]*)\}")
# ``\\`` (a row break, kept), a spacing command (a space) or ``\!`` (negative space, removed).
_LATEX_SPACE_RE = re.compile(r"\\\\|\\[,;: ]|\\!|~")
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ(?![A-Za-z])|\u00b0")
_LEFT_RIGHT_RE = re.compile(r"\\(?:left|right)(?![A-Za-z])")
_BROKEN_SQRT_RE = re.compile(r"\\sqrt\{\}([0-9A-Za-z])")
_BROKEN_ROW_RE = re.compile(r"(?<!\\)\\(?=[-0-9])")
_UNIT_TAIL_RE = re.compile(r"\s*[A-Za-z][A-Za-z .'/-]*$")
_ASSIGN_RE = re.compile(rf"^[A-Za-z][A-Za-z0-9_]*\s*=\s*({_NUMBER})$")
#: Longest stretch of text after an answer marker that is read as the answer.
_MARKER_WINDOW = 200


def _last_boxed(text: str) -> str | None:
    """Contents of the last complete ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces; linear time)."""
    stack: list[int | None] = []  # for each open brace: start of a box's contents, or None for a plain brace
    best: tuple[int, int] | None = None
    for m in _BOX_TOKEN_RE.finditer(text):
        tok = m.group(0)
        if tok[0] == "\\" and len(tok) == 2:  # \{ or \}: literal brace, not grouping
            continue
        if tok == "}":
            if stack:
                start = stack.pop()
                if start is not None and (best is None or start > best[0]):
                    best = (start, m.start())
        elif tok == "{":
            stack.append(None)
        else:
            stack.append(m.end())
    return None if best is None else text[best[0]:best[1]]


def _normalize_number(s: str) -> str:
    """``"-1,000.50"`` -> ``"-1000.5"``; string operations only, so any length is fine."""
    s = s.replace(",", "").replace("\u2212", "-")
    neg = s.startswith("-")
    s = s.lstrip("-")
    int_part, _, frac_part = s.partition(".")
    int_part = int_part.lstrip("0") or "0"
    frac_part = frac_part.rstrip("0")
    out = int_part + ("." + frac_part if frac_part else "")
    return ("-" + out) if neg and out != "0" else out


def _strip_outer(s: str) -> str:
    """Surrounding whitespace, matching outer ``$`` signs and trailing punctuation removed (linear time)."""
    s = s.strip()
    k = min(len(s) - len(s.lstrip("$")), len(s) - len(s.rstrip("$")))
    if k:
        s = s[k:len(s) - k].strip()
    return s.rstrip(".,;").strip()


def _space_replacement(m: re.Match[str]) -> str:
    token = m.group(0)
    return token if token == "\\\\" else ("" if token == "\\!" else " ")


def _clean_latex(s: str) -> str:
    """Presentation-only LaTeX removed: spacing, ``\\left``/``\\right``, ``\\$``, ``\\%``, degrees, ``\\dfrac``."""
    s = _LATEX_SPACE_RE.sub(_space_replacement, s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("{,}", ",")
    s = _LEFT_RIGHT_RE.sub("", s)
    s = _DEGREE_RE.sub("", s)
    s = s.replace("\\$", "").replace("\\%", "").replace("%", "")
    s = _BROKEN_SQRT_RE.sub(r"\\sqrt{\1}", s)
    if "matrix" in s or "array" in s:  # ``\0`` / ``\-`` is no LaTeX: a row break that lost a backslash
        s = _BROKEN_ROW_RE.sub(r"\\\\", s)
    return " ".join(s.split())


def canonical_answer(raw: str, *, numeric: bool = False) -> str | None:
    """Canonical string form of a raw final answer.

    Light, deterministic normalisation that makes equal answers equal strings where that is cheap (so that votes
    over answers group them); :func:`answers_equivalent` does the math-aware comparison.

    Parameters
    ----------
    raw : str
        What was boxed, or followed the answer marker.
    numeric : bool, default=False
        Numeric benchmarks (GSM8K, AIME): also drop plain ``$`` signs, ``\\text{...}`` wrappers and trailing
        unit words, and ``x = 5`` becomes ``5``.

    Returns
    -------
    str or None
        Outer ``$`` and trailing punctuation stripped; ``\\dfrac``/``\\tfrac`` as ``\\frac``; LaTeX spacing,
        ``\\left``/``\\right``, ``\\$``, percent and degree signs removed; matrix rows broken into ``\\``
        (``\\begin{pmatrix}1\\2\\end{pmatrix}``, as the MATH ``answer`` field has them) repaired; whitespace
        collapsed; a plain number as ``-1234.5`` (no thousands separators, leading or trailing zeros).
        None when nothing is left.

    Examples
    --------
    >>> canonical_answer("$\\\\$1,\\\\!000.50$.")
    '1000.5'
    >>> canonical_answer("\\\\dfrac{1}{2}")
    '\\\\frac{1}{2}'
    >>> canonical_answer("18 \\\\text{ dollars}", numeric=True)
    '18'
    """
    if not isinstance(raw, str):
        return None
    s = _clean_latex(_strip_outer(raw))
    if numeric:
        s = _TEXT_CMD_RE.sub(r" \1", s)
        s = " ".join(s.replace("$", "").split())
        m = _ASSIGN_RE.match(s)
        if m:
            s = m.group(1)
        m = _PLAIN_NUMBER_RE.match(s)
        if m and _UNIT_TAIL_RE.fullmatch(s[m.end():]) is not None:
            s = s[:m.end()]
    s = _strip_outer(s)
    if _PLAIN_NUMBER_RE.fullmatch(s):
        return _normalize_number(s)
    return s or None


def _squash(s: str) -> str:
    """Canonical form with ``\\text{...}`` unwrapped and all whitespace removed, for an equality test."""
    return "".join(_TEXT_CMD_RE.sub(r"\1", s).split()).rstrip(".")


def _after_marker(section: str) -> str | None:
    markers = list(_MARKER_RE.finditer(section))
    if not markers:
        return None
    rest = section[markers[-1].end(): markers[-1].end() + _MARKER_WINDOW]
    rest = rest.split("\n", 1)[0]
    span = _MATH_SPAN_RE.search(rest)
    if span:
        return next(g for g in span.groups() if g is not None)
    end = _SENTENCE_END_RE.search(rest)
    if end:
        rest = rest[:end.start()]
    rest = rest.strip().strip("*").strip()
    return rest or None


def extract_final_answer(text: str, *, numeric: bool = False) -> str | None:
    """The final answer of generated ``text`` in canonical form (:func:`canonical_answer`), or None.

    In order: only the answer section counts (after the last ``</think>``; None while ``<think>`` is open); the last
    complete ``\\boxed{...}``; else what follows the last "Final Answer:" / "The answer is" (its first ``$...$``, or
    the rest of the sentence); else the last number in the section.

    Parameters
    ----------
    text : str
        Generated text; anything that is not a string gives None.
    numeric : bool, default=False
        Canonicalise for numeric answers (see :func:`canonical_answer`).

    Examples
    --------
    >>> extract_final_answer("<think>2+2</think> so \\\\boxed{\\\\dfrac{1}{2}}")
    '\\\\frac{1}{2}'
    >>> extract_final_answer("She makes 18 dollars.", numeric=True)
    '18'
    >>> extract_final_answer("<think>still thinking") is None
    True
    """
    if not isinstance(text, str):
        return None
    section = answer_section(text)
    if section is None:
        return None
    for raw in (_last_boxed(section), _after_marker(section)):
        if raw is not None:
            value = canonical_answer(raw, numeric=numeric)
            if value is not None:
                return value
    last = None
    for last in _NUMBER_RE.finditer(section):
        pass
    return None if last is None else _normalize_number(last.group(0))


# -- math-aware comparison, bounded in time ---------------------------------------------------------------------

class _Deadline(BaseException):
    """Raised by the SIGALRM handler; a BaseException so that ``except Exception`` in sympy does not swallow it."""


class _DropTimeoutDisabledWarning(logging.Filter):
    """math-verify warns once that its own timeouts are off; here they are replaced by our deadline."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


@lru_cache(maxsize=1)
def _math_verify() -> tuple[Callable[..., Any], Callable[..., Any]]:
    from math_verify import parse, verify  # heavy (sympy); imported on first use

    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).addFilter(_DropTimeoutDisabledWarning())
    return parse, verify


def _wrappings(s: str) -> Iterable[str]:
    yield f"\\boxed{{{s}}}"
    yield f"${s}$"
    yield s


def _parse_any(s: str) -> list[Any]:
    parse, _ = _math_verify()
    for wrapped in _wrappings(s):
        parsed = parse(wrapped, parsing_timeout=None)
        if parsed:
            return parsed
    return []


@lru_cache(maxsize=4096)
def _parse_gold(gold: str) -> tuple[Any, ...]:
    return tuple(_parse_any(gold))


def _math_verify_equal(gold: str, pred: str) -> bool:
    """math-verify's judgement, without its signal-based timeouts (the caller bounds the time)."""
    _, verify = _math_verify()
    gold_parsed = list(_parse_gold(gold))
    if not gold_parsed:
        return False
    pred_parsed = _parse_any(pred)
    if not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def _can_use_signals() -> bool:
    return (hasattr(signal, "setitimer") and hasattr(signal, "SIGALRM")
            and threading.current_thread() is threading.main_thread())


def _call_with_deadline(fn: Callable[[], bool], timeout_s: float) -> bool | None:
    """Run ``fn`` in the main thread under a SIGALRM deadline; None when the deadline passed.

    A previous SIGALRM handler and a pending ITIMER_REAL timer (minus the time spent here) are restored. Python's
    long-integer arithmetic checks for signals, so ``10**(10**10)`` is interrupted too. Automatic garbage
    collection is paused meanwhile: a deadline raised inside a gc callback cannot propagate (Python reports it as
    unraisable and waits for the next alarm).
    """
    armed = [True]

    def on_alarm(signum: int, frame: Any) -> None:
        if armed[0]:
            raise _Deadline()

    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    started = time.monotonic()
    # Re-fire every half second in case some library code swallowed the first _Deadline.
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, timeout_s, 0.5)
    result: bool | None = None
    try:
        try:
            result = fn()
        finally:
            armed[0] = False
    except _Deadline:
        armed[0] = False
        result = None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler if old_handler is not None else signal.SIG_DFL)
        if gc_was_enabled:
            gc.enable()
        if old_delay > 0:
            remaining = max(old_delay - (time.monotonic() - started), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, remaining, old_interval)
    return result


def _guarded_equal(gold: str, pred: str, timeout_s: float) -> bool | None:
    """:func:`_math_verify_equal` under a deadline, in this (main) thread; None on timeout."""
    _math_verify()  # import sympy outside the deadline: an import interrupted half-way is not undone cleanly

    def run() -> bool:
        try:
            return _math_verify_equal(gold, pred)
        except Exception as e:  # math-verify catches most; a parser bug must not escape
            logger.debug("math-verify failed on gold=%r pred=%r: %s", gold[:80], pred[:80], e)
            return False

    return _call_with_deadline(run, timeout_s)


class _VerifierProcess:
    """A helper Python process that runs math-verify in its own main thread (JSON lines over pipes)."""

    def __init__(self) -> None:
        env = dict(os.environ)
        src = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "from thinkctl.tasks.benchmarks import _verifier_main; _verifier_main()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, bufsize=0,
            start_new_session=True)
        assert self._proc.stdout is not None
        self._selector = selectors.DefaultSelector()  # not select.select: fds above 1024 are common in big jobs
        self._selector.register(self._proc.stdout, selectors.EVENT_READ)
        self._buf = b""
        self._closed = False
        line = self._readline(time.monotonic() + _VERIFIER_STARTUP_TIMEOUT_S)
        try:
            ready = line is not None and json.loads(line).get("ready") is True
        except (ValueError, AttributeError):
            ready = False
        if not ready:
            self.close()
            raise OSError(f"the math-verify helper process did not start within {_VERIFIER_STARTUP_TIMEOUT_S:.0f} s")

    def _readline(self, deadline: float) -> bytes | None:
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._selector.select(remaining):
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def alive(self) -> bool:
        return self._proc.poll() is None

    def equal(self, gold: str, pred: str, timeout_s: float) -> bool | None:
        """The helper's verdict; None when it timed out (a helper that missed the deadline is killed)."""
        assert self._proc.stdin is not None
        request = json.dumps({"gold": gold, "pred": pred, "timeout_s": timeout_s}).encode("ascii") + b"\n"
        try:
            view = memoryview(request)
            while view:
                view = view[self._proc.stdin.write(view) or 0:]
            line = self._readline(time.monotonic() + timeout_s + _VERIFIER_GRACE_S)
            if line is not None:
                result = json.loads(line)["result"]
                return None if result is None else bool(result)
        except (OSError, ValueError, KeyError):
            pass
        self.close()
        return None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._proc.poll() is None:
            self._proc.kill()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - a killed process that will not die
            logger.warning("math-verify helper process %d did not exit", self._proc.pid)
        self._selector.close()
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                stream.close()


class _VerifierPool:
    """Idle helper processes, one in use per concurrently verifying thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[_VerifierProcess] = []
        self._pid = os.getpid()

    def equal(self, gold: str, pred: str, timeout_s: float) -> bool | None:
        with self._lock:
            if self._pid != os.getpid():  # forked: the helpers belong to the parent
                self._idle, self._pid = [], os.getpid()
            proc = self._idle.pop() if self._idle else None
        if proc is not None and not proc.alive():
            proc.close()
            proc = None
        if proc is None:
            proc = _VerifierProcess()
        result = proc.equal(gold, pred, timeout_s)
        if proc.alive():
            with self._lock:
                self._idle.append(proc)
        return result

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for proc in idle:
            proc.close()


_POOL = _VerifierPool()
atexit.register(_POOL.close)


def _verifier_main() -> None:  # pragma: no cover - runs in the helper process
    """Helper process loop: one JSON request per stdin line, one ``{"result": bool | null}`` per stdout line."""
    out = os.fdopen(os.dup(1), "w", encoding="ascii")
    sys.stdout = sys.stderr  # stray prints must not corrupt the protocol
    _math_verify()
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        try:
            req = json.loads(line)
            result = _guarded_equal(str(req["gold"]), str(req["pred"]), float(req["timeout_s"]))
        except (ValueError, KeyError, TypeError):
            result = False
        out.write(json.dumps({"result": result}) + "\n")  # null: the deadline passed
        out.flush()


def _thread_equal(gold: str, pred: str, timeout_s: float) -> bool | None:
    """Last resort where no helper process can run: a daemon thread and a timed join (best effort)."""
    box: list[bool] = []

    def run() -> None:
        try:
            box.append(_math_verify_equal(gold, pred))
        except Exception:
            box.append(False)

    worker = threading.Thread(target=run, name="thinkctl-math-verify", daemon=True)
    worker.start()
    worker.join(timeout_s)
    return box[0] if box else None


def _decimal(s: str) -> Decimal | None:
    try:
        return Decimal(s)
    except InvalidOperation:
        return None


def answers_equivalent(gold: str, pred: str, *, timeout_s: float = DEFAULT_VERIFY_TIMEOUT_S,
                       max_chars: int = MAX_ANSWER_CHARS, numeric: bool = False) -> bool:
    """Whether answer ``pred`` is mathematically the same as ``gold``; bounded in time, never raises on any strings.

    Equal canonical strings and equal plain numbers are decided here; anything else goes to math-verify
    (``parse`` of ``\\boxed{...}``, then ``verify(gold, pred)``), under one overall deadline: a SIGALRM timer in the
    main thread, a helper process from any other thread (math-verify's own ``signal.alarm`` timeouts only work in
    the main thread).

    Parameters
    ----------
    gold, pred : str
        Reference answer and candidate (LaTeX or plain), e.g. ``"\\frac{1}{2}"`` and ``"0.5"``.
    timeout_s : float, default=DEFAULT_VERIFY_TIMEOUT_S
        Wall-clock bound of the math-verify comparison; past it the answer counts as wrong (a helper process
        additionally gets ``_VERIFIER_GRACE_S`` before it is killed, and its start-up is bounded separately).
    max_chars : int, default=MAX_ANSWER_CHARS
        Longer answers are judged wrong without parsing.
    numeric : bool, default=False
        Canonicalise as numeric answers (units, currency and percent signs dropped).

    Returns
    -------
    bool

    Examples
    --------
    >>> answers_equivalent("1000", "1,000")
    True
    >>> answers_equivalent("\\\\frac{1}{2}", "\\\\dfrac12")
    True
    >>> answers_equivalent("18", "19")
    False
    """
    if not isinstance(gold, str) or not isinstance(pred, str):
        return False
    if not gold.strip() or not pred.strip() or len(pred) > max_chars or len(gold) > max_chars:
        return False
    if not (timeout_s > 0 and math.isfinite(timeout_s)):
        raise ValueError(f"timeout_s={timeout_s!r} must be a positive number of seconds")
    g = canonical_answer(gold, numeric=numeric)
    p = canonical_answer(pred, numeric=numeric)
    if g is None or p is None:
        return False
    if g == p or _squash(g) == _squash(p):
        return True
    if _PLAIN_NUMBER_RE.fullmatch(g) and _PLAIN_NUMBER_RE.fullmatch(p):
        dg, dp = _decimal(g), _decimal(p)
        if dg is not None and dp is not None:
            return dg == dp
    result: bool | None
    try:
        if _can_use_signals():
            result = _guarded_equal(g, p, timeout_s)
        else:
            try:
                result = _POOL.equal(g, p, timeout_s)
            except OSError as e:
                logger.warning("cannot start a math-verify helper process (%s); checking in a thread", e)
                result = _thread_equal(g, p, timeout_s)
    except Exception as e:  # never raise from a checker
        logger.warning("answer comparison failed (%s: %s); counting the answer as wrong", type(e).__name__, e)
        return False
    if result is None:
        logger.warning("answer comparison timed out after %.1f s (gold=%r, pred=%r); counting it as wrong",
                       timeout_s, g[:60], p[:60])
        return False
    return bool(result)


# -- the task ---------------------------------------------------------------------------------------------------

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


def math_task() -> JsonlProblemsTask:
    """MATH test problems (4500, MATH-500 removed), levels 1-5, LaTeX answers; task name ``"math"``."""
    return JsonlProblemsTask(problem_file("math"), name="math")


def gsm8k_task() -> JsonlProblemsTask:
    """GSM8K test problems (1319), numeric answers; task name ``"gsm8k"``."""
    return JsonlProblemsTask(problem_file("gsm8k"), name="gsm8k", numeric=True)


def aime_task() -> JsonlProblemsTask:
    """AIME 2024, AIME 2025 and AMC 2023 problems (100), numeric answers; task name ``"aime"``."""
    return JsonlProblemsTask(problem_file("aime"), name="aime", numeric=True)


#: Registry name -> factory, for ``thinkctl.tasks``.
BENCHMARK_TASKS: dict[str, Callable[[], Task]] = {"math": math_task, "gsm8k": gsm8k_task, "aime": aime_task}
