"""Compute-optimal routing fitted from traces: which route answers a query of a given difficulty best per token.

Snell et al. (2024, "Scaling LLM Test-Time Compute Optimally can be More Effective than Scaling Model Parameters",
arXiv:2408.03314) choose, per difficulty bin, the test-time strategy that maximises accuracy at a compute budget. The
:class:`RoutingTable` is that choice for thinkctl's routes:

* ``easy``: one greedy answer whose thinking is capped at the easy budget (forced answer);
* ``serial``: one greedy answer, thinking to the token cap (with confidence-probed early stopping);
* ``parallel@k``: up to ``k`` samples and a majority vote.

:func:`fit_routing_table` estimates each route's accuracy and tokens per problem from recorded traces (the greedy
sample, its forced answers at checkpoints, the sampled answers), bins the problems by calibrated difficulty
(quantiles of P(one sample solves)), and picks per bin the route that maximises mean accuracy subject to a mean
token budget -- a Lagrangian sweep over the price of a token, the feasible point with the best accuracy.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from thinkctl.controller.doubling import Doubling
from thinkctl.controller.escalation import Escalation
from thinkctl.persistence import check_finite, read_json, write_text_atomic
from thinkctl.bundle import (CALIBRATION_DIR, DIFFICULTY_CALIBRATOR, DIFFICULTY_PROBE, RISK_CONTROL, ROUTING,
                             BundleLayout, fingerprint)

__all__ = ["Route", "RoutingTable", "RouteEstimates", "estimate_routes", "fit_routing_table", "fit_bundle_routing",
           "routing_summary", "decision_line", "save_bundle_routing"]

ROUTE_KINDS = ("easy", "serial", "parallel")


@dataclass(frozen=True)
class Route:
    """A route: ``kind`` in ``("easy", "serial", "parallel")`` and, for parallel, the most samples."""

    kind: str
    samples: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ROUTE_KINDS:
            raise ValueError(f"route kind {self.kind!r} is not one of {ROUTE_KINDS}")
        if self.kind == "parallel" and (self.samples is None or self.samples < 1):
            raise ValueError("a parallel route needs samples >= 1")

    @property
    def name(self) -> str:
        return f"parallel@{self.samples}" if self.kind == "parallel" else self.kind

    @classmethod
    def parse(cls, name: str) -> "Route":
        kind, _, k = name.partition("@")
        return cls(kind, int(k) if k else None)


@dataclass
class RoutingTable:
    """Difficulty bins (upper edges on P(solve), increasing) and the route of each bin.

    ``edges`` has one entry fewer than ``routes``: a query with P(solve) < edges[0] takes routes[0], and so on;
    P(solve) >= edges[-1] takes routes[-1]. ``estimates`` keeps the fitted per-bin accuracy and tokens of every
    candidate route (for reports), ``meta`` how the table was fitted. ``escalation`` (optional) sends a serial answer
    whose confidence is low on to a vote (:mod:`thinkctl.controller.escalation`), ``doubling`` (optional) the serial
    route's budget doubling (:mod:`thinkctl.controller.doubling`).
    """

    edges: list[float]
    routes: list[Route]
    estimates: list[dict[str, dict[str, float]]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    escalation: Escalation | None = None
    doubling: Doubling | None = None

    def __post_init__(self) -> None:
        if len(self.routes) != len(self.edges) + 1:
            raise ValueError(f"a routing table needs len(routes) == len(edges) + 1, got {len(self.routes)} routes "
                             f"and {len(self.edges)} edges")
        if any(b < a for a, b in zip(self.edges, self.edges[1:])):
            raise ValueError(f"routing edges must be increasing, got {self.edges}")

    def route(self, p_solve: float) -> Route:
        """The route for a query whose calibrated P(one sample solves it) is ``p_solve``."""
        return self.routes[int(np.searchsorted(self.edges, p_solve, side="right"))]

    def save(self, path: str | os.PathLike[str]) -> None:
        doc = {"kind": "thinkctl-routing-table", "edges": self.edges, "routes": [r.name for r in self.routes],
               "estimates": self.estimates, "meta": self.meta,
               "escalation": self.escalation.to_dict() if self.escalation is not None else None,
               "doubling": self.doubling.to_dict() if self.doubling is not None else None}
        write_text_atomic(path, json.dumps(doc, indent=2))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "RoutingTable":
        hint = "fit it again with `thinkctl calibrate` on its bundle"
        doc = read_json(path, hint, allow_nan=True)  # per-route estimates may be NaN where a route was never seen
        if not isinstance(doc, dict) or doc.get("kind") != "thinkctl-routing-table":
            raise ValueError(f"{path} is not a thinkctl routing table (kind={doc.get('kind')!r})")
        check_finite(doc.get("edges"), str(path), hint)
        esc, dbl = doc.get("escalation"), doc.get("doubling")
        return cls([float(e) for e in doc["edges"]], [Route.parse(r) for r in doc["routes"]],
                   doc.get("estimates", []), doc.get("meta", {}),
                   Escalation.from_dict(esc, str(path)) if esc is not None else None,
                   Doubling.from_dict(dbl, str(path)) if dbl is not None else None)


@dataclass
class RouteEstimates:
    """Per problem (rows) and candidate route (columns): estimated accuracy and tokens."""

    problem_ids: list[str]
    p_solve: np.ndarray
    candidates: list[Route]
    accuracy: np.ndarray  # (n_problems, n_candidates)
    tokens: np.ndarray  # (n_problems, n_candidates)


def _vote_accuracy(answers: Sequence[Any], correct: Sequence[bool], k: int, rng: np.random.Generator,
                   draws: int) -> float:
    """P(the plurality of k samples drawn with replacement from the recorded ones is right); ties go to the
    answer seen first, as in :class:`~thinkctl.voting.VoteTally`."""
    n = len(answers)
    right = {a for a, c in zip(answers, correct) if c and a is not None}
    hits = 0
    for _ in range(draws):
        idx = rng.integers(0, n, size=k)
        counts: dict[Any, int] = {}
        for i in idx:
            a = answers[i]
            if a is not None:
                counts[a] = counts.get(a, 0) + 1
        if counts:
            best = max(counts.values())
            leader = next(answers[i] for i in idx if answers[i] is not None and counts[answers[i]] == best)
            hits += leader in right
    return hits / draws


def estimate_routes(samples: Sequence[dict[str, Any]], p_solve: dict[str, float], *, easy_thinking: int | None,
                    serial_thinking: int, parallel: Sequence[int] = (4, 8, 16), draws: int = 200,
                    seed: int = 0) -> RouteEstimates:
    """Accuracy and tokens of each candidate route per problem, from trace rows (see :class:`TraceStore`).

    A problem needs its greedy row (``greedy: True``, the first sample of ``thinkctl collect``); its sampled rows
    estimate the vote. ``easy_thinking`` / ``serial_thinking`` are the thinking caps of the two serial routes: past
    the cap the answer forced at the last checkpoint within it counts; ``easy_thinking=None`` leaves the easy route
    out of the candidates.
    """
    by_problem: dict[str, list[dict[str, Any]]] = {}
    for row in samples:
        if row["problem_id"] in p_solve:
            by_problem.setdefault(row["problem_id"], []).append(row)
    caps = [cap for cap in (easy_thinking, serial_thinking) if cap is not None]
    candidates = ([Route("easy")] if easy_thinking is not None else []) + [Route("serial")] + \
        [Route("parallel", k) for k in parallel]
    rng = np.random.default_rng(seed)
    ids, acc, tok = [], [], []
    for pid in sorted(by_problem):
        rows = by_problem[pid]
        greedy = next((r for r in rows if r.get("greedy")), None)
        sampled = [r for r in rows if not r.get("greedy")]
        if greedy is None or not sampled:
            continue
        prompt = greedy["n_prompt_tokens"]
        a_row, t_row = [], []
        for cap in caps:
            overhead = greedy["n_generated"] - greedy["n_thinking"]
            if greedy["n_thinking"] <= cap:
                a_row.append(float(greedy["correct"]))
                t_row.append(prompt + greedy["n_generated"])
            else:
                within = [c for c in greedy["checkpoints"] if c["position"] <= cap]
                a_row.append(float(within[-1]["forced_correct"]) if within else 0.0)
                t_row.append(prompt + cap + overhead)
        answers = [r["answer"] for r in sampled]
        correct = [bool(r["correct"]) for r in sampled]
        mean_gen = float(np.mean([r["n_generated"] for r in sampled]))
        for k in parallel:
            a_row.append(_vote_accuracy(answers, correct, k, rng, draws))
            t_row.append(prompt + k * (1 + mean_gen))
        ids.append(pid)
        acc.append(a_row)
        tok.append(t_row)
    if not ids:
        raise ValueError("no problem has both a greedy and a sampled trace; collect with --samples >= 2 "
                         "(the first sample of each problem is greedy)")
    return RouteEstimates(ids, np.array([p_solve[i] for i in ids]), candidates, np.asarray(acc), np.asarray(tok))


def fit_routing_table(est: RouteEstimates, *, token_budget: float, n_bins: int = 5, confidence: float = 0.95,
                      n_boot: int = 1000, seed: int = 0) -> RoutingTable:
    """Per difficulty bin, the route that maximises mean accuracy with mean tokens at most ``token_budget``.

    Bins are quantiles of P(solve) over the problems. In each bin a route dearer than the bin's cheapest is a
    candidate only when its accuracy gain over the cheapest is supported by the data: the one-sided ``confidence``
    lower bound of the mean paired gain (bootstrap over the bin's problems) is above zero. A calibration split has a
    few dozen problems per bin; without this test the fit chases noise, buying extra samples for gains that do not
    replicate on new problems. A sweep over the price of a token ``lam`` then gives, per bin, the supported route
    maximising ``accuracy - lam * tokens``; the table kept is the feasible one (mean tokens within the budget) with
    the best mean accuracy (ties: fewer tokens). When even the cheapest table exceeds the budget, the cheapest is
    kept and ``meta["feasible"]`` is False. ``meta["supported"]`` lists the candidates that passed, per bin;
    ``meta["bin_sizes"]`` the problems each bin's decision rests on, and ``meta["gain_lower_bounds"]`` each dearer
    candidate's lower confidence bound on its accuracy gain over the bin's cheapest route (what the data can tell:
    a gain is only seen when this bound is above 0).
    """
    if token_budget <= 0:
        raise ValueError(f"token_budget={token_budget} must be positive (mean tokens per query)")
    n = len(est.problem_ids)
    n_bins = max(1, min(n_bins, n // 8 or 1))
    qs = np.quantile(est.p_solve, np.linspace(0, 1, n_bins + 1)[1:-1]) if n_bins > 1 else np.array([])
    edges = sorted(set(float(q) for q in qs))
    bins = np.searchsorted(edges, est.p_solve, side="right")
    n_b = len(edges) + 1
    acc = np.array([est.accuracy[bins == b].mean(0) if (bins == b).any() else np.zeros(len(est.candidates))
                    for b in range(n_b)])
    tok = np.array([est.tokens[bins == b].mean(0) if (bins == b).any() else np.zeros(len(est.candidates))
                    for b in range(n_b)])
    weight = np.array([(bins == b).mean() for b in range(n_b)])
    rng = np.random.default_rng(seed)
    supported = np.zeros_like(acc, dtype=bool)
    lower: list[dict[str, float]] = []  # per bin: each dearer candidate's lower confidence bound on its gain
    for b in range(n_b):
        rows = np.flatnonzero(bins == b)
        lower.append({})
        if rows.size == 0:
            supported[b, int(np.argmin(tok[b]))] = True
            continue
        base = int(np.argmin(tok[b]))
        supported[b, base] = True
        idx = rng.integers(0, rows.size, size=(n_boot, rows.size))
        for j in range(len(est.candidates)):
            if j == base:
                continue
            gain = est.accuracy[rows, j] - est.accuracy[rows, base]
            bound = float(np.quantile(gain[idx].mean(1), 1 - confidence))
            lower[b][est.candidates[j].name] = bound
            supported[b, j] = bool(bound > 0)
    acc_eff = np.where(supported, acc, -np.inf)
    best: tuple[float, float, np.ndarray] | None = None
    cheapest: tuple[float, float, np.ndarray] | None = None
    for lam in np.concatenate([[0.0], np.geomspace(1e-7, 1.0, 400)]):
        choice = np.argmax(acc_eff - lam * tok, axis=1)
        a = float((weight * acc[np.arange(n_b), choice]).sum())
        t = float((weight * tok[np.arange(n_b), choice]).sum())
        if cheapest is None or t < cheapest[1]:
            cheapest = (a, t, choice)
        if t <= token_budget and (best is None or a > best[0] + 1e-12 or (abs(a - best[0]) <= 1e-12 and t < best[1])):
            best = (a, t, choice)
    feasible = best is not None
    a, t, choice = best if best is not None else cheapest  # type: ignore[misc]
    estimates = [{c.name: {"accuracy": float(acc[b, j]), "tokens": float(tok[b, j])}
                  for j, c in enumerate(est.candidates)} for b in range(n_b)]
    meta = {"token_budget": float(token_budget), "n_problems": n, "bin_weights": weight.tolist(),
            "expected_accuracy": a, "expected_tokens": t, "feasible": feasible,
            "candidates": [c.name for c in est.candidates], "gain_confidence": confidence,
            "bin_sizes": [int((bins == b).sum()) for b in range(n_b)], "gain_lower_bounds": lower,
            "supported": [[c.name for j, c in enumerate(est.candidates) if supported[b, j]] for b in range(n_b)]}
    return RoutingTable(edges, [est.candidates[j] for j in choice], estimates, meta)


def decision_line(name: str, ev: dict[str, Any]) -> str:
    """One line on a fitted decision that follows the serial route (``meta["doubling"]`` or
    ``meta["escalation"]`` of a routing table): used or not, the evidence, and what it could have detected."""
    if "gain" not in ev:
        return f"{name}: not used ({ev.get('reason', 'not fitted')})"
    what = f" to a vote of up to {ev['samples']} samples" if "samples" in ev else ""
    head = (f"used{what} below confidence {ev['below']:.3f}" if ev.get("kept") else
            f"not used (its best candidate{what}, below confidence {ev['below']:.3f}, does not pass)")
    return (f"{name}: {head}; chosen on {ev['n_choose']} calib problems, tested on {ev['n_test']} others: "
            f"accuracy gain {ev['gain_on_test_half']:+.3f}, lower 95 % bound {ev['gain_lower_bound']:+.3f} "
            f"(used only above 0; {ev['n_test']} problems detect a gain of {ev['detectable_gain']:.3f} 4 times in 5)")


def routing_summary(table: RoutingTable) -> list[dict[str, Any]]:
    """One row per bin: its P(solve) range and route (for reports and notebooks)."""
    lo = [0.0] + table.edges
    hi = table.edges + [1.0]
    return [{"p_solve": [a, b], "route": r.name} for a, b, r in zip(lo, hi, table.routes)]


def fit_bundle_routing(bundle_dir: str | os.PathLike[str], *, config: Any = None, token_budget_multiple: float = 3.0,
                       n_bins: int = 5, seed: int = 0, tokenizer: Any = None) -> RoutingTable:
    """Calibrate a bundle's difficulty probe and fit its routing table on the bundle's calibration problems.

    The difficulty probe's logits on the prompt states are Platt-scaled against whether each sample solved its
    problem (``calibration/difficulty.json``); the routes' accuracy and tokens come from the bundle's traces
    (:func:`estimate_routes`); the token budget is ``token_budget_multiple`` times the mean tokens of one greedy
    answer on those problems. With the model's ``tokenizer`` the routes' thinking caps are exactly the controller's
    (cap minus the forced answer marker, ``max_answer_tokens`` and EOS); without it the marker is taken as 7 tokens
    (the embedded model's). The easy route (a blunt thinking cap) is a candidate only when the bundle certifies no
    stop rule: the certified serial route already stops early, with a bound on what that loses.

    The decisions that follow the serial route (budget doubling, escalation to a vote) are fitted into the table
    afterwards by :func:`thinkctl.eval.serial_decisions.fit_bundle_serial_decisions`.
    Writes ``routing.json`` into the bundle and returns the table.
    """
    from thinkctl.calibration.bundle import RISK_CONTROL_KIND
    from thinkctl.calibration.calibrators import make_calibrator
    from thinkctl.controller.config import ControllerConfig
    from thinkctl.predictors.probe import HiddenStateProbe
    from thinkctl.traces.store import TraceStore

    cfg = config if config is not None else ControllerConfig()
    if token_budget_multiple <= 0:
        raise ValueError(f"token_budget_multiple={token_budget_multiple} must be positive")
    layout = BundleLayout(bundle_dir)
    meta = layout.read_manifest()
    if not layout.path(DIFFICULTY_PROBE).is_dir():
        raise FileNotFoundError(f"{layout.root} has no {DIFFICULTY_PROBE}; `thinkctl train` writes one when the "
                                "traces hold prompt states")
    store = TraceStore(layout.trace_store_path(meta))
    probe = HiddenStateProbe.load(layout.path(DIFFICULTY_PROBE))
    layer = int(probe.layer) if probe.layer is not None else int(meta["confidence_layer"])
    sa = store.sample_arrays(layer)
    calib = set(meta["split"]["calib"])
    mask = np.array([g in calib for g in sa.groups])
    if mask.sum() < 8:
        raise ValueError(f"the bundle's calibration split has {int(mask.sum())} samples; routing needs more "
                         "(collect more problems)")
    logits = probe.decision_function(sa.X)
    cal = make_calibrator("platt").fit(logits[mask], sa.y[mask].astype(int))
    layout.path(CALIBRATION_DIR).mkdir(exist_ok=True)
    cal.save(layout.path(DIFFICULTY_CALIBRATOR), metadata={"model": meta["model"]["name"], "layer": layer})
    p = cal.predict_proba(logits)
    p_solve: dict[str, float] = {}
    for g, v in zip(sa.groups[mask], p[mask]):
        p_solve.setdefault(str(g), float(v))
    marker = 7
    if tokenizer is not None:
        from thinkctl.generation import reasoning_format

        marker = len(reasoning_format(tokenizer).force_answer_ids)
    # with a certified stop rule the serial route already ends thinking early, under a guarantee; the easy route's
    # blunt cap would only add losses that nothing bounds (on the embedded model it cut long modeq searches that the
    # serial route answers), so it is a candidate only when no stop rule was certified
    certified = (layout.has(RISK_CONTROL)
                 and layout.read_document(RISK_CONTROL, RISK_CONTROL_KIND).get("threshold") is not None)
    easy = None if certified else max(1, cfg.thinking_cap(cfg.easy_cap, marker))
    est = estimate_routes(store.samples(), p_solve, easy_thinking=easy,
                          serial_thinking=max(1, cfg.thinking_cap(cfg.token_cap, marker)), seed=seed)
    serial = est.tokens[:, [c.name for c in est.candidates].index("serial")].mean()
    table = fit_routing_table(est, token_budget=token_budget_multiple * float(serial), n_bins=n_bins)
    table.meta.update({"token_budget_multiple": token_budget_multiple, "difficulty_layer": layer,
                       "fitted_on": "calib split", "trace_temperature": store.config["collect"].get("temperature")})
    save_bundle_routing(bundle_dir, table)
    return table


def save_bundle_routing(bundle_dir: str | os.PathLike[str], table: RoutingTable) -> None:
    """Write a bundle's ``routing.json`` and record in its manifest the difficulty probe it was made for."""
    layout = BundleLayout(bundle_dir)
    meta = layout.read_manifest()
    table.save(layout.path(ROUTING))
    meta["routing_made_for"] = {DIFFICULTY_PROBE: fingerprint(layout.path(DIFFICULTY_PROBE))}
    layout.write_manifest(meta)
