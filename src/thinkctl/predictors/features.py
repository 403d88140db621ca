"""Task-agnostic features of a query: what a difficulty model can know about a problem before generating.

:class:`QueryFeatures` turns prompt strings (or :class:`~thinkctl.tasks.Problem`-like objects) into a float matrix:

* text features in named groups (:data:`FEATURE_SETS`): ``length`` (characters, words, lines, sentences),
  ``numbers`` (how many, digits, magnitude of the largest), ``operators`` (``+ - * / ^ = < >`` and their LaTeX
  forms), ``structure`` (bracket nesting depth, math segments, distinct variables, question marks), ``latex``
  (command count and a few specific commands such as ``\\frac``, ``\\sqrt``, ``\\sum``, ``\\int``) and ``keywords``
  ("prove", "how many", "probability", "find all", "mod", "remainder", ...);
* the entries of ``Problem.features`` seen at fit time: numeric keys become columns (missing -> NaN), string keys
  with few distinct values (e.g. ``subject``) become one-hot columns, anything else is ignored (logged).

The ``level`` of a problem is never a feature: it is what a difficulty model predicts.

Examples
--------
>>> from thinkctl.predictors import QueryFeatures
>>> qf = QueryFeatures(feature_sets=("length", "numbers")).fit(["What is 12 + 345?"])
>>> dict(zip(qf.get_feature_names_out()[:3], qf.transform(["What is 12 + 345?"])[0][:3].tolist()))
{'n_chars': 17.0, 'n_words': 5.0, 'n_lines': 1.0}
"""

from __future__ import annotations

import logging
import math
import numbers
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from thinkctl.registry import Registry

__all__ = [
    "QueryFeatures",
    "FEATURE_SETS",
    "DEFAULT_KEYWORDS",
    "DEFAULT_LATEX_COMMANDS",
    "DEFAULT_MAX_CATEGORIES",
    "DEFAULT_FEATURE_SETS",
    "PROBLEM_FEATURE_PREFIX",
    "as_prompts_and_features",
]

logger = logging.getLogger(__name__)

#: Phrases counted (case-insensitive, whole words) by the ``keywords`` feature group. They mark task types that
#: are harder than plain evaluation in MATH-style benchmarks (proofs, counting, probability, number theory).
DEFAULT_KEYWORDS: tuple[str, ...] = (
    "prove", "show that", "how many", "probability", "find all", "mod", "modulo", "remainder", "expected",
    "maximum", "minimum", "largest", "smallest", "least", "greatest", "sum", "product", "integer", "integers",
    "real", "complex", "prime", "digit", "digits", "area", "volume", "triangle", "circle", "polynomial", "roots",
    "sequence", "distinct", "ordered pairs", "positive", "simplify", "evaluate", "compute", "solve", "express",
    "common fraction", "nearest", "all possible", "number of ways",
)
#: LaTeX commands counted one by one by the ``latex`` feature group (without the backslash).
DEFAULT_LATEX_COMMANDS: tuple[str, ...] = (
    "frac", "dfrac", "sqrt", "sum", "prod", "int", "binom", "cdot", "times", "div", "pi", "angle", "triangle",
    "log", "ln", "sin", "cos", "tan", "le", "leq", "ge", "geq", "ne", "neq", "pmod", "bmod", "infty", "lfloor",
    "lceil", "overline", "left", "begin", "text", "circ", "mathbf",
)
#: A string-valued ``Problem.features`` key with at most this many distinct values at fit time is one-hot encoded
#: (scikit-learn's ``OneHotEncoder(max_categories=...)`` plays the same role); keys with more are ignored.
DEFAULT_MAX_CATEGORIES = 20
#: Text-feature groups computed when ``feature_sets=None``, in column order.
DEFAULT_FEATURE_SETS: tuple[str, ...] = ("length", "numbers", "operators", "structure", "latex", "keywords")
#: Prefix of the columns taken from ``Problem.features`` (``feature__subject=Algebra``, ``feature__n_terms``).
PROBLEM_FEATURE_PREFIX = "feature__"
#: Numbers longer than this many digits are not parsed; their magnitude is taken from their length.
MAX_PARSED_DIGITS = 300

