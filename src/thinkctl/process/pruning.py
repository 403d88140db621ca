"""Pruning sampled branches at a process-score threshold certified by Learn-then-Test.

The rule (``prune@N``; :func:`thinkctl.process.search.step_search` with ``method="prune"``): N independent samples
are generated step by step, and a sample is abandoned at the first step where its aggregated step score falls below
a threshold λ; its remaining steps and its answer are never generated. A problem's last live sample is never
abandoned, so every problem gets an answer. The surviving samples vote, weighted by their scores.

**The risk controlled** is the one pruning takes: abandoning a branch that would have ended right. Per problem,
the loss at λ is the share of its right-ending samples that λ prunes (0 when none ends right); problems are the
unit drawn independently, so the losses are bounded in [0, 1] and independent across problems, and Learn-then-Test
(Angelopoulos et al. 2021, arXiv:2110.01052) certifies λ with Hoeffding-Bentkus p-values, testing from λ = 0
(never prune) upwards, a fixed sequence:

    with probability at least 1 - delta over the calibration problems, the expected share of a problem's
    right-ending samples that the rule prunes is at most epsilon.

The calibration data are the same search run with nothing pruned (``prune_below=None``), which records every
sample's aggregated score after every step and its final answer. Because the samples are independent, a sample's
steps do not depend on which other samples are pruned, so the rule run live prunes exactly the samples whose
recorded scores dip below λ (fewer, when the last-live-sample exception applies): the certificate covers the rule
as it runs. It holds for problems drawn like the calibration problems, with the same scorer and aggregation.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from thinkctl.calibration.risk_control import learn_then_test, min_calibration_size
from thinkctl.persistence import installed_version
from thinkctl.process.scoring import AGGREGATIONS

__all__ = ["PruneRule", "BranchRecord", "pruning_losses", "certify_pruning", "branches_of_trace",
           "DEFAULT_PRUNE_THRESHOLDS", "PRUNE_RULE_FORMAT"]

#: Candidate thresholds tested by default: 0 (never prune a score in [0, 1]) to 1 in steps of 0.01.
DEFAULT_PRUNE_THRESHOLDS: tuple[float, ...] = tuple(round(0.01 * i, 2) for i in range(101))
#: The ``format`` stamp of a saved rule.
PRUNE_RULE_FORMAT = "thinkctl.prune_rule"


@dataclass(frozen=True)
class BranchRecord:
    """One sample of an unpruned calibration search: its aggregated score after each step, whether it ended right,
    and (optionally) its generated tokens after each step."""

    scores: tuple[float, ...]
    correct: bool
    lengths: tuple[int, ...] = ()

    def first_below(self, threshold: float) -> int | None:
        """The step (0-based) at which ``threshold`` prunes this sample, or None."""
        for t, s in enumerate(self.scores):
            if not s >= threshold:
                return t
        return None


def branches_of_trace(trace: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The per-sample records (``scores``, ``answer``, ``pruned``) of a ``prune@N`` result's decision trace."""
    for event in trace:
        if event.get("event") == "search" and event.get("method") == "prune":
            return list(event.get("branches", []))
    raise ValueError("this decision trace holds no pruned-sampling search (a result of prune@N, recorded with its "
                     "trace)")


def _lowest(b: BranchRecord) -> float:
    """The lowest score of a sample (a NaN score counts as below every threshold; no step: never pruned)."""
    if not b.scores:
        return math.inf
    sc = np.asarray(b.scores, dtype=np.float64)
    return float(np.where(np.isnan(sc), -math.inf, sc).min())


def pruning_losses(problems: Sequence[Sequence[BranchRecord]],
                   thresholds: Sequence[float] | NDArray[np.float64]) -> NDArray[np.float64]:
    """Loss matrix (n_problems, n_thresholds): per problem, the share of its right-ending samples whose score
    dips below each threshold (0 for a problem with no right-ending sample)."""
    lam = np.asarray(thresholds, dtype=np.float64)
    out = np.zeros((len(problems), lam.size))
    for i, branches in enumerate(problems):
        right = [b for b in branches if b.correct]
        if not right:
            continue
        out[i] = (np.array([_lowest(b) for b in right])[:, None] < lam[None, :]).mean(axis=0)
    return out


def _pruning_effect(problems: Sequence[Sequence[BranchRecord]], threshold: float) -> dict[str, Any]:
    """What ``threshold`` does on recorded samples (ignoring the last-live-sample exception): the share of samples
    pruned, and of their step tokens saved (when the records carry their lengths)."""
    branches = [b for bs in problems for b in bs]
    cut = [b.first_below(threshold) for b in branches]
    out: dict[str, Any] = {"samples_pruned": float(np.mean([c is not None for c in cut]))}
    if all(len(b.lengths) == len(b.scores) and b.lengths for b in branches):
        total = sum(b.lengths[-1] for b in branches)
        saved = sum(b.lengths[-1] - b.lengths[c] for b, c in zip(branches, cut) if c is not None)
        out["step_tokens_saved"] = float(saved / total) if total else 0.0
    return out


