"""Recorded generations -- from a serving engine (vLLM, SGLang, TGI) or files on disk -- as input to trace collection.

A generations file is JSON lines, one problem per line::

    {"id": "q-001", "prompt": "What is 7 * 6?", "gold": "42", "level": 2,
     "generations": ["<think>7 * 6 = 42</think>\\nFinal Answer: 42", "<think>...</think>\\nFinal Answer: 41"]}

``id`` (string or integer, unique in the file), ``prompt`` (the user message, as given to the model's chat
template), ``gold`` (the right answer, as the task checks it) and ``generations`` (a non-empty list of texts: what
the model wrote after the chat template's generation prompt, the first one greedy) are required; ``level`` (an
integer difficulty tier, or null) and ``features`` (an object of query-side facts) are optional. Other fields are
ignored. Lines may hold different numbers of generations.

:func:`read_generations` reads and checks a whole file without a model (UTF-8, JSON, fields, unique ids, a gold
answer the task can read); :func:`tokenize_generations` then turns every text into the model's token ids and checks
that they decode back to the same text and fit the model's context. Every error names ``FILE:LINE``.

Examples
--------
>>> task = task_for_generations("gold")
>>> task.check_answer(Problem("q", "1/2 of 1?", "\\\\frac{1}{2}"), "0.5")
True
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from thinkctl.generation import chat_prefix, thinking_length
from thinkctl.jsonl import iter_jsonl
from thinkctl.registry import UnknownNameError
from thinkctl.tasks import ANSWER_PREFIX, Problem, Task
from thinkctl.tasks import get as get_task
from thinkctl.tasks import names as task_names
from thinkctl.tasks.answers import extract_final_answer
from thinkctl.tasks.data import DataNotFoundError
from thinkctl.tasks.verify import answers_equivalent

__all__ = ["GenerationsRecord", "GenerationsFile", "TokenizedGenerations", "GoldAnswerTask", "GOLD_TASKS",
           "REQUIRED_FIELDS", "read_generations", "tokenize_generations", "task_for_generations"]

logger = logging.getLogger(__name__)

#: Fields every line of a generations file must have.
REQUIRED_FIELDS = ("id", "prompt", "gold", "generations")
#: Lines named in full in an error that concerns several lines.
_LINES_SHOWN = 5


@dataclass(frozen=True)
class GenerationsRecord:
    """One line of a generations file: its line number, the problem and its generation texts (greedy first)."""

    line: int
    problem: Problem
    texts: tuple[str, ...]


@dataclass(frozen=True)
class GenerationsFile:
    """A checked generations file: its path, the SHA-256 of its bytes and its records in file order."""

    path: Path
    sha256: str
    records: tuple[GenerationsRecord, ...]

    @property
    def problems(self) -> list[Problem]:
        return [r.problem for r in self.records]

    @property
    def n_texts(self) -> int:
        return sum(len(r.texts) for r in self.records)

    def where(self, record: GenerationsRecord) -> str:
        """``FILE:LINE`` of ``record``."""
        return f"{self.path}:{record.line}"


@dataclass(frozen=True)
class TokenizedGenerations:
    """Token ids of every generation (``ids[i][j]``: generation ``j`` of record ``i``, continuing the chat prefix of
    its prompt) and the ``FILE:LINE (generation j)`` of each text whose ids do not decode back to it."""

    ids: list[list[list[int]]]
    lossy: list[str]

    @property
    def longest(self) -> int:
        return max((len(g) for gens in self.ids for g in gens), default=0)


# -- tasks that check a gold answer ------------------------------------------------------------------------------

class GoldAnswerTask(Task):
    """Answers checked against each problem's gold answer, for problems that come with their gold (any data).

    The final answer of a text is found by :func:`~thinkctl.tasks.answers.extract_final_answer` (the last
    ``\\boxed{...}``, else what follows "Final Answer:" / "The answer is", else the last number) and compared with
    the gold by :func:`~thinkctl.tasks.verify.answers_equivalent` (math-aware: ``\\frac{1}{2}`` equals ``0.5``).
    It has no problems of its own: :meth:`sample` raises.

    Parameters
    ----------
    numeric : bool, default=False
        Answers are plain numbers: units, currency and percent signs are dropped before comparing.
    """

    def __init__(self, *, numeric: bool = False) -> None:
        self.numeric = numeric
        self.name = "gold-numeric" if numeric else "gold"

    def sample(self, n: int, *, seed: int, level: int | None = None) -> list[Problem]:
        raise ValueError(f"task {self.name!r} has no problems of its own; its problems and gold answers come from a "
                         "generations file (thinkctl collect --generations FILE.jsonl)")

    def extract_answer(self, text: str) -> str | None:
        return extract_final_answer(text, numeric=self.numeric)

    def check_answer(self, problem: Problem, answer: str) -> bool:
        return answers_equivalent(problem.answer, answer, numeric=self.numeric)


#: Task names for generations whose answers are checked only against their gold (no built-in task family).
GOLD_TASKS: dict[str, Callable[[], Task]] = {"gold": GoldAnswerTask,
                                             "gold-numeric": lambda: GoldAnswerTask(numeric=True)}


def task_for_generations(name: str) -> Task:
    """The task that checks the answers of a generations file: ``"gold"`` / ``"gold-numeric"``
    (:class:`GoldAnswerTask`), or a registered task (``thinkctl.tasks.get``) such as ``arith`` or ``math``."""
    if name in GOLD_TASKS:
        return GOLD_TASKS[name]()
    try:
        return get_task(name)
    except UnknownNameError:
        raise ValueError(f"unknown task {name!r}; use one of {sorted(set(task_names()) | set(GOLD_TASKS))} "
                         "('gold' checks any answer against the line's gold, math-aware)") from None
    except DataNotFoundError as exc:
        raise ValueError(f"{exc}; or use task 'gold' (math-aware) or 'gold-numeric', which check the gold answers "
                         "of the generations file and need no data files") from None


# -- reading and checking a file --------------------------------------------------------------------------------

def _field_error(where: str, msg: str) -> ValueError:
    return ValueError(f"{where}: {msg}; each line must be a JSON object with {', '.join(REQUIRED_FIELDS)} "
                      '(e.g. {"id": "q1", "prompt": "...", "gold": "42", "generations": ["...", "..."]})')


def _gold_readable(task: Task, problem: Problem) -> bool:
    """Whether ``task`` reads the gold answer back from a text that states it, and accepts it as right."""
    for text in ("\\boxed{" + problem.answer + "}", f"{ANSWER_PREFIX} {problem.answer}"):
        answer = task.extract_answer(text)
        if answer is not None and task.check_answer(problem, answer):
            return True
    return False


def _record(where: str, lineno: int, row: dict[str, Any]) -> GenerationsRecord:
    missing = [f for f in REQUIRED_FIELDS if f not in row]
    if missing:
        raise _field_error(where, f"missing field{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    pid, prompt, gold, texts = row["id"], row["prompt"], row["gold"], row["generations"]
    if isinstance(pid, bool) or not isinstance(pid, (str, int)) or not str(pid).strip():
        raise _field_error(where, f"id must be a non-empty string or an integer, got {pid!r}")
    if not isinstance(prompt, str) or not prompt.strip():
        raise _field_error(where, f"prompt must be a non-empty string, got {prompt!r:.80}")
    if isinstance(gold, bool) or not isinstance(gold, (str, int, float)) or not str(gold).strip():
        raise _field_error(where, f"gold must be a non-empty string (or a number), got {gold!r:.80}")
    if not isinstance(texts, list) or not texts:
        raise _field_error(where, "generations must be a non-empty list of texts (the greedy one first)")
    for j, text in enumerate(texts):
        if not isinstance(text, str):
            raise _field_error(where, f"generations[{j}] must be a string (the generated text), got "
                                      f"{type(text).__name__}")
    level = row.get("level")
    if level is not None and (isinstance(level, bool) or not isinstance(level, int)):
        raise _field_error(where, f"level must be an integer difficulty tier or null, got {level!r}")
    features = row.get("features", {})
    if features is None:
        features = {}
    if not isinstance(features, dict):
        raise _field_error(where, f"features must be a JSON object, got {type(features).__name__}")
    problem = Problem(id=str(pid), prompt=prompt, answer=str(gold), level=level, features=dict(features))
    return GenerationsRecord(line=lineno, problem=problem, texts=tuple(texts))


def read_generations(path: str | os.PathLike[str], task: Task) -> GenerationsFile:
    """Read a generations file (schema in the module docstring) and check all of it.

    Parameters
    ----------
    path : str or path-like
        The JSONL file.
    task : Task
        Checks the answers; every line's ``gold`` must be an answer it can read (a ``\\boxed{gold}`` or
        ``Final Answer: gold`` text is judged right).

    Returns
    -------
    GenerationsFile

    Raises
    ------
    FileNotFoundError
        When there is no file at ``path``.
    ValueError
        For an empty file, a line that is not UTF-8, not JSON or not an object, a missing or malformed field, a
        repeated id, or a gold answer ``task`` cannot read; the message names ``FILE:LINE`` and the fix.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"generations file {p} does not exist (or is not a file); give a JSONL file with one "
                                "problem and its generations per line")
    data = p.read_bytes()
    records: list[GenerationsRecord] = []
    first_line: dict[str, int] = {}
    for lineno, row in iter_jsonl(p):
        where = f"{p}:{lineno}"
        rec = _record(where, lineno, row)
        if rec.problem.id in first_line:
            raise ValueError(f"{where}: id {rec.problem.id!r} already used on line {first_line[rec.problem.id]}; "
                             "ids must be unique (put all generations of a problem on its one line)")
        first_line[rec.problem.id] = lineno
        if not _gold_readable(task, rec.problem):
            raise ValueError(f"{where}: gold {rec.problem.answer!r:.80} is not an answer task {task.name!r} can read "
                             "(a text answering it would not be judged right); fix the gold or choose the task "
                             f"that fits the data (e.g. 'gold' for any math answer)")
        records.append(rec)
    if not records:
        raise ValueError(f"generations file {p} is empty (no JSON lines); write one line per problem: "
                         '{"id": ..., "prompt": ..., "gold": ..., "generations": [...]}')
    return GenerationsFile(path=p, sha256=hashlib.sha256(data).hexdigest(), records=tuple(records))


