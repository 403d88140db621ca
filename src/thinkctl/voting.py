"""Votes over sampled answers and the rules that decide when to stop sampling.

Shared by ``thinkctl replay`` (recorded samples) and the live controller (samples drawn one at a time). Every rule
looks only at a :class:`VoteTally` of the answers drawn so far and the total budget ``N``; none of them needs the
answers' correctness, so a rule behaves the same on recorded and on live samples.

Rules
-----
:class:`WindowUnanimityStopping`
    Early-Stopping Self-Consistency (ESC; Li et al., ICLR 2024, arXiv:2401.10480): sample in windows of ``w``
    answers, stop at the first window whose answers are all identical.
:class:`BetaStopping`
    Adaptive-Consistency (ASC; Aggarwal et al., EMNLP 2023, arXiv:2305.11860), its Beta stopping criterion: stop
    when ``P(p_top > 1/2)`` under ``Beta(top + 1, second + 1)`` reaches a threshold.
:class:`MajorityStabilityStopping`
    thinkctl's rule: stop when the posterior-predictive probability that the *remaining* budget could still change
    the majority-vote winner falls below ``alpha``.

Conventions
-----------
* ``None`` is an abstention (an answer the extractor could not parse): it consumes budget but casts no vote.
* Ties between answers with equal votes go to the answer that appeared first in the order the samples arrived.

Examples
--------
>>> from thinkctl.voting import VoteTally, MajorityStabilityStopping
>>> tally = VoteTally()
>>> rule = MajorityStabilityStopping()
>>> for answer in ["7", "7", "7", "7", "7"]:
...     tally.add(answer)
...     if rule.should_stop(tally, budget=40):
...         break
>>> tally.leader(), tally.n_seen  # 3 agreeing of 40: P(the other 37 overturn '7') = 0.048 < 0.05
('7', 3)
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Hashable, Iterable, Sequence

import numpy as np
from scipy.special import betainc, betaln, gammaln

__all__ = [
    "VoteTally",
    "majority_vote",
    "WindowUnanimityStopping",
    "BetaStopping",
    "MajorityStabilityStopping",
    "leader_change_probability",
]

#: ESC window size: the published setting (Li et al. 2024, Fig. 1 "the size is 5"; code github.com/Yiwei98/ESC
#: ``early_stop_*.py``: ``slice_ in [5]`` with ``sc_num = 40``).
ESC_WINDOW = 5
#: ASC Beta-criterion confidence threshold: the published default (Aggarwal et al. 2023; code
#: github.com/Pranjal2041/AdaptiveConsistency ``BetaStoppingCriteria(conf_thresh=0.95)``, ``AC(max_gens=40)``).
ASC_THRESHOLD = 0.95
#: Level of thinkctl's rule: the same nominal 5 % error level as ASC's 0.95 threshold, so that the two rules are
#: compared at equal stated confidence; they differ in the question asked (ASC: "is the leader the true mode?";
#: thinkctl: "can the samples still to come change the majority of the N?").
ADAPTIVE_ALPHA = 0.05
#: Symmetric Dirichlet pseudo-count given to every seen answer and to the not-yet-seen one: the uniform prior, the
#: same Beta(1, 1) prior as ASC's criterion, so that the only difference between the rules is the question asked.
ADAPTIVE_PRIOR_COUNT = 1.0
#: No hard minimum: the posterior already refuses to stop after one or two agreeing answers unless the remaining
#: budget makes the outcome certain (e.g. N = 3 and two agree), where stopping is exact.
ADAPTIVE_MIN_SAMPLES = 1


class VoteTally:
    """Votes for answers in arrival order, with optional weights.

    Parameters
    ----------
    answers : iterable of hashable, optional
        Answers to add at once (weight 1 each); ``None`` is an abstention.

    Attributes
    ----------
    n_seen : int
        Samples consumed, abstentions included.
    history : list
        The answers in arrival order (``None`` for abstentions).
    """

    __slots__ = ("_votes", "_first", "n_seen", "history")

    def __init__(self, answers: Iterable[Hashable | None] = ()) -> None:
        self._votes: dict[Hashable, float] = {}
        self._first: dict[Hashable, int] = {}
        self.n_seen = 0
        self.history: list[Hashable | None] = []
        for a in answers:
            self.add(a)

    def add(self, answer: Hashable | None, weight: float = 1.0) -> None:
        """Record one sample; ``answer=None`` consumes budget without voting."""
        if answer is not None:
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"weight={weight!r} for answer {answer!r} must be finite and >= 0; "
                                 "transform raw scores into non-negative weights first (e.g. a sigmoid)")
            if answer not in self._votes:
                self._votes[answer] = 0.0
                self._first[answer] = self.n_seen
            self._votes[answer] += weight
        self.history.append(answer)
        self.n_seen += 1

    @property
    def n_votes(self) -> int:
        """Number of non-abstaining samples."""
        return self.n_seen - sum(a is None for a in self.history)

    def votes(self, answer: Hashable) -> float:
        return self._votes.get(answer, 0.0)

    def first_seen(self, answer: Hashable) -> int:
        """Index of the sample where ``answer`` first appeared."""
        return self._first[answer]

    def ranked(self) -> list[tuple[Hashable, float]]:
        """``(answer, votes)`` by decreasing votes; equal votes ordered by first appearance."""
        return sorted(self._votes.items(), key=lambda kv: (-kv[1], self._first[kv[0]]))

    def leader(self) -> Hashable | None:
        """The majority answer (ties to the earliest first appearance), or ``None`` when nobody voted."""
        if not self._votes:
            return None
        return min(self._votes, key=lambda a: (-self._votes[a], self._first[a]))

    def __len__(self) -> int:
        return len(self._votes)


def majority_vote(answers: Sequence[Hashable | None], weights: Sequence[float] | None = None) -> Hashable | None:
    """(Weighted) majority answer; ties go to the answer that appears first; ``None`` entries abstain.

    >>> majority_vote(["b", "a", "a", "b"])
    'b'
    >>> majority_vote(["b", "a"], weights=[0.2, 0.9])
    'a'
    """
    if weights is not None and len(weights) != len(answers):
        raise ValueError(f"got {len(weights)} weights for {len(answers)} answers; pass one weight per answer")
    tally = VoteTally()
    for i, a in enumerate(answers):
        tally.add(a, 1.0 if weights is None else float(weights[i]))
    return tally.leader()


def _check_budget(tally: VoteTally, budget: int) -> None:
    if budget < tally.n_seen:
        raise ValueError(f"budget={budget} is smaller than the {tally.n_seen} samples already drawn; "
                         "pass the total number of samples allowed (N)")


@dataclass(frozen=True)
class WindowUnanimityStopping:
    """ESC: stop at the end of the first window of ``window`` consecutive samples whose answers are all identical.

    Windows are the consecutive blocks ``[0, w), [w, 2w), ...``; an abstention breaks unanimity. A last window
    shorter than ``w`` (when ``N`` is not a multiple of ``w``) simply ends at the budget.
    """

    window: int = ESC_WINDOW

    def __post_init__(self) -> None:
        if not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"window={self.window!r} must be an integer >= 1 (ESC's published value is {ESC_WINDOW})")

    def should_stop(self, tally: VoteTally, budget: int) -> bool:
        _check_budget(tally, budget)
        n = tally.n_seen
        if n >= budget:
            return True
        if n == 0 or n % self.window:
            return False
        last = tally.history[n - self.window:]
        return last[0] is not None and all(a == last[0] for a in last)


@dataclass(frozen=True)
class BetaStopping:
    """ASC's Beta criterion: stop when ``P(p > 1/2) >= threshold`` for ``p ~ Beta(v1 + 1, v2 + 1)``.

    ``v1``/``v2`` are the votes of the leading and the second answer (others are ignored, as in the reference
    implementation, which integrates ``x**v1 * (1 - x)**v2`` over ``[1/2, 1]``). Checked after every sample.
    """

    threshold: float = ASC_THRESHOLD

    def __post_init__(self) -> None:
        if not 0.5 < self.threshold < 1:
            raise ValueError(f"threshold={self.threshold!r} must lie in (0.5, 1); ASC's published value is "
                             f"{ASC_THRESHOLD}")

    @staticmethod
    def confidence(tally: VoteTally) -> float:
        """``P(p_top > 1/2)`` under ``Beta(v1 + 1, v2 + 1)``; 0 when nobody voted."""
        ranked = tally.ranked()
        if not ranked:
            return 0.0
        v1 = ranked[0][1]
        v2 = ranked[1][1] if len(ranked) > 1 else 0.0
        # P(X > 1/2) for X ~ Beta(v1+1, v2+1) equals I_{1/2}(v2+1, v1+1).
        return float(betainc(v2 + 1.0, v1 + 1.0, 0.5))

    def should_stop(self, tally: VoteTally, budget: int) -> bool:
        _check_budget(tally, budget)
        return tally.n_seen >= budget or self.confidence(tally) >= self.threshold


@functools.lru_cache(maxsize=1 << 18)
def _overtake_probability(a: float, b: float, rest: float, lead: int, m: int, wins_ties: bool) -> float:
    """P(challenger ends ahead of the leader) after ``m`` more draws.

    Future counts ``(X, Y, Z) ~ DirichletMultinomial(m; a, b, rest)`` for (leader, challenger, everything else);
    the challenger, ``lead`` votes behind now, ends ahead when ``Y - X > lead`` (``>=`` when it wins ties).
    ``K = X + Y ~ BetaBinomial(m; a + b, rest)`` and ``X | K ~ BetaBinomial(K; a, b)``, summed exactly.
    """
    need = lead if wins_ties else lead + 1  # smallest Y - X that overturns
    if need > m:
        return 0.0
    k = np.arange(m + 1)
    if rest > 0:
        log_pk = (gammaln(m + 1) - gammaln(k + 1) - gammaln(m - k + 1)
                  + betaln(k + a + b, m - k + rest) - betaln(a + b, rest))
        pk = np.exp(log_pk)
    else:
        pk = np.zeros(m + 1)
        pk[m] = 1.0
    kk, xx = np.meshgrid(k, k, indexing="ij")  # (K, X)
    valid = (xx <= kk) & (kk - 2 * xx >= need)
    if not valid.any():
        return 0.0
    kv, xv = kk[valid], xx[valid]
    log_px = (gammaln(kv + 1) - gammaln(xv + 1) - gammaln(kv - xv + 1)
              + betaln(xv + a, kv - xv + b) - betaln(a, b))
    p = float(np.sum(pk[kv] * np.exp(log_px)))
    return min(1.0, max(0.0, p))


def leader_change_probability(tally: VoteTally, budget: int, prior_count: float = ADAPTIVE_PRIOR_COUNT,
                              stop_above: float = math.inf) -> float:
    """Upper bound on P(majority of all ``budget`` samples != current leader), posterior predictive.

    Model: the answers still to come are exchangeable draws from an answer distribution with a symmetric
    Dirichlet(``prior_count``) prior over the answers seen so far plus one pooled not-yet-seen answer; the posterior
    predictive of the remaining ``m = budget - n_seen`` draws is Dirichlet-multinomial. For every challenger ``C``
    (each seen non-leading answer, and the pooled unseen one, which is conservative since unseen answers must in
    fact split their mass) the probability that ``C`` ends with more votes than the leader (or equal votes and an
    earlier first appearance) is computed exactly; the bound is their sum (union bound). It is 0 when the
    remaining budget cannot overturn the leader, so stopping then reproduces the full vote exactly.

    Parameters
    ----------
    tally : VoteTally
        Unweighted votes so far.
    budget : int
        Total samples allowed, ``N``.
    prior_count : float
        Dirichlet pseudo-count per answer (seen ones and the unseen pool).
    stop_above : float
        Return as soon as the running sum exceeds this (the caller only needs to know it is above its level).
    """
    _check_budget(tally, budget)
    if prior_count <= 0:
        raise ValueError(f"prior_count={prior_count!r} must be > 0 (1.0 is the uniform prior)")
    ranked = tally.ranked()
    if not ranked:
        return 1.0
    m = budget - tally.n_seen
    if m == 0:
        return 0.0
    leader, a = ranked[0]
    a_first = tally.first_seen(leader)
    total = tally.n_seen + prior_count * (len(ranked) + 1)
    a_par = a + prior_count
    p = 0.0
    # pooled unseen answer first (often the largest term when the vote is unanimous), then by decreasing votes
    challengers = [(None, 0.0, False)] + [(ans, v, tally.first_seen(ans) < a_first) for ans, v in ranked[1:]]
    for _, b, wins_ties in challengers:
        lead = int(round(a - b))
        b_par = b + prior_count
        rest = max(0.0, total - a_par - b_par)
        p += _overtake_probability(float(a_par), float(b_par), round(rest, 9), lead, m, bool(wins_ties))
        if p > stop_above:
            break
    return min(1.0, p)


@dataclass(frozen=True)
class MajorityStabilityStopping:
    """thinkctl's rule: stop when the remaining budget is unlikely to change the majority of the ``N`` samples.

    Stops once at least ``min_samples`` samples are in and :func:`leader_change_probability` ``< alpha``. Because
    the target is the outcome of the full vote (what self-consistency over ``N`` would return) rather than the true
    mode, the rule uses the remaining budget: a split vote stops as soon as the trailing answers can no longer (or
    are very unlikely to) catch up, and any stop with probability 0 reproduces full self-consistency exactly.

    Parameters
    ----------
    alpha : float
        Largest accepted posterior probability that stopping changes the answer of the full vote.
    prior_count : float
        Symmetric Dirichlet pseudo-count (1.0: uniform, as ASC's Beta(1, 1)).
    min_samples : int
        Never stop before this many samples (the budget always stops).
    """

    alpha: float = ADAPTIVE_ALPHA
    prior_count: float = ADAPTIVE_PRIOR_COUNT
    min_samples: int = ADAPTIVE_MIN_SAMPLES

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha={self.alpha!r} must lie in (0, 1); the default is {ADAPTIVE_ALPHA}")
        if not self.prior_count > 0:
            raise ValueError(f"prior_count={self.prior_count!r} must be > 0; 1.0 is the uniform prior")
        if not isinstance(self.min_samples, int) or self.min_samples < 1:
            raise ValueError(f"min_samples={self.min_samples!r} must be an integer >= 1")

    def change_probability(self, tally: VoteTally, budget: int) -> float:
        return leader_change_probability(tally, budget, self.prior_count)

    def should_stop(self, tally: VoteTally, budget: int) -> bool:
        _check_budget(tally, budget)
        if tally.n_seen >= budget:
            return True
        if tally.n_seen < self.min_samples:
            return False
        return leader_change_probability(tally, budget, self.prior_count, stop_above=self.alpha) < self.alpha
