"""The replay file format: many sampled answers per problem, one problem per line, read and validated here.

Each line is one problem::

    {source, dataset, model, setting, correct_rule, qid, question, gt,
     samples: [{answer, correct, n_chars, n_words, n_tokens_cl100k?, score?, verifications?}, ...]}

``answer`` is a string (or null for no answer), ``correct`` a boolean; the length fields give a sample's tokens
(``n_tokens_cl100k``, else ``n_words * 4/3``, else ``n_chars / 4``); ``score`` (a verifier or reward-model score)
or ``verifications`` (a list of verifier verdicts) give its weight in a weighted vote. This module owns the format:
:mod:`thinkctl.eval.replay` (policies replayed on the samples) and :func:`thinkctl.traces.read_replay` (sample
rows for predictors) both read files through :func:`load_replay`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from thinkctl.jsonl import iter_jsonl

__all__ = ["ReplayProblem", "ReplayData", "load_replay", "TOKEN_SOURCES", "TOKENS_PER_WORD", "CHARS_PER_TOKEN"]

logger = logging.getLogger(__name__)

#: Tokens per word and characters per token used when a sample lacks ``n_tokens_cl100k`` (OpenAI's rule of thumb
#: for English text with cl100k: about 3/4 of a word, about 4 characters per token).
TOKENS_PER_WORD = 4.0 / 3.0
CHARS_PER_TOKEN = 4.0
#: Token-count sources, in order of preference, with the names written to the output.
TOKEN_SOURCES = ("n_tokens_cl100k", "n_words*4/3", "n_chars/4")


@dataclass
class ReplayProblem:
    """One problem of a replay file, answers encoded as integers (``-1`` = no answer)."""

    qid: Any
    line: int
    answer_ids: np.ndarray  # (N,) int
    answers: list[str]  # id -> answer string
    answer_correct: np.ndarray  # (n_answers,) bool
    tokens: np.ndarray | None  # (N,) float, None when some sample has no length field
    scores: np.ndarray  # (N,) float, nan where the sample has no score
    weight_source: np.ndarray  # (N,) float, nan where neither score nor verifications exist
    inconsistent_answers: int = 0

    @property
    def n_samples(self) -> int:
        return int(self.answer_ids.size)

    def is_correct(self, answer_id: int | None) -> bool:
        return answer_id is not None and answer_id >= 0 and bool(self.answer_correct[answer_id])


@dataclass
class ReplayData:
    path: str
    problems: list[ReplayProblem]
    meta: dict[str, Any]
    token_sources: dict[str, int]
    n_tokens_missing: int
    score_kind: str  # "score", "verifications" or "none"
    n_samples_scored: int
    sha256: str = ""

    @property
    def has_scores(self) -> bool:
        return self.score_kind == "score"


def _sample_tokens(s: dict[str, Any]) -> tuple[float | None, str | None]:
    for key, source, scale in (("n_tokens_cl100k", TOKEN_SOURCES[0], 1.0),
                               ("n_words", TOKEN_SOURCES[1], TOKENS_PER_WORD),
                               ("n_chars", TOKEN_SOURCES[2], 1.0 / CHARS_PER_TOKEN)):
        v = s.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0:
            return float(v) * scale, source
    return None, None


def _number(v: Any) -> float | None:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)):
        return float(v)
    return None


def load_replay(path: str | os.PathLike[str]) -> ReplayData:
    """Read and validate a replay JSONL file.

    Raises
    ------
    FileNotFoundError
        When ``path`` does not exist.
    ValueError
        On any malformed line, naming the file, the line number and what to fix.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"replay file {str(path)!r} not found; pass a JSONL file with one problem per line "
                                "(format: thinkctl.traces.replay_file)")
    problems: list[ReplayProblem] = []
    meta: dict[str, Any] = {}
    token_sources = {s: 0 for s in TOKEN_SOURCES}
    n_tokens_missing = 0
    n_score = n_verif = 0
    for lineno, row in iter_jsonl(path):
        where = f"{path}:{lineno}"
        samples = row.get("samples")
        if not isinstance(samples, list) or not samples:
            got = "nothing" if samples is None else ("an empty list" if samples == [] else type(samples).__name__)
            raise ValueError(f"{where}: field 'samples' must be a non-empty list of "
                             f"{{answer, correct, ...}} objects, got {got}")
        ids = np.empty(len(samples), dtype=np.int64)
        toks = np.empty(len(samples), dtype=float)
        scores = np.full(len(samples), np.nan)
        wsrc = np.full(len(samples), np.nan)
        index: dict[str, int] = {}
        flags: list[list[bool]] = []
        null_flags: list[bool] = []
        tokens_ok = True
        for j, s in enumerate(samples):
            if not isinstance(s, dict):
                raise ValueError(f"{where}: sample {j} is {type(s).__name__}, expected an object with 'answer' and "
                                 "'correct'")
            if "answer" not in s or "correct" not in s:
                missing = [k for k in ("answer", "correct") if k not in s]
                raise ValueError(f"{where}: sample {j} lacks {', '.join(repr(k) for k in missing)}; every sample "
                                 "needs 'answer' (string or null) and 'correct' (true/false)")
            ans, ok = s["answer"], s["correct"]
            if not isinstance(ok, bool):
                raise ValueError(f"{where}: sample {j} has correct={ok!r}; it must be true or false")
            if ans is None:
                ids[j] = -1
                null_flags.append(ok)
            else:
                if not isinstance(ans, (str, int, float)) or isinstance(ans, bool):
                    raise ValueError(f"{where}: sample {j} has answer of type {type(ans).__name__}; use a string "
                                     "(or null for no answer)")
                key = str(ans)
                if key not in index:
                    index[key] = len(index)
                    flags.append([])
                ids[j] = index[key]
                flags[index[key]].append(ok)
            t, src = _sample_tokens(s)
            if t is None or src is None:
                tokens_ok = False
                n_tokens_missing += 1
            else:
                toks[j] = t
                token_sources[src] += 1
            sc = _number(s.get("score"))
            if sc is not None:
                scores[j] = sc
                wsrc[j] = sc
                n_score += 1
            else:
                ver = s.get("verifications")
                if isinstance(ver, list) and ver and all(_number(v) is not None for v in ver):
                    wsrc[j] = float(np.mean(ver))
                    n_verif += 1
        inconsistent = 0
        correct = np.zeros(len(index), dtype=bool)
        for k, fl in enumerate(flags):
            n_true = sum(fl)
            if 0 < n_true < len(fl):
                inconsistent += 1
            correct[k] = 2 * n_true > len(fl)  # majority of the flags (ties: wrong); they agree in clean files
        if inconsistent:
            logger.warning("%s: %d answer(s) carry both correct=true and correct=false; using the majority flag",
                           where, inconsistent)
        if not meta:
            meta = {k: row.get(k) for k in ("source", "dataset", "model", "setting", "correct_rule")}
        problems.append(ReplayProblem(
            qid=row.get("qid", lineno), line=lineno, answer_ids=ids, answers=list(index), answer_correct=correct,
            tokens=toks if tokens_ok else None, scores=scores, weight_source=wsrc, inconsistent_answers=inconsistent))
    if not problems:
        raise ValueError(f"{path}: no problems found; the file is empty")
    score_kind = "score" if n_score else ("verifications" if n_verif else "none")
    return ReplayData(path=str(path), problems=problems, meta=meta, token_sources=token_sources,
                      n_tokens_missing=n_tokens_missing, score_kind=score_kind,
                      n_samples_scored=n_score if n_score else n_verif,
                      sha256=hashlib.sha256(path.read_bytes()).hexdigest())
