"""How well does a step scorer find the first error? Figures on step-labelled solutions, per evaluator.

This is how a user chooses a process reward model before spending a GPU on it: on solutions whose first wrong step
a human labelled (``steps/*.jsonl``, read by :func:`thinkctl.traces.read_steps`), each evaluator's recorded step
scores (or a :class:`~thinkctl.process.scoring.StepScorer` run on the steps) are compared with the labels three
ways:

1. **Step AUROC**: how well a step's score separates the steps before the first error (label 1) from the first
   wrong step (label 0). Steps after the first error are left out, since the labels say nothing about them (as in
   ProcessBench, Zheng et al. 2024). Interval: bootstrap over solutions.
2. **First-error localization**: the predicted first error is the first step scored below a threshold (none if no
   step is). As in ProcessBench, accuracy is measured separately on the solutions with an error (the predicted step
   is the labelled one) and on the solutions without (no step is flagged), and summarised by their harmonic mean
   (F1). The threshold is either given (``threshold``; 0.5 for probability-like scores) or chosen to maximise F1
   by two-fold cross-fitting over problems (chosen on one half, measured on the other), so that the reported F1 is
   not tuned on the solutions it is measured on. Intervals: Wilson for the two accuracies.
3. **Outcome selection**: each aggregation of the step scores (``last``, ``min``, ``prod``, ``mean``) ranks whole
   solutions; its AUROC against "the solution is right" (the final answer, and the process: no wrong step) says how
   well best-of-N selection by that aggregation would pick right solutions.

A scorer that knows nothing reaches AUROC 0.5; the ``random`` row of :func:`evaluate_step_scorers` (uniform scores
from a fixed seed) shows what chance gives for localization on the same data.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from thinkctl.predictors.bootstrap import auroc_ci
from thinkctl.process.scoring import AGGREGATIONS, StepScorer, aggregate, check_step_scores
from thinkctl.stats import wilson_interval
from thinkctl.tasks.base import Problem

__all__ = ["LocalizationConfig", "StepLabelled", "labelled_solutions", "first_flagged_step", "localization_figures",
           "evaluate_step_scorers", "RANDOM_EVALUATOR"]

logger = logging.getLogger(__name__)

#: Name of the chance reference (uniform random step scores).
RANDOM_EVALUATOR = "random"


@dataclass(frozen=True)
class LocalizationConfig:
    """Settings of :func:`evaluate_step_scorers`.

    Attributes
    ----------
    threshold : float or None, default=None
        Fixed threshold below which a step is flagged. ``None``: chosen by two-fold cross-fitting over problems.
    n_thresholds : int, default=101
        Candidate thresholds when cross-fitting: quantiles of the training half's step scores.
    n_bootstrap : int, default=1000
        Bootstrap resamples of the AUROC intervals.
    seed : int, default=0
        Seed of the cross-fitting split, the bootstrap and the random reference.
    """

    threshold: float | None = None
    n_thresholds: int = 101
    n_bootstrap: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise ValueError(f"threshold={self.threshold!r} must be a finite number or None (cross-fitted)")
        if self.n_thresholds < 2:
            raise ValueError(f"n_thresholds={self.n_thresholds} must be at least 2")
        if self.n_bootstrap < 1:
            raise ValueError(f"n_bootstrap={self.n_bootstrap} must be a positive integer")


@dataclass(frozen=True)
class StepLabelled:
    """One step-labelled solution: its steps, the human label and the evaluators' step scores.

    ``problem_id`` groups solutions of one problem (the question text when the file records it: several solutions
    of one question are not independent), for the cross-fitting split and the bootstrap.
    """

    problem_id: str
    prompt: str
    steps: tuple[str, ...]
    first_error_step: int | None
    answer_correct: bool | None
    process_correct: bool | None
    scores: Mapping[str, np.ndarray]


def labelled_solutions(rows: Sequence[Mapping[str, Any]]) -> list[StepLabelled]:
    """The solutions of a steps file's sample rows (``read_steps(path).rows``) with their recorded step scores."""
    out = []
    for r in rows:
        names = r["checkpoints"][0]["confidence"].keys() if r["checkpoints"] else ()
        scores = {name: np.array([ck["confidence"][name] for ck in r["checkpoints"]], dtype=np.float64)
                  for name in names}
        prompt = r.get("prompt") or ""
        out.append(StepLabelled(problem_id=prompt or str(r["problem_id"]), prompt=prompt,
                                steps=tuple(r["steps"]), first_error_step=r["first_error_step"],
                                answer_correct=r.get("correct"), process_correct=r.get("process_correct"),
                                scores=scores))
    return out


def first_flagged_step(step_scores: np.ndarray, threshold: float) -> int | None:
    """Index of the first step scored below ``threshold``, or None when no step is."""
    below = np.flatnonzero(np.asarray(step_scores) < threshold)
    return int(below[0]) if below.size else None


