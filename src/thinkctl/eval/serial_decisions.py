"""The decisions that follow a bundle's serial route, fitted on its calibration problems: budget doubling
(:mod:`thinkctl.controller.doubling`) and escalation to a vote (:mod:`thinkctl.controller.escalation`).

Both start from the certified serial route replayed on the calibration problems' greedy traces
(:func:`~thinkctl.eval.serial_replay.split_outcomes`); doubling also runs the model (the live route's own
continuation after "Wait"). :func:`fit_bundle_serial_decisions` fits both into a routing table and saves it;
``thinkctl calibrate`` and ``thinkctl demo`` call it after :func:`~thinkctl.controller.routing.fit_bundle_routing`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from thinkctl.controller.doubling import Doubling, fit_doubling
from thinkctl.controller.escalation import Escalation, escalation_data, fit_escalation
from thinkctl.controller.routing import RoutingTable, save_bundle_routing

__all__ = ["Replayed", "replay", "DoublingData", "doubling_data", "fit_bundle_doubling", "fit_bundle_escalation",
           "fit_bundle_serial_decisions"]


@dataclass(frozen=True)
class Replayed:
    """A bundle's certified serial route replayed on one split (:func:`~thinkctl.eval.serial_replay.split_outcomes`)
    and the rows of its trace store: what both decisions are fitted on, read once."""

    rule: Any  # CertifiedStopRule
    outcomes: list[Any]  # RouteOutcome per problem of the split
    samples: list[dict[str, Any]]  # every row of the bundle's trace store
    task: str  # the task the traces were collected on


def replay(bundle_dir: str | os.PathLike[str], split: str = "calib") -> Replayed:
    """Replay the bundle's serial route on ``split`` and read its trace store's rows.

    Raises
    ------
    ValueError
        If the bundle certifies no stop rule or has lost its trace store."""
    from thinkctl.eval.serial_replay import split_outcomes
    from thinkctl.traces.store import TraceStore

    rule, outcomes = split_outcomes(bundle_dir, split)
    assert rule.trace_store is not None
    store = TraceStore(rule.trace_store)
    return Replayed(rule, outcomes, store.samples(), str(store.config["collect"]["task"]))


@dataclass
class DoublingData:
    """Per calibration problem: the end-of-thinking confidence of the serial route, whether its model ended its
    thinking itself (``eligible``: only then can it double), its correctness without and with doubling, and the
    tokens doubling adds."""

    problem_ids: list[str]
    confidence: np.ndarray
    eligible: np.ndarray
    serial_correct: np.ndarray
    doubled_correct: np.ndarray
    extra_tokens: np.ndarray


def doubling_data(bundle_dir: str | os.PathLike[str], controller: Any, *, split: str = "calib",
                  batch: int = 32, replayed: Replayed | None = None) -> DoublingData:
    """Double every problem of a bundle's ``split`` whose greedy thinking (recorded in the bundle's traces) ended by
    itself before the certified stop rule would stop it, with the live ``controller``
    (:meth:`~thinkctl.controller.serial.SerialRoute.continue_after_wait`: the very continuation the serial route
    runs), and record what it changes. ``replayed``: the bundle's :func:`replay` on ``split``, when already read.

    Raises
    ------
    ValueError
        If the bundle certifies no stop rule or has lost its trace store."""
    from thinkctl import tasks
    from thinkctl.tasks.base import Problem

    replayed = replayed if replayed is not None else replay(bundle_dir, split)
    outcomes = replayed.outcomes
    task = tasks.get(replayed.task)
    greedy = {str(r["problem_id"]): r for r in replayed.samples if r.get("greedy")}
    ok = np.array([float(bool(o.row["correct"])) for o in outcomes])
    doubled, extra = ok.copy(), np.zeros(len(outcomes))
    todo = [j for j, o in enumerate(outcomes) if o.own_end]
    for start in range(0, len(todo), batch):
        part = todo[start:start + batch]
        recs = [greedy[outcomes[j].trace.problem_id] for j in part]
        results = controller.continue_after_wait([r["prompt"] for r in recs],
                                                 [list(r["generated_ids"][:r["n_thinking"]]) for r in recs])
        for j, r, res in zip(part, recs, results):
            if res is None:  # no room to double under the cap: it keeps its answer
                continue
            problem = Problem(id=str(r["problem_id"]), prompt=str(r["prompt"]), answer=str(r["gold"]),
                              level=r.get("level"), features=dict(r.get("features") or {}))
            doubled[j] = float(task.is_correct(problem, res.text))
            extra[j] = res.generated  # the replaced ending was generated all the same: it stays counted
    return DoublingData([o.trace.problem_id for o in outcomes], np.array([o.end_confidence for o in outcomes]),
                        np.array([o.own_end for o in outcomes], dtype=bool), ok, doubled, extra)


def fit_bundle_doubling(bundle_dir: str | os.PathLike[str], controller: Any, *, replayed: Replayed | None = None
                        ) -> tuple[Doubling | None, dict[str, Any]]:
    """Fit a bundle's budget doubling on its calibration problems (:func:`doubling_data`, then
    :func:`fit_doubling`) with a live ``controller`` (the bundle's, on its model).

    Returns the doubling to keep (None when its gain test fails or no stop rule is certified) and the evidence."""
    try:
        data = doubling_data(bundle_dir, controller, replayed=replayed)
    except ValueError as exc:
        return None, {"kept": False, "reason": str(exc)}
    if not data.problem_ids:
        return None, {"kept": False, "reason": "the bundle's calibration split has no greedy traces"}
    fit = fit_doubling(data.confidence, data.eligible, data.serial_correct, data.doubled_correct, data.extra_tokens)
    evidence = dict(fit.meta)
    evidence["below"] = fit.below
    return (fit if fit.meta.get("kept") else None), evidence


def fit_bundle_escalation(bundle_dir: str | os.PathLike[str], *, token_budget_multiple: float, wave_size: int = 5,
                          draws: int = 100, seed: int = 0, replayed: Replayed | None = None
                          ) -> tuple[Escalation | None, dict[str, Any]]:
    """Fit the escalation of a calibrated bundle on its calibration problems (see :func:`fit_escalation`); the
    token budget is ``token_budget_multiple`` times the mean tokens of one greedy answer to the end on them.

    Returns the escalation to keep (None when none passes its gain test, or the bundle certifies no stop rule) and
    the evidence for the routing table's ``meta``."""
    try:
        replayed = replayed if replayed is not None else replay(bundle_dir)
    except ValueError as exc:
        return None, {"kept": False, "reason": str(exc)}
    outcomes = replayed.outcomes
    if not outcomes:
        return None, {"kept": False, "reason": "the bundle's calibration split has no greedy traces"}
    greedy_tokens = float(np.mean([o.trace.n_prompt + o.trace.n_generated for o in outcomes]))
    try:
        data = escalation_data([o.row for o in outcomes], {o.trace.problem_id: o.end_confidence for o in outcomes},
                               replayed.samples, wave_size=wave_size, draws=draws, seed=seed)
    except ValueError as exc:  # too few recorded samples to estimate any vote
        return None, {"kept": False, "reason": str(exc)}
    esc = fit_escalation(data, token_budget=token_budget_multiple * greedy_tokens, seed=seed)
    evidence = dict(esc.meta) if esc is not None else {"kept": False, "reason": "no escalation fits the budget"}
    evidence.update({"greedy_tokens": greedy_tokens, "token_budget_multiple": token_budget_multiple})
    if esc is not None:
        evidence.update({"below": esc.below, "samples": esc.samples})
    return (esc if esc is not None and esc.meta.get("kept") else None), evidence


def fit_bundle_serial_decisions(bundle_dir: str | os.PathLike[str], table: RoutingTable, *, model: Any = None,
                                tokenizer: Any = None, config: Any = None, token_budget_multiple: float = 3.0,
                                seed: int = 0) -> RoutingTable:
    """Fit the serial route's budget doubling (with the ``model`` and its ``tokenizer``; without them it is not
    fitted, and ``meta["doubling"]`` says so) and the escalation of doubtful serial answers to a vote into a
    bundle's routing ``table`` (from :func:`~thinkctl.controller.routing.fit_bundle_routing`), and save it.

    Both are fitted only when the bundle certifies a stop rule and every routing bin takes the serial route (they
    follow the serial route); each is kept only when its gain passes the held-out test of
    :func:`~thinkctl.controller.escalation.select_and_test`. Returns the table."""
    from thinkctl.controller.config import ControllerConfig

    if not all(r.kind == "serial" for r in table.routes):
        reason = {"kept": False, "reason": "some routing bin does not take the serial route"}
        table.meta["doubling"], table.meta["escalation"] = dict(reason), dict(reason)
        save_bundle_routing(bundle_dir, table)
        return table
    cfg = config if config is not None else ControllerConfig()
    try:
        replayed = replay(bundle_dir)  # read once: both decisions are fitted on it
    except ValueError as exc:
        reason = {"kept": False, "reason": str(exc)}
        table.meta["doubling"], table.meta["escalation"] = dict(reason), dict(reason)
        save_bundle_routing(bundle_dir, table)
        return table
    if model is not None and tokenizer is not None:
        from thinkctl import tasks
        from thinkctl.controller.core import AdaptiveController

        controller = AdaptiveController.load(bundle_dir, model, tokenizer, cfg, task=tasks.get(replayed.task),
                                             doubling=None)
        table.doubling, table.meta["doubling"] = fit_bundle_doubling(bundle_dir, controller, replayed=replayed)
    else:
        table.meta["doubling"] = {"kept": False, "reason": "not fitted: it needs the model (calibrate with the "
                                                           "model the bundle was trained on)"}
    table.escalation, table.meta["escalation"] = fit_bundle_escalation(
        bundle_dir, token_budget_multiple=token_budget_multiple, wave_size=cfg.wave_size, seed=seed,
        replayed=replayed)
    save_bundle_routing(bundle_dir, table)
    return table
