"""Readers of recorded real-model outputs into the structures of :mod:`thinkctl.traces`.

The data directory (``data_dir=``, else ``$THINKCTL_DATA``; see :func:`thinkctl.tasks.benchmarks.find_data_dir`)
holds two kinds of recorded outputs, described in its README:

* ``replay/*.jsonl``: many sampled answers per problem, one problem per line
  (``{qid, question, gt, samples: [{answer, correct, n_tokens_cl100k?, n_words?, n_chars?, score?,
  verifications?}]}``). Parsed and validated by :func:`thinkctl.eval.replay.load_replay`; read here into one
  sample row per recorded sample, with its final answer, correctness, token count and verifier scores.
* ``steps/*.jsonl``: one step-segmented solution per line with a human first-error label
  (``{id, question, gt, steps, final_answer, answer_correct, process_correct, first_error_step,
  evaluator_scores?}``). Read here into one sample row whose checkpoints are the steps: after step ``k``
  (``position = k + 1`` steps read), ``prefix_correct`` says whether steps ``0..k`` are free of errors (exact: the
  label is the first error) and ``confidence`` holds each evaluator's (PRM / ReasonEval) score of that step.

Rows follow :meth:`TraceStore.samples`'s schema where the recorded files carry the field (``problem_id``, ``prompt``,
``level``, ``features``, ``sample``, ``text``, ``answer``, ``gold``, ``correct``, ``n_generated``, ``checkpoints``);
what a file does not record is absent or ``None``, never invented. Recorded files hold no hidden states and no answers
forced at a checkpoint, so :meth:`RecordedTraces.checkpoint_arrays` and :meth:`RecordedTraces.sample_arrays` return
:class:`CheckpointArrays` / :class:`SampleArrays` whose ``X`` has zero columns, and the checkpoint label is named by
:attr:`RecordedTraces.checkpoint_target`. :meth:`RecordedTraces.difficulty_data` gives what
:class:`~thinkctl.predictors.DifficultyModel` fits on (query rows and solve rates), and the score matrices feed the
calibrators and metrics of :mod:`thinkctl.calibration`.

Every malformed row raises ``ValueError`` naming ``FILE:LINE`` and what to fix.

Examples
--------
>>> import json, os, tempfile
>>> row = {"qid": 7, "question": "2+2?", "gt": "4",
...        "samples": [{"answer": "4", "correct": True, "n_tokens_cl100k": 12, "score": 0.9},
...                    {"answer": "5", "correct": False, "n_tokens_cl100k": 30, "score": 0.2}]}
>>> path = os.path.join(tempfile.mkdtemp(), "toy.jsonl")
>>> _ = open(path, "w").write(json.dumps(row) + "\\n")
>>> rec = read_replay(path)
>>> [(r["problem_id"], r["sample"], r["answer"], r["correct"], r["n_generated"]) for r in rec.samples()]
[('7', 0, '4', True, 12.0), ('7', 1, '5', False, 30.0)]
>>> rec.sample_confidence()[1], rec.difficulty_data()[1].tolist()
(['score'], [0.5])
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from thinkctl.jsonl import iter_jsonl
from thinkctl.registry import Registry
from thinkctl.traces.store import CheckpointArrays, SampleArrays

__all__ = ["RecordedTraces", "RECORDED_KINDS", "read_replay", "read_steps", "read_recorded", "recorded_files",
           "STEPS_CHECKPOINT_TARGET"]

logger = logging.getLogger(__name__)

#: What ``CheckpointArrays.y`` means for a steps file.
STEPS_CHECKPOINT_TARGET = "no error in steps 0..k (human first-error label)"
#: Confidence name of a replay sample's mean generative-verifier verdict (its ``verifications`` list).
VERIFICATION_MEAN = "verification_mean"
_LEVEL_RE = re.compile(r"^\s*(?:level\s*)?(\d+)\s*$", re.IGNORECASE)


@dataclass
class RecordedTraces:
    """Recorded outputs of a real model, as sample rows in :class:`TraceStore`'s schema.

    Attributes
    ----------
    path : Path
        The file read.
    kind : str
        ``"replay"`` or ``"steps"`` (see :data:`RECORDED_KINDS`).
    meta : dict
        File-level facts: ``source``, ``dataset``, ``model`` (the generator), and for replay files ``setting``,
        ``correct_rule`` and ``token_sources`` (how many token counts came from ``n_tokens_cl100k`` and how many are
        estimates from words or characters).
    rows : list of dict
        One row per recorded sample (see the module docstring); ``row["source"]`` is ``{"file", "line"}``.
    checkpoint_target : str or None
        What the checkpoint label means; ``None`` for files without checkpoints (replay).
    """

    path: Path
    kind: str
    meta: dict[str, Any]
    rows: list[dict[str, Any]] = field(repr=False)
    checkpoint_target: str | None = None

    def samples(self) -> list[dict[str, Any]]:
        """Every sample row, in file order (checkpoints nested under ``"checkpoints"``), like
        :meth:`TraceStore.samples`."""
        return self.rows

    def problem_ids(self) -> list[str]:
        """Distinct problem ids in file order."""
        return list(dict.fromkeys(r["problem_id"] for r in self.rows))

    def checkpoint_arrays(self) -> CheckpointArrays:
        """Per-checkpoint labels and scores (steps files only).

        Returns
        -------
        CheckpointArrays
            ``X`` of shape (n_checkpoints, 0) (no hidden states are recorded); ``y``: ``prefix_correct``
            (see :attr:`checkpoint_target`); ``position``: steps read; ``fraction``: over the solution's steps;
            ``final_correct``: the final answer's correctness; ``confidence``: (n_checkpoints, n_scorers) evaluator
            scores, NaN where a row lacks that scorer, named by ``confidence_names``.

        Raises
        ------
        ValueError
            For a replay file, which records final answers only.
        """
        if self.kind != "steps":
            raise ValueError(f"{self.path} is a {self.kind} file: it records final answers only, no per-checkpoint "
                             "data; use sample_arrays() and sample_confidence()")
        names = sorted({k for r in self.rows for ck in r["checkpoints"] for k in ck["confidence"]})
        y, groups, position, fraction, final, sample, conf = [], [], [], [], [], [], []
        for i, r in enumerate(self.rows):
            for ck in r["checkpoints"]:
                y.append(ck["prefix_correct"])
                groups.append(r["problem_id"])
                position.append(ck["position"])
                fraction.append(ck["position"] / r["n_steps"])
                final.append(r["correct"])
                sample.append(i)
                conf.append([ck["confidence"].get(k, math.nan) for k in names])
        n = len(y)
        return CheckpointArrays(
            X=np.zeros((n, 0), dtype=np.float32), y=np.asarray(y, dtype=bool), groups=np.asarray(groups, dtype=str),
            position=np.asarray(position, dtype=int), fraction=np.asarray(fraction, dtype=float),
            final_correct=np.asarray(final, dtype=bool), sample=np.asarray(sample, dtype=int),
            confidence=np.asarray(conf, dtype=float).reshape(n, len(names)), confidence_names=names)

    def sample_arrays(self) -> SampleArrays:
        """One entry per sample: ``y`` final correctness, ``groups`` problem ids, ``level`` (-1 when unknown),
        ``tokens`` generated tokens (NaN when the file has no length; prompt tokens are not recorded) and ``X`` of
        shape (n_samples, 0)."""
        n = len(self.rows)
        tokens = [math.nan if r.get("n_generated") is None else float(r["n_generated"]) for r in self.rows]
        return SampleArrays(
            X=np.zeros((n, 0), dtype=np.float32), y=np.asarray([r["correct"] for r in self.rows], dtype=bool),
            groups=np.asarray([r["problem_id"] for r in self.rows], dtype=str),
            level=np.asarray([-1 if r["level"] is None else r["level"] for r in self.rows], dtype=int),
            tokens=np.asarray(tokens, dtype=float))

    def sample_confidence(self) -> tuple[np.ndarray, list[str]]:
        """Per-sample scores recorded with the answers: (n_samples, n_scores) and their names.

        Replay files: ``score`` (reward model or verifier) and ``verification_mean`` (mean of a sample's finite
        generative-verifier verdicts), NaN where a sample has none. Steps files: each evaluator's score of the last
        step.
        """
        names = sorted({k for r in self.rows for k in r["confidence"]})
        mat = np.array([[r["confidence"].get(k, math.nan) for k in names] for r in self.rows], dtype=float)
        return mat.reshape(len(self.rows), len(names)), names

    def difficulty_data(self) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray]:
        """What :class:`~thinkctl.predictors.DifficultyModel` ``(target="solve")`` fits on, one entry per problem.

        Returns
        -------
        queries : list of dict
            ``{"prompt", "features"}`` per problem, in file order.
        solve_rate : ndarray of shape (n_problems,)
            Fraction of the problem's samples that are right.
        n_samples : ndarray of shape (n_problems,)
            Samples behind each rate (pass as ``sample_weight``).

        Raises
        ------
        ValueError
            When the file records no question text (the GPQA replay file), which the query features need.
        """
        by_pid: dict[str, dict[str, Any]] = {}
        for r in self.rows:
            if r["prompt"] is None:
                where = f"{self.path}:{r['source']['line']}"
                raise ValueError(f"{where}: problem {r['problem_id']!r} has no question text, so there is no query "
                                 "to featurise; use a file with questions for difficulty models")
            d = by_pid.setdefault(r["problem_id"], {"prompt": r["prompt"], "features": r["features"], "ok": []})
            d["ok"].append(r["correct"])
        queries = [{"prompt": d["prompt"], "features": d["features"]} for d in by_pid.values()]
        return (queries, np.array([float(np.mean(d["ok"])) for d in by_pid.values()]),
                np.array([len(d["ok"]) for d in by_pid.values()], dtype=int))


#: Readers by kind of recorded file; a file's kind is its folder's name in the shared data directory.
RECORDED_KINDS: Registry[Callable[[str | os.PathLike[str]], RecordedTraces]] = Registry("recorded file kind")


# -- helpers ------------------------------------------------------------------------------------------------------

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def _level(value: Any) -> int | None:
    """A difficulty level from ``meta.level`` ("Level 3", "3" or 3); None when absent or not a level."""
    if _is_int(value):
        return int(value)
    if isinstance(value, str):
        m = _LEVEL_RE.match(value)
        if m:
            return int(m.group(1))
    return None


def _problem_id(value: Any, where: str, field_name: str) -> str:
    if _is_int(value) or (isinstance(value, str) and value):
        return str(value)
    raise ValueError(f"{where}: field {field_name!r} must be a non-empty string or an integer (the problem id), "
                     f"got {value!r}")


def _optional_text(row: dict[str, Any], key: str, where: str) -> str | None:
    v = row.get(key)
    if v is None or isinstance(v, str):
        return v
    if _is_number(v):
        return str(v)
    raise ValueError(f"{where}: field {key!r} must be a string or null, got {type(v).__name__}")


def _file_meta(row: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: row.get(k) for k in keys}


def _verification_mean(ver: Any, where: str) -> float | None:
    """Mean of a sample's finite verifier verdicts; NaN verdicts (verifications that failed in the source) are
    skipped, as the source's own ``score`` does. None when there are no finite verdicts."""
    if ver is None:
        return None
    if not isinstance(ver, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in ver):
        raise ValueError(f"{where}: 'verifications' must be a list of numbers (NaN for a failed verification), got "
                         f"{ver!r:.80}")
    finite = [float(v) for v in ver if math.isfinite(float(v))]
    return float(np.mean(finite)) if finite else None


