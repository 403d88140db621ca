"""Final answers of generated text and their canonical string form.

:func:`extract_final_answer` finds the answer of a generation (the last ``\\boxed{...}``, else what follows
"Final Answer:" / "The answer is", else the last number); :func:`canonical_answer` normalises it so that equal
answers are equal strings where that is cheap. Everything here runs in linear time on any input; the math-aware
comparison lives in :mod:`thinkctl.tasks.verify`.

Examples
--------
>>> from thinkctl.tasks.answers import extract_final_answer
>>> extract_final_answer("<think>...</think> so \\\\boxed{\\\\dfrac{1}{2}}")
'\\\\frac{1}{2}'
"""

from __future__ import annotations

import re

from thinkctl.tasks.base import answer_section

__all__ = ["canonical_answer", "extract_final_answer"]

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
