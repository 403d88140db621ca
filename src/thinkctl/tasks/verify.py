"""Math-aware answer comparison with `math-verify <https://github.com/huggingface/Math-Verify>`_, bounded in time.

math-verify (``parse`` + ``verify``) knows that ``\\frac{1}{2}``, ``0.5`` and ``1/2`` are the same number. It bounds
its own run time with ``signal.alarm``, which only works in the main thread; :func:`answers_equivalent` therefore
runs it under one overall deadline of its own in the main thread and in a helper process from any other thread, so
that a hostile answer (``10^{10^{10}}``) can neither hang the caller nor raise. The helper processes are started on
the first comparison made from a thread other than the main one (importing this module starts nothing) and end with
the interpreter.

Examples
--------
>>> from thinkctl.tasks.verify import answers_equivalent
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

from thinkctl.tasks.answers import _PLAIN_NUMBER_RE, _squash, canonical_answer

__all__ = ["DEFAULT_VERIFY_TIMEOUT_S", "MAX_ANSWER_CHARS", "answers_equivalent"]

logger = logging.getLogger(__name__)

#: Overall wall-clock bound of one math-verify comparison, in seconds (math-verify's own default is 5 s per step).
DEFAULT_VERIFY_TIMEOUT_S = 5.0

#: Answers longer than this are judged wrong without being parsed: no benchmark answer is anywhere near it, and
#: parsing arbitrarily long LaTeX is where math-verify's time goes.
MAX_ANSWER_CHARS = 1000

#: Seconds a helper verifier process may take to start (import sympy + math-verify on a loaded machine).
_VERIFIER_STARTUP_TIMEOUT_S = 60.0
#: Extra seconds granted to a helper process over the comparison deadline before it is killed.
_VERIFIER_GRACE_S = 2.0


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
            [sys.executable, "-c", "from thinkctl.tasks.verify import _verifier_main; _verifier_main()"],
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


_POOL: _VerifierPool | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> _VerifierPool:
    """The pool of helper processes, created on first use; its exit hook is registered then, never at import."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = _VerifierPool()
            atexit.register(_POOL.close)
        return _POOL


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
                result = _pool().equal(g, p, timeout_s)
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