_NUMBER_RE = re.compile(r"\d+(?:\.\d+)?")
_SENTENCE_END_RE = re.compile(r"[.!?](?=\s|$)")
_LATEX_CMD_RE = re.compile(r"\\([a-zA-Z]+)")
_MATH_RE = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
_VARIABLE_RE = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z](?![a-zA-Z])")
_OPEN, _CLOSE = "([{", ")]}"
_OPERATOR_PATTERNS: dict[str, re.Pattern[str]] = {
    "n_plus": re.compile(r"\+|\\pm(?![a-zA-Z])"),
    "n_minus": re.compile(r"(?<![a-zA-Z])-|-(?![a-zA-Z])|\\mp(?![a-zA-Z])"),  # not a hyphen between letters
    "n_times": re.compile(r"\*|\\times(?![a-zA-Z])|\\cdot(?![a-zA-Z])"),
    "n_div": re.compile(r"/|\\div(?![a-zA-Z])"),
    "n_pow": re.compile(r"\^"),
    "n_eq": re.compile(r"(?<![<>!])=|\\equiv(?![a-zA-Z])"),
    "n_lt": re.compile(r"<|\\(?:lt|le|leq)(?![a-zA-Z])"),
    "n_gt": re.compile(r">|\\(?:gt|ge|geq)(?![a-zA-Z])"),
}


def _slug(text: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]+", "_", text.strip().lower()).strip("_")


@lru_cache(maxsize=32)
def _phrase_patterns(phrases: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(r"(?<![a-zA-Z0-9\\])" + re.escape(p.lower()) + r"(?![a-zA-Z0-9])") for p in phrases)


@lru_cache(maxsize=32)
def _command_patterns(commands: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(r"\\" + re.escape(c) + r"(?![a-zA-Z])") for c in commands)


# -- feature groups -------------------------------------------------------------------------------------------
# Each group is (names(params) -> list[str], compute(text, params) -> list[float]).

FeatureSet = tuple[Callable[["QueryFeatures"], list[str]], Callable[[str, "QueryFeatures"], list[float]]]
#: Registry of text-feature groups by name; ``QueryFeatures(feature_sets=...)`` selects among them.
FEATURE_SETS: Registry[FeatureSet] = Registry("feature set")

_LENGTH_NAMES = ["n_chars", "n_words", "n_lines", "n_sentences", "mean_word_length"]


def _length(text: str, _: "QueryFeatures") -> list[float]:
    words = text.split()
    n_sent = len(_SENTENCE_END_RE.findall(text)) or (1 if text.strip() else 0)
    mean_len = sum(len(w) for w in words) / len(words) if words else 0.0
    return [float(len(text)), float(len(words)), float(text.count("\n") + 1 if text else 0), float(n_sent), mean_len]


FEATURE_SETS.add("length", (lambda _: list(_LENGTH_NAMES), _length))

_NUMBER_NAMES = ["n_numbers", "n_distinct_numbers", "n_digits", "max_number_digits", "log10_max_number",
                 "n_decimal_numbers"]


def _log10_magnitude(number: str) -> float:
    integer = number.split(".")[0].lstrip("0") or "0"
    if len(integer) > MAX_PARSED_DIGITS:
        return float(len(integer))
    return math.log10(int(integer) + 1)


def _numbers(text: str, _: "QueryFeatures") -> list[float]:
    found = _NUMBER_RE.findall(text)
    if not found:
        return [0.0] * len(_NUMBER_NAMES)
    digit_lengths = [len(f.replace(".", "")) for f in found]
    return [float(len(found)), float(len(set(found))), float(sum(c.isdigit() for c in text)),
            float(max(digit_lengths)), max(_log10_magnitude(f) for f in found),
            float(sum("." in f for f in found))]


FEATURE_SETS.add("numbers", (lambda _: list(_NUMBER_NAMES), _numbers))


def _operators(text: str, _: "QueryFeatures") -> list[float]:
    counts = [float(len(p.findall(text))) for p in _OPERATOR_PATTERNS.values()]
    return counts + [sum(counts)]


FEATURE_SETS.add("operators", (lambda _: list(_OPERATOR_PATTERNS) + ["n_operators"], _operators))

_STRUCTURE_NAMES = ["max_bracket_depth", "n_brackets", "n_math_segments", "math_char_fraction",
                    "n_distinct_variables", "n_question_marks", "n_commas"]