def _wilson(k: int, n: int) -> list[float] | None:
    if n == 0:
        return None
    return list(wilson_interval(k, n))


def localization_figures(first_errors: Sequence[int | None], predicted: Sequence[int | None]) -> dict[str, Any]:
    """ProcessBench-style figures: accuracy on erroneous and on correct solutions, their harmonic mean (F1)."""
    err = [(t, p) for t, p in zip(first_errors, predicted) if t is not None]
    ok = [p for t, p in zip(first_errors, predicted) if t is None]
    k_err = sum(t == p for t, p in err)
    k_ok = sum(p is None for p in ok)
    acc_err = k_err / len(err) if err else None
    acc_ok = k_ok / len(ok) if ok else None
    f1 = None
    if acc_err is not None and acc_ok is not None:
        f1 = 0.0 if acc_err + acc_ok == 0 else 2 * acc_err * acc_ok / (acc_err + acc_ok)
    early = sum(p is not None and p < t for t, p in err)
    return {"n_erroneous": len(err), "n_correct": len(ok),
            "accuracy_erroneous": acc_err, "accuracy_erroneous_ci95": _wilson(k_err, len(err)),
            "accuracy_correct": acc_ok, "accuracy_correct_ci95": _wilson(k_ok, len(ok)), "f1": f1,
            "flagged_too_early": early / len(err) if err else None}


def _flagged_at(sols: Sequence[StepLabelled], name: str, thresholds: np.ndarray) -> np.ndarray:
    """First flagged step of every solution at every threshold, shape (n_solutions, n_thresholds); -1 for none.

    The running minimum of a solution's step scores is non-increasing, so the steps scored at or above ``t`` before
    the first one below it are exactly those whose running minimum is ``>= t``: their count is the flagged index.
    """
    out = np.empty((len(sols), thresholds.size), dtype=np.int64)
    for i, sol in enumerate(sols):
        running_min = np.minimum.accumulate(sol.scores[name])
        count = (running_min[:, None] >= thresholds[None, :]).sum(axis=0)
        out[i] = np.where(count < running_min.size, count, -1)
    return out


def _best_threshold(sols: Sequence[StepLabelled], name: str, n_thresholds: int) -> float:
    allscores = np.concatenate([s.scores[name] for s in sols])
    cands = np.unique(np.quantile(allscores, np.linspace(0.0, 1.0, n_thresholds)))
    # a threshold just above a score flags it: also try the midpoints and one above the maximum
    cands = np.unique(np.concatenate([cands, (cands[1:] + cands[:-1]) / 2, [cands[-1] + 1e-9]]))
    flagged = _flagged_at(sols, name, cands)  # (n_solutions, n_candidates)
    truth = np.array([-1 if s.first_error_step is None else s.first_error_step for s in sols])
    err = truth >= 0
    if not err.any() or err.all():
        raise ValueError("cross-fitting the threshold needs solutions with and without an error in each half; pass "
                         "a fixed threshold instead")
    acc_err = (flagged[err] == truth[err, None]).mean(axis=0)
    acc_ok = (flagged[~err] == -1).mean(axis=0)
    f1 = np.where(acc_err + acc_ok > 0, 2 * acc_err * acc_ok / np.maximum(acc_err + acc_ok, 1e-12), 0.0)
    return float(cands[int(np.argmax(f1))])


