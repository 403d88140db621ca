"""Learn then Test: p-values and fixed-sequence testing against MAPIE and by hand, loss conventions, persistence,
and a Monte-Carlo check of the risk guarantee."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats
from sklearn.exceptions import NotFittedError

from thinkctl.calibration import (
    LTTResult,
    RiskControlledThreshold,
    early_stopping_losses,
    learn_then_test,
    min_calibration_size,
)

GRID = np.linspace(0.0, 1.0, 41)


def _population(rng, n, harm_scale=0.6):
    """Scores s ~ U(0, 1); taking the decision at s is harmful with probability harm_scale * (1 - s).

    True risk of "decide when s >= λ": R(λ) = ∫_λ^1 harm_scale (1 - s) ds = harm_scale / 2 * (1 - λ)^2.
    """
    s = rng.uniform(size=n)
    harm = (rng.uniform(size=n) < harm_scale * (1.0 - s)).astype(float)
    return s, harm


# --------------------------------------------------------------------------- p-values and FST vs references
@pytest.mark.parametrize("method,binary", [("binomial", True), ("hoeffding-bentkus", False)])
def test_p_values_match_mapie(rng, method, binary):
    mapie_methods = pytest.importorskip("mapie.risk_control.methods")
    n = 512  # a power of two keeps n * (k / n) == k exact inside MAPIE's ceil(n * r_hat)
    s, harm = _population(rng, n)
    res = learn_then_test(s, harm, GRID, epsilon=0.1, delta=0.1, method=method)
    ref = mapie_methods.compute_hoeffding_bentkus_p_value(res.risks, n, 0.1, binary=binary)[:, 0]
    np.testing.assert_allclose(res.p_values, np.minimum(ref, 1.0), rtol=1e-10, atol=1e-300)


def test_hoeffding_bentkus_on_bounded_losses_matches_mapie(rng):
    mapie_methods = pytest.importorskip("mapie.risk_control.methods")
    n = 256
    s = rng.uniform(size=n)
    loss = rng.uniform(size=n) * (1 - s)  # non-binary losses in [0, 1]
    res = learn_then_test(s, loss, GRID, epsilon=0.15, delta=0.05, method="hoeffding-bentkus")
    ref = mapie_methods.compute_hoeffding_bentkus_p_value(res.risks, n, 0.15, binary=False)[:, 0]
    # MAPIE takes ceil(n * r_hat), we take ceil(sum of losses); the two agree unless round-off crosses an integer
    np.testing.assert_allclose(res.p_values, np.minimum(ref, 1.0), rtol=1e-10, atol=1e-300)


def test_fixed_sequence_testing_matches_mapie(rng):
    fwer = pytest.importorskip("mapie.risk_control.fwer_control")
    for trial in range(20):
        s, harm = _population(rng, 300)
        res = learn_then_test(s, harm, GRID, epsilon=0.08, delta=0.1)
        ref = fwer.control_fwer(res.p_values, 0.1, fwer_method="fixed_sequence")
        np.testing.assert_array_equal(res.valid_thresholds, res.thresholds[np.asarray(ref, dtype=int)])


def test_binomial_p_value_by_hand():
    # 3 calibration examples decided at λ=0.5, one harmful, out of n=50: p = P(Binom(50, 0.1) <= 1)
    s = np.array([0.9, 0.8, 0.6] + [0.1] * 47)
    harm = np.array([1.0, 0.0, 0.0] + [1.0] * 47)
    res = learn_then_test(s, harm, [0.5, 0.95], epsilon=0.1, delta=0.2)
    assert res.thresholds.tolist() == [0.95, 0.5]  # most conservative first
    assert res.risks.tolist() == [0.0, 1 / 50]
    expected = [0.9**50, stats.binom.cdf(1, 50, 0.1)]
    np.testing.assert_allclose(res.p_values, expected, rtol=1e-12)
    assert res.chosen == 0.5 and res.reason is None


def test_hoeffding_bentkus_by_hand():
    n, eps = 100, 0.2
    losses = np.zeros((n, 1))
    losses[:7, 0] = 1.0
    losses[7:10, 0] = 0.5  # total 8.5 -> risk 0.085
    res = learn_then_test(None, losses, [0.3], epsilon=eps, delta=0.1, method="hoeffding-bentkus")
    r = 0.085
    h = r * math.log(r / eps) + (1 - r) * math.log((1 - r) / (1 - eps))
    expected = min(math.exp(-n * h), math.e * stats.binom.cdf(9, n, eps))
    assert res.p_values[0] == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------- procedure semantics
def test_fixed_sequence_stops_at_first_failure_even_if_later_thresholds_pass():
    n = 200
    losses = np.zeros((n, 4))
    losses[:60, 1] = 1.0  # threshold index 1 is bad, 2 and 3 are fine again (non-monotone risk)
    res = learn_then_test(None, losses, [0.9, 0.8, 0.7, 0.6], epsilon=0.1, delta=0.1)
    assert res.p_values[2] <= 0.1 and res.p_values[3] <= 0.1
    assert res.valid_thresholds.tolist() == [0.9]
    assert res.chosen == 0.9


def test_one_dimensional_losses_two_dimensional_and_callable_agree(rng):
    s, harm = _population(rng, 400)
    a = learn_then_test(s, harm, GRID, 0.1, 0.1)
    matrix = harm[:, None] * (s[:, None] >= GRID[None, :])
    b = learn_then_test(None, matrix, GRID, 0.1, 0.1)
    c = learn_then_test(s, lambda sc, lam: harm * (sc >= lam), GRID, 0.1, 0.1)
    for other in (b, c):
        np.testing.assert_array_equal(a.p_values, other.p_values)
        assert a.chosen == other.chosen


def test_threshold_order_and_direction(rng):
    s, harm = _population(rng, 400)
    shuffled = rng.permutation(GRID)
    a = learn_then_test(s, harm, GRID, 0.1, 0.1)
    b = learn_then_test(s, harm, shuffled, 0.1, 0.1)
    np.testing.assert_array_equal(a.thresholds, b.thresholds)
    assert a.chosen == b.chosen
    assert np.all(np.diff(a.thresholds) < 0)
    # the mirrored problem on u = 1 - s: decide when u <= μ, so lower thresholds are the conservative end
    loss_low = harm[:, None] * ((1 - s)[:, None] <= (1 - GRID)[None, :])
    c = learn_then_test(None, loss_low, 1 - GRID, 0.1, 0.1, higher_is_conservative=False)
    assert np.all(np.diff(c.thresholds) > 0)
    assert c.chosen == pytest.approx(1 - a.chosen)


def test_too_small_calibration_set_is_reported():
    res = learn_then_test(np.ones(40), np.zeros(40), GRID, epsilon=0.05, delta=0.1)
    assert res.chosen is None and res.valid_thresholds.size == 0
    assert "calibration set of n=40 is too small" in res.reason
    assert f"p={0.95 ** 40:.3g} > delta=0.1" in res.reason
    assert "need n >= 45" in res.reason
    assert res.min_n == 45


def test_failing_most_conservative_threshold_is_reported():
    losses = np.ones((500, 3))
    res = learn_then_test(None, losses, [0.2, 0.5, 0.8], epsilon=0.1, delta=0.1)
    assert res.chosen is None
    assert "most conservative threshold 0.8 already fails" in res.reason


@pytest.mark.parametrize("eps,delta", [(0.05, 0.1), (0.05, 0.05), (0.1, 0.1), (0.01, 0.2)])
def test_min_calibration_size_is_tight(eps, delta):
    n = min_calibration_size(eps, delta)
    assert (1 - eps) ** n <= delta < (1 - eps) ** (n - 1)
    assert learn_then_test(None, np.zeros((n, 1)), [1.0], eps, delta).chosen == 1.0
    assert learn_then_test(None, np.zeros((n - 1, 1)), [1.0], eps, delta).chosen is None


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"losses": np.full(10, 0.5)}, "needs losses that are 0 or 1.*hoeffding-bentkus"),
        ({"losses": np.full(10, 1.5), "method": "hoeffding-bentkus"}, r"in \[0, 1\]"),
        ({"losses": np.r_[np.nan, np.zeros(9)]}, "NaN"),
        ({"losses": np.zeros((10, 3))}, "one column per threshold"),
        ({"losses": np.zeros(9)}, "scores has 10 samples but losses has 9"),
        ({"method": "clopper"}, "method='clopper'.*'binomial', 'hoeffding-bentkus'"),
        ({"epsilon": 0.0}, r"epsilon=0.0 is out of range.*\(0, 1\)"),
        ({"delta": 1.0}, "delta=1.0"),
        ({"thresholds": [0.5, 0.5]}, "duplicates"),
        ({"thresholds": [0.5, np.inf]}, "finite"),
        ({"scores": None}, "needs scores"),
    ],
)
def test_bad_input(kwargs, match):
    args = {"scores": np.linspace(0, 1, 10), "losses": np.zeros(10), "thresholds": [0.2, 0.6], "epsilon": 0.1,
            "delta": 0.1}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        learn_then_test(**args)


# --------------------------------------------------------------------------- early stopping losses
def test_early_stopping_losses_by_hand():
    conf = np.array([[0.2, 0.6, 0.9],     # wrong at 0.6, right at 0.9; full run right
                     [0.7, 0.8, np.nan],  # wrong early, generation ended after 2 checkpoints; full run right
                     [0.5, 0.5, 0.5],     # never confident; full run right
                     [0.9, 0.9, 0.9]])    # wrong everywhere and full run wrong -> stopping cannot hurt
    ok = np.array([[False, False, True], [False, True, True], [True, True, True], [False, False, False]])
    final = np.array([True, True, True, False])
    lam = np.array([0.95, 0.85, 0.65, 0.55, 0.1])
    loss = early_stopping_losses(conf, ok, final, lam)
    expected = np.array([[0, 0, 0, 1, 1],
                         [0, 0, 1, 1, 1],
                         [0, 0, 0, 0, 0],
                         [0, 0, 0, 0, 0]], dtype=float)
    np.testing.assert_array_equal(loss, expected)
    res = learn_then_test(None, loss, lam, epsilon=0.5, delta=0.5)
    assert res.risks.tolist() == [0.0, 0.0, 0.25, 0.5, 0.5]


def test_early_stopping_losses_shape_errors():
    with pytest.raises(ValueError, match="checkpoint_correct has shape"):
        early_stopping_losses(np.zeros((3, 2)), np.zeros((3, 3)), np.zeros(3), [0.5])
    with pytest.raises(ValueError, match="final_correct has 2 samples"):
        early_stopping_losses(np.zeros((3, 2)), np.zeros((3, 2)), np.zeros(2), [0.5])


# --------------------------------------------------------------------------- RiskControlledThreshold
def test_risk_controlled_threshold_calibrate_decide_and_persist(tmp_path, rng):
    s, harm = _population(rng, 1000)
    rct = RiskControlledThreshold(epsilon=0.1, delta=0.1)
    with pytest.raises(NotFittedError):
        rct.decide([0.5])
    assert rct.calibrate(s, harm) is rct
    assert rct.threshold_ == learn_then_test(s, harm, np.linspace(0, 1, 101), 0.1, 0.1).chosen
    assert isinstance(rct.result_, LTTResult)
    scores = np.array([0.0, rct.threshold_, 1.0])
    assert rct.decide(scores).tolist() == [False, True, True]
    path = rct.save(tmp_path / "rct.json", metadata={"predictor": "probe"})
    doc = json.loads(path.read_text())
    assert doc["kind"] == "risk_controlled_threshold" and doc["params"]["epsilon"] == 0.1
    loaded = RiskControlledThreshold.load(path, expected_metadata={"predictor": "probe"})
    assert loaded.threshold_ == rct.threshold_
    np.testing.assert_array_equal(loaded.result_.p_values, rct.result_.p_values)
    np.testing.assert_array_equal(loaded.decide(s), rct.decide(s))
    with pytest.raises(ValueError, match="holds a 'risk_controlled_threshold'"):
        from thinkctl.calibration import TemperatureScaler

        TemperatureScaler.load(path)


def test_risk_controlled_threshold_never_decides_when_risk_cannot_be_controlled(caplog):
    rct = RiskControlledThreshold(epsilon=0.05, delta=0.05).calibrate(np.linspace(0, 1, 30), np.zeros(30))
    assert rct.threshold_ is None
    assert "too small" in rct.result_.reason
    assert not rct.decide(np.linspace(0, 1, 11)).any()
    assert "cannot be guaranteed" in caplog.text


# --------------------------------------------------------------------------- the guarantee, by Monte-Carlo
@pytest.mark.slow
@pytest.mark.parametrize("method", ["binomial", "hoeffding-bentkus"])
def test_ltt_guarantee_holds_over_random_splits(method):
    rng = np.random.default_rng(12345)
    n_pop, n_cal, n_trials = 100_000, 500, 1000
    epsilon, delta = 0.1, 0.1
    grid = np.linspace(0.0, 1.0, 101)
    s, harm = _population(rng, n_pop)
    decided = s[:, None] >= grid[None, :]  # (n_pop, T)
    pop_total = (harm[:, None] * decided).sum(axis=0)
    violations = naive_violations = 0
    for _ in range(n_trials):
        cal = rng.choice(n_pop, size=n_cal, replace=False)  # the rest of the population is the test split
        cal_total = (harm[cal, None] * decided[cal]).sum(axis=0)
        test_risk = (pop_total - cal_total) / (n_pop - n_cal)
        res = learn_then_test(s[cal], harm[cal], grid, epsilon, delta, method)
        if res.chosen is not None:
            violations += test_risk[np.flatnonzero(grid == res.chosen)[0]] > epsilon
        # a naive rule that ignores the sampling noise: least conservative λ with empirical risk <= epsilon
        naive = np.flatnonzero(cal_total / n_cal <= epsilon).min()
        naive_violations += test_risk[naive] > epsilon
    # LTT promises P(R(chosen) > epsilon) <= delta. With 1000 independent splits the observed frequency of a
    # procedure exactly at delta = 0.1 has standard deviation sqrt(0.1 * 0.9 / 1000) ~= 0.0095; three of them
    # (0.03) is the Monte-Carlo tolerance. The test-split risk (99,500 points) estimates the true risk to
    # ~0.001, which can only matter for thresholds within 0.001 of epsilon and is covered by the same margin.
    assert violations / n_trials <= delta + 0.03
    # the check has power: ignoring the noise breaks the guarantee (about half of the splits violate)
    assert naive_violations / n_trials > delta + 0.1


def test_stop_score_sides_and_errors():
    from thinkctl.calibration.risk_control import (STOP_SCORE_CONFIDENCE, STOP_SCORE_OUTLOOK, STOP_SCORE_OUTLOOK_ONLY,
                                                   stop_score)

    c = np.array([0.1, 0.99, 0.2, 0.5])
    f = np.array([0.9, 0.9, 0.001, 0.5])
    np.testing.assert_allclose(stop_score(c, f, STOP_SCORE_CONFIDENCE), c)
    np.testing.assert_allclose(stop_score(c, f, STOP_SCORE_OUTLOOK_ONLY), 1 - f)
    # max(confidence, 1 - kappa * outlook): at lambda = 0.98 the rule stops on a confident answer (row 1) and on
    # hopeless thinking, outlook <= (1 - 0.98) / kappa = 0.01 (row 2), and nowhere else
    s = stop_score(c, f, STOP_SCORE_OUTLOOK, kappa=2.0)
    np.testing.assert_allclose(s, np.maximum(c, 1 - 2.0 * f))
    assert (s >= 0.98).tolist() == [False, True, True, False]
    with pytest.raises(ValueError, match="needs the outlook"):
        stop_score(c, None, STOP_SCORE_OUTLOOK_ONLY)
    with pytest.raises(ValueError, match="is not one of"):
        stop_score(c, f, "max(c, f)")


@pytest.mark.parametrize("n, epsilon", [(114, 0.02), (300, 0.02), (600, 0.02), (200, 0.05)])
def test_most_losses_certifiable_is_the_edge_of_the_binomial_test(n, epsilon):
    from thinkctl.calibration.bundle import most_losses_certifiable

    k = most_losses_certifiable(n, epsilon, 0.1)
    lam = np.array([0.5])
    # k losses among n problems are certified by learn_then_test; k + 1 are not
    assert k is not None
    for losses, ok in ((k, True), (k + 1, False)):
        loss = np.zeros((n, 1))
        loss[:losses] = 1.0
        assert (learn_then_test(None, loss, lam, epsilon, 0.1).chosen is not None) == ok
    assert most_losses_certifiable(113, 0.02, 0.1) is None  # below min_calibration_size nothing passes