# -- replay files -------------------------------------------------------------------------------------------------

@RECORDED_KINDS.register("replay")
def read_replay(path: str | os.PathLike[str]) -> RecordedTraces:
    """Read a replay file (many sampled answers per problem) into sample rows.

    The samples are parsed and validated by :func:`thinkctl.eval.replay.load_replay` (answers, correctness, token
    counts, scores); this adds the question, the gold answer and the level, and checks that problem ids are unique.

    Parameters
    ----------
    path : path of a replay JSONL file

    Returns
    -------
    RecordedTraces
        ``kind="replay"``; row ``sample`` is the sample's index in the file (the source's order), ``n_generated`` its
        token count (``n_tokens_cl100k``, else an estimate from words or characters, see ``meta["token_sources"]``;
        ``None`` when it has no length), ``confidence`` its ``score`` and ``verification_mean`` where recorded,
        ``checkpoints`` empty.

    Raises
    ------
    FileNotFoundError
        When the file does not exist.
    ValueError
        On a malformed line (``FILE:LINE: ...``).
    """
    from thinkctl.traces.replay_file import load_replay

    data = load_replay(path)  # validates every sample, with FILE:LINE errors
    p = Path(path)
    by_line = {prob.line: prob for prob in data.problems}
    rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for lineno, raw in iter_jsonl(p):
        where = f"{p}:{lineno}"
        prob = by_line[lineno]
        pid = _problem_id(raw.get("qid", lineno), where, "qid")
        if pid in seen:
            raise ValueError(f"{where}: qid {pid!r} repeats line {seen[pid]}; every problem needs its own qid (samples "
                             "of one problem belong on one line)")
        seen[pid] = lineno
        question = _optional_text(raw, "question", where)
        gold = _optional_text(raw, "gt", where)
        meta = raw.get("meta")
        level = _level(meta.get("level")) if isinstance(meta, dict) else None
        features = {"dataset": raw["dataset"]} if isinstance(raw.get("dataset"), str) else {}
        for j, s in enumerate(raw["samples"]):
            aid = int(prob.answer_ids[j])
            conf: dict[str, float] = {}
            if not math.isnan(prob.scores[j]):
                conf["score"] = float(prob.scores[j])
            vmean = _verification_mean(s.get("verifications"), f"{where}: sample {j}")
            if vmean is not None:
                conf[VERIFICATION_MEAN] = vmean
            rows.append({
                "problem_id": pid, "prompt": question, "level": level, "features": features, "sample": j,
                "answer": prob.answers[aid] if aid >= 0 else None, "gold": gold, "correct": bool(s["correct"]),
                "n_generated": None if prob.tokens is None else float(prob.tokens[j]),
                "confidence": conf, "checkpoints": [], "source": {"file": str(p), "line": lineno},
            })
    meta_out = dict(data.meta)
    meta_out["token_sources"] = {k: v for k, v in data.token_sources.items() if v}
    meta_out["n_tokens_missing"] = data.n_tokens_missing
    meta_out["sha256"] = data.sha256
    logger.info("read %s: %d problems, %d samples", p, len(seen), len(rows))
    return RecordedTraces(path=p, kind="replay", meta=meta_out, rows=rows)