def _structure(text: str, _: "QueryFeatures") -> list[float]:
    depth = max_depth = n_open = 0
    for ch in text:
        if ch in _OPEN:
            depth += 1
            n_open += 1
            max_depth = max(max_depth, depth)
        elif ch in _CLOSE:
            depth = max(depth - 1, 0)
    segments = [next(g for g in m.groups() if g is not None) for m in _MATH_RE.finditer(text)]
    math_chars = sum(len(s) for s in segments)
    variables = {v for s in segments for v in _VARIABLE_RE.findall(_LATEX_CMD_RE.sub(" ", s))}
    return [float(max_depth), float(n_open), float(len(segments)), math_chars / len(text) if text else 0.0,
            float(len(variables)), float(text.count("?")), float(text.count(","))]


FEATURE_SETS.add("structure", (lambda _: list(_STRUCTURE_NAMES), _structure))


def _latex_names(qf: "QueryFeatures") -> list[str]:
    return ["n_latex_commands", "n_distinct_latex_commands"] + [f"latex_{_slug(c)}" for c in qf._latex_commands()]


def _latex(text: str, qf: "QueryFeatures") -> list[float]:
    cmds = _LATEX_CMD_RE.findall(text)
    return [float(len(cmds)), float(len(set(cmds)))] + [
        float(len(p.findall(text))) for p in _command_patterns(qf._latex_commands())]


FEATURE_SETS.add("latex", (_latex_names, _latex))


def _keyword_names(qf: "QueryFeatures") -> list[str]:
    return [f"kw_{_slug(k)}" for k in qf._keywords()]


def _keywords(text: str, qf: "QueryFeatures") -> list[float]:
    lower = text.lower()
    return [float(len(p.findall(lower))) for p in _phrase_patterns(qf._keywords())]


FEATURE_SETS.add("keywords", (_keyword_names, _keywords))


# -- inputs ---------------------------------------------------------------------------------------------------

def as_prompts_and_features(X: Any, name: str = "X") -> tuple[list[str], list[Mapping[str, Any]]]:
    """Split an input collection into prompt strings and ``features`` mappings.

    Parameters
    ----------
    X : sequence of length n_samples
        Prompt strings, :class:`~thinkctl.tasks.Problem`-like objects (attributes ``prompt`` and optionally
        ``features``), or mappings with a ``"prompt"`` (or ``"question"``) key and an optional ``"features"`` mapping.

    Returns
    -------
    prompts : list of str, features : list of Mapping
    """
    if isinstance(X, (str, bytes)):
        raise ValueError(f"{name} is a single string; pass a list of prompts, e.g. [prompt]")
    if isinstance(X, np.ndarray):
        if X.ndim == 2 and X.shape[1] == 1:
            X = X[:, 0]
        if X.ndim != 1:
            raise ValueError(f"{name} has shape {X.shape}; pass a 1-D list of prompts (one per sample)")
    try:
        items = list(X)
    except TypeError as exc:
        raise ValueError(f"{name} of type {type(X).__name__} is not a sequence of prompts or problems") from exc
    if not items:
        raise ValueError(f"{name} is empty; pass at least one prompt")
    prompts: list[str] = []
    feats: list[Mapping[str, Any]] = []
    for i, item in enumerate(items):
        f: Mapping[str, Any]
        if isinstance(item, str):
            prompt, f = item, {}
        elif isinstance(item, Mapping):
            prompt = item.get("prompt", item.get("question"))
            f = item.get("features") or {}
        elif hasattr(item, "prompt"):
            prompt, f = item.prompt, getattr(item, "features", None) or {}
        else:
            raise ValueError(f"{name}[{i}] is a {type(item).__name__}; pass prompt strings, Problem objects or "
                             "dicts with a 'prompt' key")
        if not isinstance(prompt, str):
            raise ValueError(f"{name}[{i}] has prompt {prompt!r} of type {type(prompt).__name__}; prompts must be str")
        if not isinstance(f, Mapping):
            raise ValueError(f"{name}[{i}] has features of type {type(f).__name__}; features must be a dict")
        prompts.append(prompt)
        feats.append(f)
    return prompts, feats


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real)  # bool is a Real too: True -> 1.0