def _localize(sols: Sequence[StepLabelled], name: str, cfg: LocalizationConfig) -> dict[str, Any]:
    if cfg.threshold is not None:
        fixed = [first_flagged_step(s.scores[name], cfg.threshold) for s in sols]
        out = localization_figures([s.first_error_step for s in sols], fixed)
        out["threshold"] = cfg.threshold
        out["threshold_rule"] = "fixed"
        return out
    problems = sorted({s.problem_id for s in sols})
    rng = np.random.default_rng(cfg.seed)
    half = set(rng.permutation(problems)[: len(problems) // 2].tolist())
    folds = [[s for s in sols if s.problem_id in half], [s for s in sols if s.problem_id not in half]]
    truth: list[int | None] = []
    pred: list[int | None] = []
    thresholds = []
    for fit, held in (folds, folds[::-1]):
        t = _best_threshold(fit, name, cfg.n_thresholds)
        thresholds.append(t)
        truth += [s.first_error_step for s in held]
        pred += [first_flagged_step(s.scores[name], t) for s in held]
    out = localization_figures(truth, pred)
    out["threshold"] = thresholds
    out["threshold_rule"] = "two-fold cross-fitted over problems (maximum F1 on one half, measured on the other)"
    return out


def _auroc(y: Sequence[int], s: Sequence[float], groups: Sequence[str], cfg: LocalizationConfig) -> dict[str, Any]:
    y_arr = np.asarray(y)
    if y_arr.size == 0 or len(set(y_arr.tolist())) < 2:
        return {"value": None, "ci95": None, "n": int(y_arr.size), "note": "one class only: AUROC undefined"}
    r = auroc_ci(y_arr, np.asarray(s, dtype=np.float64), groups=np.asarray(groups), n_bootstrap=cfg.n_bootstrap,
                 seed=cfg.seed)
    return {"value": r["value"], "ci95": r["ci95"], "n": int(y_arr.size)}


def _step_auroc(sols: Sequence[StepLabelled], name: str, cfg: LocalizationConfig) -> dict[str, Any]:
    y: list[int] = []
    s: list[float] = []
    g: list[str] = []
    for sol in sols:
        last = len(sol.steps) - 1 if sol.first_error_step is None else sol.first_error_step
        for k in range(last + 1):
            y.append(int(sol.first_error_step is None or k < sol.first_error_step))
            s.append(float(sol.scores[name][k]))
            g.append(sol.problem_id)
    return _auroc(y, s, g, cfg)


def _selection(sols: Sequence[StepLabelled], name: str, cfg: LocalizationConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}
    groups = [s.problem_id for s in sols]
    for how in AGGREGATIONS.names():
        agg = [aggregate(s.scores[name], how) for s in sols]
        entry = {}
        for label, get in (("answer", lambda s: s.answer_correct), ("process", lambda s: s.process_correct)):
            keep = [i for i, s in enumerate(sols) if get(s) is not None]
            entry[f"auroc_{label}_correct"] = _auroc([int(bool(get(sols[i]))) for i in keep], [agg[i] for i in keep],
                                                     [groups[i] for i in keep], cfg)
        out[how] = entry
    return out


def _score_with(sols: Sequence[StepLabelled], scorer: StepScorer) -> dict[int, np.ndarray]:
    out = {}
    for i, s in enumerate(sols):
        problem = Problem(id=s.problem_id, prompt=s.prompt, answer="")
        out[i] = check_step_scores(scorer.score(problem, list(s.steps)), len(s.steps), f"step scorer {scorer.name!r}")
    return out


def evaluate_step_scorers(solutions: Sequence[StepLabelled], *, scorers: Sequence[StepScorer] = (),
                          cfg: LocalizationConfig = LocalizationConfig()) -> dict[str, Any]:
    """Step AUROC, first-error localization and outcome selection of every evaluator on labelled solutions.

    Parameters
    ----------
    solutions : sequence of StepLabelled
        From :func:`labelled_solutions`. Each recorded evaluator (a key of ``scores``) present in every solution is
        evaluated.
    scorers : sequence of StepScorer, optional
        Scorers run on the steps here (e.g. a :class:`~thinkctl.process.scoring.CallableStepScorer` around a PRM).
    cfg : LocalizationConfig

    Returns
    -------
    dict
        ``{"n_solutions", "n_problems", "n_with_error", "config", "evaluators": {name: {"step_auroc",
        "localization", "selection"}}}``; a ``random`` evaluator (uniform scores, seeded) is the chance reference.
    """
    if not solutions:
        raise ValueError("no solutions to evaluate; pass the rows of a steps file (read_steps(path).rows)")
    names = set(solutions[0].scores)
    for s in solutions[1:]:
        names &= set(s.scores)
    rng = np.random.default_rng(cfg.seed)
    extra: dict[str, list[np.ndarray]] = {RANDOM_EVALUATOR: [rng.random(len(s.steps)) for s in solutions]}
    for scorer in scorers:
        if scorer.name in names or scorer.name in extra:
            raise ValueError(f"scorer name {scorer.name!r} is already taken; give the scorer another name")
        scored = _score_with(solutions, scorer)
        extra[scorer.name] = [scored[i] for i in range(len(solutions))]
    sols = [StepLabelled(problem_id=s.problem_id, prompt=s.prompt, steps=s.steps, first_error_step=s.first_error_step,
                         answer_correct=s.answer_correct, process_correct=s.process_correct,
                         scores={**{n: s.scores[n] for n in names}, **{n: v[i] for n, v in extra.items()}})
            for i, s in enumerate(solutions)]
    evaluators: dict[str, Any] = {}
    for name in sorted(names) + list(extra):
        evaluators[name] = {"step_auroc": _step_auroc(sols, name, cfg), "localization": _localize(sols, name, cfg),
                            "selection": _selection(sols, name, cfg)}
        logger.info("%s: step AUROC %s", name, evaluators[name]["step_auroc"]["value"])
    return {"n_solutions": len(sols), "n_problems": len({s.problem_id for s in sols}),
            "n_with_error": sum(s.first_error_step is not None for s in sols),
            "config": {"threshold": cfg.threshold, "n_thresholds": cfg.n_thresholds,
                       "n_bootstrap": cfg.n_bootstrap, "seed": cfg.seed},
            "evaluators": evaluators}