# -- steps files --------------------------------------------------------------------------------------------------

def _check_steps_row(raw: dict[str, Any], where: str) -> tuple[list[str], int | None]:
    steps = raw.get("steps")
    if not isinstance(steps, list) or not steps or not all(isinstance(s, str) for s in steps):
        got = "nothing" if steps is None else (
            "an empty list" if steps == [] else
            f"a list holding {sorted({type(s).__name__ for s in steps} - {'str'})}" if isinstance(steps, list)
            else type(steps).__name__)
        raise ValueError(f"{where}: field 'steps' must be a non-empty list of strings (one per reasoning step), "
                         f"got {got}")
    for key in ("answer_correct", "process_correct"):
        if not isinstance(raw.get(key), bool):
            raise ValueError(f"{where}: field {key!r} must be true or false, got {raw.get(key)!r}")
    fe = raw.get("first_error_step")
    if fe is not None and not (_is_int(fe) and 0 <= fe < len(steps)):
        raise ValueError(f"{where}: first_error_step={fe!r} must be null or a 0-based step index in "
                         f"0..{len(steps) - 1} (the solution has {len(steps)} steps)")
    if raw["process_correct"] != (fe is None):
        raise ValueError(f"{where}: process_correct={raw['process_correct']} contradicts first_error_step={fe!r}; a "
                         "solution is process-correct exactly when it has no first error (null)")
    return steps, fe


