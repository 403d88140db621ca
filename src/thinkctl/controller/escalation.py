"""Escalation: after the serial route has answered, spend votes where its own confidence says the answer is shaky.

Routing by the prompt alone (:class:`~thinkctl.controller.routing.RoutingTable`) has to guess, before any thinking,
which queries a vote will help. The serial route knows more once it has thought: the calibrated confidence at the
end of its thinking (the state it answered from) is the probability that its answer is right. A cascade that
escalates only the answers it doubts is the classic way to buy a vote's accuracy at a fraction of its cost (the
LLM cascades of Chen et al. 2023, "FrugalGPT", arXiv:2305.05176, which pass a query on to a dearer model only when a
scorer doubts the cheap answer; here within one model):

* a query whose serial answer has calibrated confidence ``>= below`` keeps it;
* otherwise up to ``samples`` samples are drawn in waves and vote together with the serial answer (which counts as
  one vote and wins ties), stopped as soon as the vote is settled (:class:`~thinkctl.voting.MajorityStabilityStopping`).

:func:`fit_escalation` picks ``below`` and ``samples`` on calibration problems from what the bundle's traces record:
the serial route replayed on each problem's greedy trace (its answer, tokens and end-of-thinking confidence, exactly
as the live controller would produce them) and votes simulated from the problem's recorded samples. It chooses
on half the problems and keeps the choice only when the one-sided lower confidence bound of its accuracy gain over
the serial route, on the other half, is above zero (:func:`select_and_test`); ``meta`` says how many problems the
decision rests on and the smallest gain they could have detected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from thinkctl.voting import MajorityStabilityStopping, VoteTally

__all__ = ["Escalation", "EscalationData", "escalation_data", "fit_escalation", "detectable_gain", "select_and_test",
           "simulate_vote", "candidate_thresholds"]

#: Vote sizes an escalation may take (samples drawn besides the serial answer), the controller's parallel routes.
ESCALATION_SAMPLES = (4, 8, 16)
#: Candidate thresholds: these quantiles of the calibration problems' end-of-thinking confidence (escalating the
#: least confident 5 %, 10 %, ... 100 % of queries).
ESCALATION_QUANTILES = tuple(round(q, 2) for q in np.arange(0.05, 1.0001, 0.05))
#: Among the escalations within the budget, the cheapest whose estimated accuracy is within this of the best: a
#: difference this small is far below what a calibration split can resolve, and not worth the tokens.
ACCURACY_TOLERANCE = 0.0025


@dataclass(frozen=True)
class Escalation:
    """Escalate a serial answer whose calibrated confidence is below ``below`` to a vote of up to ``samples``
    samples plus the serial answer. ``meta`` records the evidence it was fitted on."""

    below: float
    samples: int
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not (isinstance(self.below, (int, float)) and 0.0 <= float(self.below) <= 1.0 + 1e-9):
            raise ValueError(f"escalation threshold below={self.below!r} must be a probability in [0, 1]")
        if not isinstance(self.samples, int) or isinstance(self.samples, bool) or self.samples < 1:
            raise ValueError(f"escalation samples={self.samples!r} must be an integer >= 1")

    def escalates(self, confidence: float) -> bool:
        return not (confidence >= self.below)  # a NaN confidence (never read) escalates

    def to_dict(self) -> dict[str, Any]:
        return {"below": float(self.below), "samples": int(self.samples), "meta": self.meta}

    @classmethod
    def from_dict(cls, doc: Any, where: str) -> "Escalation":
        if not isinstance(doc, dict) or "below" not in doc or "samples" not in doc:
            raise ValueError(f"{where}: 'escalation' must be an object with 'below' and 'samples'; fit it again with "
                             "`thinkctl calibrate`")
        below = doc["below"]
        if not isinstance(below, (int, float)) or not math.isfinite(float(below)):
            raise ValueError(f"{where}: escalation threshold {below!r} is not a finite number; fit it again with "
                             "`thinkctl calibrate`")
        return cls(float(below), int(doc["samples"]), dict(doc.get("meta") or {}))


@dataclass
class EscalationData:
    """Per calibration problem: the serial route's outcome and the simulated votes.

    ``vote_correct[:, j]`` is the estimated probability that escalating to ``samples[j]`` samples answers right,
    ``vote_extra_tokens[:, j]`` the expected tokens the escalation adds (its samples, each with the prompt's last
    token fed again)."""

    problem_ids: list[str]
    confidence: np.ndarray  # (n,) calibrated confidence at the end of the serial route's thinking
    serial_correct: np.ndarray  # (n,) float 0/1
    serial_tokens: np.ndarray  # (n,)
    samples: tuple[int, ...]
    vote_correct: np.ndarray  # (n, len(samples))
    vote_extra_tokens: np.ndarray  # (n, len(samples))
    recorded_samples: np.ndarray  # (n,) sampled answers recorded per problem


def simulate_vote(seed_answer: Any, seed_correct: bool, answers: Sequence[Any], correct: Sequence[bool],
                  lengths: Sequence[int], budget: int, *, wave_size: int, rule: Any, rng: np.random.Generator,
                  draws: int) -> tuple[float, float]:
    """P(right) and expected extra tokens of a vote seeded with the serial answer ``seed_answer`` (right or not
    by ``seed_correct``) that draws waves of ``wave_size`` samples until ``rule`` settles it or ``budget`` samples
    are drawn, as the live parallel route does. The samples are the recorded ``answers`` in random order (without
    replacement: an unbiased estimate of a vote of ``budget`` fresh samples) when there are at least ``budget`` of
    them, else drawn with replacement (which overweights the few recorded answers: the estimate is then only
    indicative, and :func:`escalation_data` does not offer such vote sizes)."""
    n = len(answers)
    right = {a for a, c in zip(answers, correct) if c and a is not None}
    if seed_answer is not None:
        (right.add if seed_correct else right.discard)(seed_answer)
    hits = 0
    extra = 0.0
    for _ in range(draws):
        # fresh samples are distinct draws: without replacement while the recorded ones last
        order = rng.permutation(n) if budget <= n else rng.integers(0, n, size=budget)
        tally = VoteTally([seed_answer])
        drawn = 0
        while drawn < budget:
            w = min(wave_size, budget - drawn)
            for i in order[drawn:drawn + w]:
                tally.add(answers[i])
                extra += 1 + lengths[i]
            drawn += w
            if rule is not None and rule.should_stop(tally, budget + 1):
                break
        hits += tally.leader() in right
    return hits / draws, extra / draws


def escalation_data(serial_rows: Sequence[dict[str, Any]], confidence: dict[str, float],
                    samples: Sequence[dict[str, Any]], *, vote_sizes: Sequence[int] = ESCALATION_SAMPLES,
                    wave_size: int = 5, rule: Any = None, draws: int = 100, seed: int = 0) -> EscalationData:
    """Per problem of ``serial_rows`` (rows of the serial route replayed on greedy traces: ``problem_id``,
    ``answer``, ``correct``, ``tokens``): its end-of-thinking ``confidence`` and votes simulated from the problem's
    sampled trace rows (``greedy: False``). Only vote sizes up to the fewest samples recorded for a problem are
    offered (the largest recorded size when none of ``vote_sizes`` fits), so that every vote is estimated without
    replacement. Problems without sampled rows are left out."""
    rule = MajorityStabilityStopping() if rule is None else rule
    by_problem: dict[str, list[dict[str, Any]]] = {}
    for r in samples:
        if not r.get("greedy"):
            by_problem.setdefault(str(r["problem_id"]), []).append(r)
    fewest = min((len(by_problem[str(r["problem_id"])]) for r in serial_rows
                  if str(r["problem_id"]) in by_problem), default=0)
    sizes = [int(k) for k in vote_sizes if k <= fewest] or ([fewest] if fewest >= 2 else [])
    if not sizes:
        raise ValueError("escalating to a vote needs at least 2 recorded samples per calibration problem besides "
                         "the greedy one; collect with --samples >= 3")
    vote_sizes = sizes
    rng = np.random.default_rng(seed)
    ids, conf, ok, tok, vc, vt, rec = [], [], [], [], [], [], []
    for row in sorted(serial_rows, key=lambda r: str(r["problem_id"])):
        pid = str(row["problem_id"])
        sampled = by_problem.get(pid)
        if not sampled or pid not in confidence:
            continue
        answers = [s.get("answer") for s in sampled]
        correct = [bool(s.get("correct")) for s in sampled]
        lengths = [int(s["n_generated"]) for s in sampled]
        accs, extras = [], []
        for k in vote_sizes:
            acc, extra = simulate_vote(row.get("answer"), bool(row["correct"]), answers, correct, lengths, int(k),
                                       wave_size=wave_size, rule=rule, rng=rng, draws=draws)
            accs.append(acc)
            extras.append(extra)
        ids.append(pid)
        conf.append(float(confidence[pid]))
        ok.append(float(bool(row["correct"])))
        tok.append(float(row["tokens"]))
        vc.append(accs)
        vt.append(extras)
        rec.append(len(sampled))
    if not ids:
        raise ValueError("no calibration problem has both a serial replay and sampled traces; collect with "
                         "--samples >= 2 (the first sample of each problem is greedy)")
    return EscalationData(ids, np.asarray(conf), np.asarray(ok), np.asarray(tok), tuple(int(k) for k in vote_sizes),
                          np.asarray(vc, dtype=float), np.asarray(vt, dtype=float), np.asarray(rec))


def detectable_gain(sd: float, n: int, confidence: float = 0.95, power: float = 0.8) -> float:
    """The smallest mean gain a one-sided test at ``confidence`` detects with probability ``power`` on ``n``
    problems whose per-problem gain has standard deviation ``sd`` (normal approximation)."""
    from scipy.stats import norm

    if n < 2 or not math.isfinite(sd):
        return math.inf
    return float((norm.ppf(confidence) + norm.ppf(power)) * sd / math.sqrt(n))


def candidate_thresholds(values: np.ndarray, quantiles: Sequence[float]) -> list[float]:
    """Thresholds "below which" to act: the ``quantiles`` (< 1) of ``values``, and one just above their largest
    (acting on every problem), increasing and without repeats."""
    return sorted({float(np.quantile(values, q)) for q in quantiles if q < 1}
                  | {math.nextafter(float(values.max()), math.inf)})


def select_and_test(gains: Sequence[np.ndarray], tokens: Sequence[np.ndarray], *, token_budget: float,
                    confidence: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[int | None, dict[str, Any]]:
    """Choose a candidate on one half of the problems and test its gain on the other.

    ``gains[c]`` and ``tokens[c]`` hold candidate ``c``'s accuracy gain over the serial route and its tokens, per
    problem. The problems are split in two halves at random (``seed``); on the first, the candidate with the best
    mean gain at mean tokens within ``token_budget`` is chosen (the cheapest within :data:`ACCURACY_TOLERANCE` of
    the best); on the second, which took no part in the choice, its mean gain gets a one-sided ``confidence``
    bootstrap lower bound. A choice tested on the problems it was chosen on would carry its selection's luck into
    the bound; the held-out half does not (Pareto testing's split, Laufer-Goldshtein et al. 2023, arXiv:2210.07913).

    Returns the chosen index (None when no candidate is within the budget) and the statistics of the test."""
    n = len(gains[0]) if gains else 0
    order = np.random.default_rng(seed).permutation(n)
    choose, test = order[: n // 2], order[n // 2:]
    feasible = [c for c in range(len(gains)) if float(tokens[c][choose].mean()) <= token_budget] if n >= 2 else []
    if not feasible:
        return None, {"n_choose": int(choose.size), "n_test": int(test.size)}
    best = max(float(gains[c][choose].mean()) for c in feasible)
    pick = min((c for c in feasible if float(gains[c][choose].mean()) >= best - ACCURACY_TOLERANCE),
               key=lambda c: float(tokens[c][choose].mean()))
    held = gains[pick][test]
    boot = held[np.random.default_rng(seed + 1).integers(0, held.size, size=(n_boot, held.size))].mean(1)
    lower = float(np.quantile(boot, 1 - confidence))
    return pick, {"n_choose": int(choose.size), "n_test": int(test.size),
                  "gain_on_choice_half": float(gains[pick][choose].mean()), "gain_on_test_half": float(held.mean()),
                  "gain_lower_bound": lower,
                  "gain_ci95": [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))],
                  "gain_confidence": confidence, "kept": lower > 0}


def fit_escalation(data: EscalationData, *, token_budget: float, confidence: float = 0.95, n_boot: int = 2000,
                   seed: int = 0, quantiles: Sequence[float] = ESCALATION_QUANTILES) -> Escalation | None:
    """The escalation (threshold and vote size) chosen and tested by :func:`select_and_test`: the best estimated
    accuracy at mean tokens within ``token_budget`` on half the problems, kept (``meta["kept"]``) only when the
    one-sided ``confidence`` lower bound of its gain over the serial route on the other half is above zero.

    Returns ``None`` when no escalation fits the budget; otherwise the chosen one with its evidence in ``meta``,
    kept or not (:func:`thinkctl.eval.serial_decisions.fit_bundle_escalation` records it in the routing table
    either way)."""
    n = len(data.problem_ids)
    if token_budget <= 0:
        raise ValueError(f"token_budget={token_budget} must be positive (mean tokens per query)")
    cands: list[tuple[float, int, np.ndarray, np.ndarray, np.ndarray]] = []
    thresholds = candidate_thresholds(data.confidence, quantiles)
    for j, k in enumerate(data.samples):
        for t in thresholds:
            esc = data.confidence < t
            if esc.any():
                cands.append((t, int(k), np.where(esc, data.vote_correct[:, j] - data.serial_correct, 0.0),
                              data.serial_tokens + np.where(esc, data.vote_extra_tokens[:, j], 0.0), esc))
    pick, test = select_and_test([c[2] for c in cands], [c[3] for c in cands], token_budget=token_budget,
                                 confidence=confidence, n_boot=n_boot, seed=seed)
    if pick is None:
        return None
    below, k, gain, tokens, esc = cands[pick]
    # the noise scale of the gain: that of escalating every query to the chosen vote (the chosen threshold may
    # escalate too few to show any); what the held-out half can detect
    widest = max((c for c in cands if c[1] == k), key=lambda c: int(c[4].sum()))
    sd = float(widest[2].std(ddof=1)) if n > 1 else math.inf
    meta = {"n_problems": n, "serial_accuracy": float(data.serial_correct.mean()),
            "serial_tokens": float(data.serial_tokens.mean()), "token_budget": float(token_budget),
            "recorded_samples_mean": float(data.recorded_samples.mean()), "candidates_tried": len(cands),
            "expected_accuracy": float(data.serial_correct.mean() + gain.mean()),
            "expected_tokens": float(tokens.mean()), "escalated_share": float(esc.mean()),
            "gain": float(gain.mean()), **test, "detectable_gain": detectable_gain(sd, test["n_test"], confidence),
            "note": "chosen on half the problems, its gain tested on the other half; votes are simulated from each "
                    "problem's recorded samples"}
    return Escalation(below, k, meta)