class QueryFeatures(TransformerMixin, BaseEstimator):
    """Text features of a query plus the numeric and categorical entries of its ``Problem.features``.

    Parameters
    ----------
    feature_sets : tuple of str, optional
        Text-feature groups to compute, from :data:`FEATURE_SETS` (``"length"``, ``"numbers"``, ``"operators"``,
        ``"structure"``, ``"latex"``, ``"keywords"``). ``None``: all of them, in that order.
    keywords : tuple of str, optional
        Phrases counted by the ``keywords`` group (whole words, case-insensitive). ``None``: :data:`DEFAULT_KEYWORDS`.
    latex_commands : tuple of str, optional
        LaTeX commands (without backslash) counted one by one by the ``latex`` group.
        ``None``: :data:`DEFAULT_LATEX_COMMANDS`.
    use_problem_features : bool, default=True
        Add columns from the ``features`` mapping of each input (Problem objects or dicts).
    max_categories : int, default=20
        A string-valued key with at most this many distinct values at fit time is one-hot encoded.

    Attributes
    ----------
    numeric_keys_ : list of str
        ``features`` keys that were numeric (int, float, bool) in every fit sample that had them.
    categories_ : dict of str to list of str
        One-hot encoded ``features`` keys and their categories seen at fit time. An unseen category at transform
        time gives all-zero columns for its key; a missing key gives NaN columns.
    feature_names_out_ : ndarray of str of shape (n_features_out,)
        Column names of :meth:`transform`'s output.

    Examples
    --------
    >>> from thinkctl.tasks import Problem
    >>> probs = [Problem("a", "Find $x$ if $2x+3=7$.", "2", 1, {"subject": "Algebra", "n_steps": 2}),
    ...          Problem("b", "How many primes are below 100?", "25", 2, {"subject": "Number Theory"})]
    >>> qf = QueryFeatures().fit(probs)
    >>> [n for n in qf.get_feature_names_out() if n.startswith("feature__")]
    ['feature__n_steps', 'feature__subject=Algebra', 'feature__subject=Number Theory']
    >>> qf.transform(probs)[1, -3:].tolist()
    [nan, 0.0, 1.0]
    """

    def __init__(self, *, feature_sets: tuple[str, ...] | None = None, keywords: tuple[str, ...] | None = None,
                 latex_commands: tuple[str, ...] | None = None, use_problem_features: bool = True,
                 max_categories: int = DEFAULT_MAX_CATEGORIES) -> None:
        self.feature_sets = feature_sets
        self.keywords = keywords
        self.latex_commands = latex_commands
        self.use_problem_features = use_problem_features
        self.max_categories = max_categories

    # -- parameter helpers (pure functions of the params) --
    def _sets(self) -> tuple[str, ...]:
        sets = DEFAULT_FEATURE_SETS if self.feature_sets is None else tuple(self.feature_sets)
        for s in sets:
            FEATURE_SETS.get(s)  # unknown names raise, listing the known ones
        if not sets and not self.use_problem_features:
            raise ValueError("feature_sets=() with use_problem_features=False leaves no features; select a set")
        return sets

    def _keywords(self) -> tuple[str, ...]:
        return DEFAULT_KEYWORDS if self.keywords is None else tuple(self.keywords)

    def _latex_commands(self) -> tuple[str, ...]:
        return DEFAULT_LATEX_COMMANDS if self.latex_commands is None else tuple(self.latex_commands)

    def _text_names(self) -> list[str]:
        names: list[str] = []
        for s in self._sets():
            names.extend(FEATURE_SETS.get(s)[0](self))
        return names

    def _check_params(self) -> None:
        if isinstance(self.max_categories, bool) or not isinstance(self.max_categories, numbers.Integral) \
                or self.max_categories < 1:
            raise ValueError(f"max_categories={self.max_categories!r} must be a positive integer")
        for pname in ("keywords", "latex_commands", "feature_sets"):
            value = getattr(self, pname)
            if value is not None and (isinstance(value, str) or not all(isinstance(v, str) and v for v in value)):
                raise ValueError(f"{pname}={value!r} must be a tuple of non-empty strings (or None for the defaults)")
        self._sets()

    def fit(self, X: Any, y: Any = None) -> "QueryFeatures":
        """Learn which ``features`` keys become columns.

        Parameters
        ----------
        X : sequence of length n_samples
            Prompt strings, Problem-like objects, or dicts with ``prompt`` and ``features`` (see
            :func:`as_prompts_and_features`).
        y : ignored

        Returns
        -------
        self
        """
        self._check_params()
        _, feats = as_prompts_and_features(X)
        numeric: list[str] = []
        categories: dict[str, list[str]] = {}
        if self.use_problem_features:
            keys = sorted({k for f in feats for k in f if isinstance(k, str)})
            for key in keys:
                values = [f[key] for f in feats if f.get(key) is not None]
                if values and all(_is_number(v) for v in values):
                    numeric.append(key)
                elif values and all(isinstance(v, str) for v in values):
                    cats = sorted(set(values))
                    if len(cats) <= self.max_categories:
                        categories[key] = cats
                    else:
                        logger.info("features key %r has %d distinct strings (> max_categories=%d); ignored",
                                    key, len(cats), self.max_categories)
                else:
                    logger.info("features key %r holds values that are neither all numbers nor all strings; ignored",
                                key)
        self.numeric_keys_ = numeric
        self.categories_ = categories
        extra = [PROBLEM_FEATURE_PREFIX + k for k in numeric]
        extra += [f"{PROBLEM_FEATURE_PREFIX}{k}={c}" for k, cats in categories.items() for c in cats]
        self.feature_names_out_ = np.asarray(self._text_names() + extra, dtype=object)
        if self.feature_names_out_.shape[0] == 0:
            raise ValueError("no features: the selected feature_sets are empty and the inputs carry no usable "
                             "'features' entries; select at least one text feature set")
        return self

    def transform(self, X: Any) -> NDArray[np.float64]:
        """Compute the feature matrix.

        Parameters
        ----------
        X : sequence of length n_samples
            As in :meth:`fit`.

        Returns
        -------
        ndarray of shape (n_samples, n_features_out)
            Float features; NaN where a numeric ``features`` key is missing or not a number.
        """
        check_is_fitted(self, "feature_names_out_")
        prompts, feats = as_prompts_and_features(X)
        computers = [FEATURE_SETS.get(s)[1] for s in self._sets()]
        out = np.empty((len(prompts), len(self.feature_names_out_)), dtype=np.float64)
        for i, (text, f) in enumerate(zip(prompts, feats)):
            row: list[float] = []
            for compute in computers:
                row.extend(compute(text, self))
            for key in self.numeric_keys_:
                v = f.get(key)
                row.append(float(v) if v is not None and _is_number(v) else math.nan)
            for key, cats in self.categories_.items():
                v = f.get(key)
                row.extend([math.nan] * len(cats) if v is None else [float(v == c) for c in cats])
            out[i] = row
        return out

    def get_feature_names_out(self, input_features: Any = None) -> NDArray[np.object_]:
        """Names of the output columns, ndarray of str of shape (n_features_out,)."""
        check_is_fitted(self, "feature_names_out_")
        return self.feature_names_out_.copy()

    # -- JSON state (used by DifficultyModel.save / load) --
    def to_dict(self) -> dict[str, Any]:
        """Parameters and fitted state as JSON-serialisable data."""
        check_is_fitted(self, "feature_names_out_")
        params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.get_params().items()}
        return {"params": params, "numeric_keys": list(self.numeric_keys_),
                "categories": {k: list(v) for k, v in self.categories_.items()},
                "feature_names_out": [str(n) for n in self.feature_names_out_]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "QueryFeatures":
        """Rebuild a fitted transformer from :meth:`to_dict` output; checks that the feature names agree."""
        params: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in dict(d["params"]).items()}
        qf = cls(**params)
        qf._check_params()
        qf.numeric_keys_ = list(d["numeric_keys"])
        qf.categories_ = {str(k): list(v) for k, v in dict(d["categories"]).items()}
        extra = [PROBLEM_FEATURE_PREFIX + k for k in qf.numeric_keys_]
        extra += [f"{PROBLEM_FEATURE_PREFIX}{k}={c}" for k, cats in qf.categories_.items() for c in cats]
        names = qf._text_names() + extra
        if names != list(d["feature_names_out"]):
            diff = sorted(set(names) ^ set(d["feature_names_out"]))[:5]
            raise ValueError(f"saved feature names disagree with those this thinkctl computes (e.g. {diff}); the "
                             "feature definitions changed since the model was saved, so refit it")
        qf.feature_names_out_ = np.asarray(names, dtype=object)
        return qf