def _evaluator_scores(raw: dict[str, Any], n_steps: int, where: str) -> dict[str, list[float]]:
    ev = raw.get("evaluator_scores")
    if ev is None:
        return {}
    if not isinstance(ev, dict):
        raise ValueError(f"{where}: field 'evaluator_scores' must be an object {{scorer name: [score per step]}}, got "
                         f"{type(ev).__name__}")
    out: dict[str, list[float]] = {}
    for name, scores in ev.items():
        if not isinstance(scores, list) or len(scores) != n_steps:
            got = f"{len(scores)} scores" if isinstance(scores, list) else type(scores).__name__
            raise ValueError(f"{where}: evaluator_scores[{name!r}] must hold one score per step ({n_steps}), got {got}")
        bad = [k for k, v in enumerate(scores) if not _is_number(v)]
        if bad:
            raise ValueError(f"{where}: evaluator_scores[{name!r}] has a non-numeric score at step {bad[0]} "
                             f"({scores[bad[0]]!r}); every score must be a finite number")
        out[str(name)] = [float(v) for v in scores]
    return out


def _step_groups(raw: dict[str, Any], n_steps: int, where: str) -> list[int] | None:
    groups = raw.get("step_group_of")
    if groups is None:
        return None
    if not isinstance(groups, list) or len(groups) != n_steps or not all(_is_int(g) and g >= 0 for g in groups):
        raise ValueError(f"{where}: field 'step_group_of' must list one non-negative integer group per step "
                         f"({n_steps}), got {groups!r}")
    return [int(g) for g in groups]