@dataclass(frozen=True)
class PruneRule:
    """A certified pruning threshold and what it rests on; JSON via :meth:`save` / :meth:`load`.

    ``threshold`` is None when no threshold could be certified (then ``reason`` says why and ``prune@N`` prunes
    nothing). ``scorer`` and ``aggregation`` are those the threshold was certified for; ``n_branches`` the samples
    per calibration problem; ``model`` the model's stamp (:func:`thinkctl.models.model_stamp`); ``calibration``
    what the calibration problems showed at the chosen threshold.
    """

    threshold: float | None
    epsilon: float
    delta: float
    n_problems: int
    scorer: str
    aggregation: str
    n_branches: int
    reason: str | None = None
    task: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    ltt: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"format": PRUNE_RULE_FORMAT, "thinkctl_version": installed_version(), **asdict(self)}

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the rule as JSON atomically (temporary file, then rename)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n", encoding="utf-8")
        os.replace(tmp, p)
        return p

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "dict") -> "PruneRule":
        if not isinstance(d, Mapping) or d.get("format") != PRUNE_RULE_FORMAT:
            raise ValueError(f"{source} is not a thinkctl pruning rule (missing 'format': {PRUNE_RULE_FORMAT!r}); "
                             "write one with `thinkctl calibrate-pruning`")
        try:
            threshold = None if d["threshold"] is None else float(d["threshold"])
            rule = cls(threshold=threshold, epsilon=float(d["epsilon"]), delta=float(d["delta"]),
                       n_problems=int(d["n_problems"]), scorer=str(d["scorer"]), aggregation=str(d["aggregation"]),
                       n_branches=int(d["n_branches"]), reason=d.get("reason"), task=d.get("task"),
                       model=dict(d.get("model") or {}), calibration=dict(d.get("calibration") or {}),
                       ltt=dict(d.get("ltt") or {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{source} is a damaged pruning rule ({exc!r}); write it again with "
                             "`thinkctl calibrate-pruning`") from exc
        if rule.threshold is not None and not math.isfinite(rule.threshold):
            raise ValueError(f"{source}: threshold {rule.threshold} is not finite; write the rule again")
        AGGREGATIONS.get(rule.aggregation)
        return rule

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "PruneRule":
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"no pruning rule at {str(p)!r}; write one with `thinkctl calibrate-pruning`")
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{str(p)!r} is not a readable JSON pruning rule ({exc}); write it again with "
                             "`thinkctl calibrate-pruning`") from exc
        return cls.from_dict(doc, source=repr(str(p)))


def certify_pruning(problems: Sequence[Sequence[BranchRecord]], *, epsilon: float, delta: float, scorer: str,
                    aggregation: str, thresholds: Sequence[float] = DEFAULT_PRUNE_THRESHOLDS,
                    task: str | None = None, model: Mapping[str, Any] | None = None) -> PruneRule:
    """Certify the least conservative pruning threshold (see the module docstring) on calibration problems.

    Parameters
    ----------
    problems : sequence of sequences of BranchRecord
        Per calibration problem, its samples from an unpruned search.
    epsilon, delta : float
        Target risk (expected share of right-ending samples pruned) and failure probability.
    scorer, aggregation : str
        What produced the scores (recorded; the rule is valid only for them).
    thresholds : sequence of float
        Candidates, fixed before seeing the data; tested from the smallest (least pruning) up.
    """
    if not problems:
        raise ValueError("no calibration problems; run the unpruned search on some first")
    sizes = {len(b) for b in problems}
    if 0 in sizes:
        raise ValueError("a calibration problem has no samples; every problem needs its samples' records")
    lam = np.asarray(sorted(set(float(t) for t in thresholds)), dtype=np.float64)
    losses = pruning_losses(problems, lam)
    res = learn_then_test(None, losses, lam, epsilon, delta, method="hoeffding-bentkus",
                          higher_is_conservative=False)
    n_right = np.array([sum(b.correct for b in bs) for bs in problems])
    calib: dict[str, Any] = {"problems_with_right_sample": int((n_right > 0).sum()),
                             "samples": int(sum(len(b) for b in problems)),
                             "right_samples": int(n_right.sum()), "min_problems": min_calibration_size(epsilon, delta)}
    if res.chosen is not None:
        j = int(np.flatnonzero(lam == res.chosen)[0])
        calib.update(risk=float(losses[:, j].mean()), problems_losing_a_right_sample=float(np.mean(losses[:, j] > 0)),
                     **_pruning_effect(problems, res.chosen))
    failed = res.thresholds[len(res.valid_thresholds):]
    if failed.size:  # the first threshold that failed its test: how close the next step of pruning came
        k = len(res.valid_thresholds)
        calib.update(first_rejected_threshold=float(failed[0]), first_rejected_risk=float(res.risks[k]))
    return PruneRule(threshold=res.chosen, epsilon=float(epsilon), delta=float(delta), n_problems=len(problems),
                     scorer=scorer, aggregation=aggregation, n_branches=max(sizes), reason=res.reason, task=task,
                     model=dict(model or {}), calibration=calib,
                     ltt={"thresholds": res.thresholds.tolist(), "risks": res.risks.tolist(),
                          "p_values": res.p_values.tolist(), "method": res.method})
