"""Vote tallies and stopping rules: tie-breaking, ESC windows, ASC's Beta criterion against its reference integral,
and the exactness / calibration of thinkctl's majority-stability rule."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest
from scipy import integrate

from thinkctl.voting import (
    BetaStopping,
    MajorityStabilityStopping,
    VoteTally,
    WindowUnanimityStopping,
    leader_change_probability,
    majority_vote,
)


def test_tally_ties_go_to_first_appearance_and_none_abstains() -> None:
    t = VoteTally(["b", None, "a", "a", "b", None])
    assert t.leader() == "b" and t.n_seen == 6 and t.n_votes == 4
    assert t.ranked() == [("b", 2.0), ("a", 2.0)]
    assert VoteTally([None, None]).leader() is None
    assert majority_vote(["x", "y", "y"], weights=[3.0, 1.0, 1.0]) == "x"
    with pytest.raises(ValueError, match="weight"):
        VoteTally().add("a", -1.0)


def test_esc_stops_only_at_the_end_of_a_unanimous_window() -> None:
    rule = WindowUnanimityStopping(window=3)
    t = VoteTally()
    stops = []
    for a in ["a", "b", "a", "a", "a", "a"]:
        t.add(a)
        stops.append(rule.should_stop(t, budget=20))
    assert stops == [False, False, False, False, False, True]
    t = VoteTally([None, None, None])
    assert not rule.should_stop(t, budget=20)  # abstentions are not an agreeing window
    assert rule.should_stop(VoteTally(["a", "b"]), budget=2)  # the budget always stops
    with pytest.raises(ValueError, match="window"):
        WindowUnanimityStopping(window=0)


@pytest.mark.parametrize("v1,v2", [(1, 0), (4, 0), (3, 0), (5, 2), (7, 3), (12, 9)])
def test_asc_confidence_matches_reference_integral(v1: int, v2: int) -> None:
    # the reference implementation: quad(x**a * (1-x)**b, .5, 1) / quad(same, 0, 1)
    ref = (integrate.quad(lambda x: x ** v1 * (1 - x) ** v2, 0.5, 1)[0]
           / integrate.quad(lambda x: x ** v1 * (1 - x) ** v2, 0, 1)[0])
    third = ["c"] if v2 else []  # a third answer (behind the second) is ignored by ASC's criterion
    t = VoteTally(["a"] * v1 + ["b"] * v2 + third)
    assert BetaStopping.confidence(t) == pytest.approx(ref, rel=1e-9)


def test_asc_stops_after_four_unanimous_answers() -> None:
    rule = BetaStopping(0.95)
    assert not rule.should_stop(VoteTally(["a"] * 3), budget=40)  # 1 - 0.5**4 = 0.9375
    assert rule.should_stop(VoteTally(["a"] * 4), budget=40)  # 1 - 0.5**5 = 0.96875


def test_leader_change_probability_matches_monte_carlo_of_its_model() -> None:
    """The exact pairwise Dirichlet-multinomial sum against simulation of the same model (one challenger)."""
    rng = np.random.default_rng(0)
    a, b, m = 5, 3, 12
    t = VoteTally(["a"] * a + ["b"] * b)
    prior = 1.0
    exact = leader_change_probability(t, budget=a + b + m, prior_count=prior)
    # simulate: p ~ Dirichlet(a+1, b+1, 1) over (a, b, unseen); future counts multinomial(m, p)
    p = rng.dirichlet([a + prior, b + prior, prior], size=200_000)
    counts = np.array([rng.multinomial(m, pi) for pi in p[:40_000]])
    b_over = (b + counts[:, 1] > a + counts[:, 0]).mean()  # b appeared after a: ties stay with a
    u_over = (counts[:, 2] > a + counts[:, 0]).mean()
    assert exact == pytest.approx(b_over + u_over, abs=0.01)
    assert 0 < exact < 1


def test_zero_change_probability_means_the_full_vote_agrees() -> None:
    """Whenever the rule reports probability 0, the majority of the complete sequence is the current leader."""
    rng = np.random.default_rng(1)
    checked = 0
    for _ in range(300):
        n = int(rng.integers(3, 16))
        k = int(rng.integers(1, 4))
        seq = [str(x) for x in rng.integers(0, k, size=n)]
        t = VoteTally()
        for i, a in enumerate(seq):
            t.add(a)
            if leader_change_probability(t, n) == 0.0:
                assert majority_vote(seq) == t.leader(), (seq, i)
                checked += 1
    assert checked > 300


def test_adaptive_stops_by_budget_awareness() -> None:
    rule = MajorityStabilityStopping()
    # 4 of 8 agree: the other 4 can at most tie, and ties go to the earlier answer -> decided exactly
    assert leader_change_probability(VoteTally(["a", "a", "a", "a"]), 8) == 0.0
    # a 6-4 split with 1 sample left is decided; with 30 left it is not
    split = VoteTally(["a", "b"] * 4 + ["a", "a"])
    assert rule.should_stop(split, budget=11)
    assert not rule.should_stop(split, budget=40)
    # one agreeing answer never suffices with a real budget
    assert not rule.should_stop(VoteTally(["a"]), budget=40)
    with pytest.raises(ValueError, match="alpha"):
        MajorityStabilityStopping(alpha=1.5)
    with pytest.raises(ValueError, match="budget"):
        rule.should_stop(VoteTally(["a", "a"]), budget=1)


@pytest.mark.parametrize("k_answers", [2, 4])
def test_adaptive_disagreement_with_full_vote_is_below_alpha(k_answers: int) -> None:
    """Monte Carlo: answer distributions from the uniform Dirichlet prior; the stopped answer differs from the
    majority of all N samples at most about alpha of the time (the union bound makes the rule conservative)."""
    rng = np.random.default_rng(2)
    rule = MajorityStabilityStopping(alpha=0.05)
    n, trials, differ, saved = 24, 1500, 0, 0
    for _ in range(trials):
        p = rng.dirichlet(np.ones(k_answers))
        seq = rng.choice(k_answers, size=n, p=p).tolist()
        t = VoteTally()
        for a in seq:
            t.add(a)
            if rule.should_stop(t, n):
                break
        differ += t.leader() != majority_vote(seq)
        saved += n - t.n_seen
    assert differ / trials <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / trials)
    assert saved / trials > 5  # and it does stop early


@pytest.mark.parametrize("name", ["thinkctl.voting", "thinkctl.eval.replay"])
def test_docstring_examples_run(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0