# -- tokenizing -------------------------------------------------------------------------------------------------

def _listing(items: Sequence[str]) -> str:
    more = f" and {len(items) - _LINES_SHOWN} more" if len(items) > _LINES_SHOWN else ""
    return ", ".join(items[:_LINES_SHOWN]) + more


def tokenize_generations(source: GenerationsFile, tokenizer: Any, fmt: Any, *, prompt_suffix: str = "",
                         context_length: int | None = None, forced_tokens: int = 0, checkpoints: str = "all",
                         allow_lossy: bool = False) -> TokenizedGenerations:
    """Token ids of every generation of ``source``, each as the continuation of its prompt's chat prefix.

    Each text is tokenized on its own (no special tokens added: an end-of-sequence marker counts only when the
    text contains it) and must decode back to itself.

    Parameters
    ----------
    source : GenerationsFile
    tokenizer : transformers tokenizer
        The model's tokenizer, with its chat template.
    fmt : ReasoningFormat
        The model's reasoning format (:func:`thinkctl.generation.reasoning_format`).
    prompt_suffix : str, default=""
        Appended to every prompt before the chat template (as in live collection).
    context_length : int or None
        The model's context (:func:`model_context_length`); None skips the length check.
    forced_tokens : int, default=0
        Tokens a forced answer adds at a checkpoint (the forcing tokens plus the most answer tokens): the
        prompt, the thinking and these must fit the context too.
    checkpoints : {"all", "greedy"}
        Which generations get forced answers (``CollectConfig.checkpoints``).
    allow_lossy : bool, default=False
        Keep texts that do not round-trip through the tokenizer (``decode(encode(text)) != text``, e.g. a text
        from another model's tokenizer or with characters this tokenizer normalises), with a warning giving their
        count; by default they are an error.

    Raises
    ------
    ValueError
        Naming ``FILE:LINE`` (and the generation) of a text that does not round-trip (unless ``allow_lossy``) or
        whose prompt and generation do not fit ``context_length``.
    """
    ids: list[list[list[int]]] = []
    lossy: list[str] = []
    too_long: list[tuple[str, int]] = []
    for rec in source.records:
        n_pre = len(chat_prefix(tokenizer, rec.problem.prompt + prompt_suffix))
        per: list[list[int]] = []
        for j, text in enumerate(rec.texts):
            where = f"{source.where(rec)} (generation {j})"
            gen = [int(t) for t in tokenizer(text, add_special_tokens=False)["input_ids"]]
            if tokenizer.decode(gen, skip_special_tokens=False, clean_up_tokenization_spaces=False) != text:
                lossy.append(where)
            if context_length is not None:
                need = n_pre + len(gen)
                if j == 0 or checkpoints == "all":
                    n_think, _ = thinking_length(fmt, tokenizer, gen)
                    need = max(need, n_pre + n_think + forced_tokens)
                if need > context_length:
                    too_long.append((where, need))
            per.append(gen)
        ids.append(per)
    if too_long:
        where, need = too_long[0]
        raise ValueError(f"{where}: the prompt and generation take {need} tokens (forced answers included) but the "
                         f"model's context is {context_length} (max_position_embeddings); {len(too_long)} "
                         f"generation(s) too long: {_listing([w for w, _ in too_long])}; drop or shorten them")
    if lossy:
        msg = (f"{len(lossy)} of {source.n_texts} generation texts do not round-trip through the model's tokenizer "
               f"(decode(encode(text)) != text): {_listing(lossy)}; they were probably written by another model's "
               "tokenizer or normalised on the way (whitespace, Unicode)")
        if not allow_lossy:
            raise ValueError(msg + "; generate with this model, or accept the tokenizer's version of these texts "
                                   "(allow_lossy=True; thinkctl collect --allow-lossy-texts)")
        logger.warning("%s; their traces use the tokenizer's version of the text", msg)
    return TokenizedGenerations(ids=ids, lossy=lossy)