@RECORDED_KINDS.register("steps")
def read_steps(path: str | os.PathLike[str]) -> RecordedTraces:
    """Read a steps file (step-segmented solutions with human first-error labels) into sample rows.

    Parameters
    ----------
    path : path of a steps JSONL file

    Returns
    -------
    RecordedTraces
        ``kind="steps"``, one row per solution (``sample`` 0) with ``text`` (the steps joined by newlines),
        ``steps``, ``n_steps``, ``answer`` (``final_answer``, may be None), ``correct`` (``answer_correct``),
        ``process_correct``, ``first_error_step`` and one checkpoint per step: ``{"position": k + 1, "step": k,
        "prefix_correct": bool, "confidence": {scorer: score of step k}}`` (plus ``"step_group"`` where the file
        groups steps). ``n_generated`` is None: steps files record no token counts.

    Raises
    ------
    FileNotFoundError
        When the file does not exist.
    ValueError
        On a malformed line (``FILE:LINE: ...``) or an empty file.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"steps file {str(p)!r} not found; pass a JSONL file with one solution per line "
                                "(see the README of the data directory, $THINKCTL_DATA)")
    rows: list[dict[str, Any]] = []
    meta: dict[str, Any] = {}
    seen: dict[str, int] = {}
    for lineno, raw in iter_jsonl(p):
        where = f"{p}:{lineno}"
        if "id" not in raw:
            raise ValueError(f"{where}: field 'id' is missing; every solution needs a problem id")
        pid = _problem_id(raw["id"], where, "id")
        if pid in seen:
            raise ValueError(f"{where}: id {pid!r} repeats line {seen[pid]}; ids must be unique (a problem id groups "
                             "rows in train/test splits)")
        seen[pid] = lineno
        steps, fe = _check_steps_row(raw, where)
        scores = _evaluator_scores(raw, len(steps), where)
        groups = _step_groups(raw, len(steps), where)
        checkpoints = []
        for k in range(len(steps)):
            ck: dict[str, Any] = {"position": k + 1, "step": k, "prefix_correct": fe is None or k < fe,
                                  "confidence": {name: v[k] for name, v in scores.items()}}
            if groups is not None:
                ck["step_group"] = groups[k]
            checkpoints.append(ck)
        dataset = raw.get("dataset")
        rows.append({
            "problem_id": pid, "prompt": _optional_text(raw, "question", where), "level": None,
            "features": {"dataset": dataset} if isinstance(dataset, str) else {}, "sample": 0,
            "text": "\n".join(steps), "steps": steps, "n_steps": len(steps),
            "answer": _optional_text(raw, "final_answer", where), "gold": _optional_text(raw, "gt", where),
            "correct": raw["answer_correct"], "process_correct": raw["process_correct"], "first_error_step": fe,
            "n_generated": None, "confidence": dict(checkpoints[-1]["confidence"]), "checkpoints": checkpoints,
            "source": {"file": str(p), "line": lineno},
        })
        if not meta:
            meta = _file_meta(raw, ("source", "dataset", "generator"))
            meta["model"] = meta.pop("generator")
    if not rows:
        raise ValueError(f"{p}: no solutions found; the file is empty")
    logger.info("read %s: %d solutions", p, len(rows))
    return RecordedTraces(path=p, kind="steps", meta=meta, rows=rows, checkpoint_target=STEPS_CHECKPOINT_TARGET)


# -- dispatch -----------------------------------------------------------------------------------------------------

def _sniff_kind(path: Path) -> str:
    if path.parent.name in RECORDED_KINDS.names():
        return path.parent.name
    for lineno, raw in iter_jsonl(path):
        if "samples" in raw:
            return "replay"
        if "steps" in raw:
            return "steps"
        raise ValueError(f"{path}:{lineno}: cannot tell the kind of this recorded file: a replay row has 'samples', a "
                         f"steps row has 'steps'; pass kind= one of {', '.join(RECORDED_KINDS.names())}")
    raise ValueError(f"{path}: the file is empty")


def read_recorded(path: str | os.PathLike[str], kind: str | None = None) -> RecordedTraces:
    """Read a recorded file of either kind: ``kind`` (``"replay"`` or ``"steps"``), else the name of its folder,
    else the fields of its first row.

    Raises
    ------
    FileNotFoundError, ValueError
        As the readers; an unknown ``kind`` lists the known ones.
    """
    p = Path(path)
    if kind is None:
        if not p.is_file():
            raise FileNotFoundError(f"recorded file {str(p)!r} not found")
        kind = _sniff_kind(p)
    return RECORDED_KINDS.get(kind)(p)


def recorded_files(kind: str | None = None, data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The recorded files of the data directory (``replay/*.jsonl`` and ``steps/*.jsonl``), sorted.

    Parameters
    ----------
    kind : {"replay", "steps"}, optional
        Only this kind; both when None.
    data_dir : path, optional
        The data directory; by default ``$THINKCTL_DATA`` (:func:`thinkctl.tasks.benchmarks.find_data_dir`, which
        raises ``DataNotFoundError`` saying what to set when it is unset).
    """
    from thinkctl.tasks.benchmarks import find_data_dir

    kinds = RECORDED_KINDS.names() if kind is None else [kind]
    for k in kinds:
        RECORDED_KINDS.get(k)  # unknown kinds list the known ones
    root = Path(data_dir) if data_dir is not None else find_data_dir()
    return sorted(f for k in kinds for f in (root / k).glob("*.jsonl"))
