"""Calibration metrics against scikit-learn and torchmetrics, plus properties of the estimators without a reference."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from thinkctl.calibration import (
    METRICS,
    auroc,
    bootstrap_ci,
    brier_score,
    debiased_l2_calibration_error,
    expected_calibration_error,
    maximum_calibration_error,
    negative_log_likelihood,
    reliability_curve,
    smooth_ece,
)

torch = pytest.importorskip("torch")
tm_cal = pytest.importorskip("torchmetrics.functional.classification")

TOL = 1e-9


def _torchmetrics_ce(y, p, n_bins, norm):
    return tm_cal.binary_calibration_error(
        torch.tensor(p, dtype=torch.float64), torch.tensor(y), n_bins=n_bins, norm=norm
    ).item()


def _skewed(rng, n):
    """Probabilities concentrated near 0 and 1 and labels from a distorted truth: large, sign-changing gaps."""
    p = rng.beta(0.5, 0.5, size=n)
    y = (rng.uniform(size=n) < 0.5 + 0.8 * (p - 0.5) ** 3 * 4).astype(int)
    return y, p


# --------------------------------------------------------------------------- binned metrics vs torchmetrics
@pytest.mark.parametrize("n_bins", [1, 2, 7, 10, 15, 30])
@pytest.mark.parametrize("norm", ["l1", "l2", "max"])
def test_ece_matches_torchmetrics(rng, n_bins, norm):
    y, p = _skewed(rng, 1500)
    ours = expected_calibration_error(y, p, n_bins=n_bins, norm=norm)
    assert ours == pytest.approx(_torchmetrics_ce(y, p, n_bins, norm), abs=TOL)


@pytest.mark.parametrize("n_bins", [2, 4, 8, 16])
def test_values_on_bin_edges_follow_torchmetrics(rng, n_bins):
    # Edges k / 2^m are exact in binary, so torch.linspace and numpy.linspace agree on them bit for bit and the
    # left-closed convention [b_k, b_{k+1}) is tested without round-off ambiguity. 1.0 is excluded (see below).
    edges = np.arange(n_bins) / n_bins
    p = np.concatenate([rng.choice(edges, size=300), rng.uniform(size=300)])
    y = (rng.uniform(size=p.size) < 0.3 + 0.4 * p).astype(int)
    for norm in ("l1", "l2", "max"):
        ours = expected_calibration_error(y, p, n_bins=n_bins, norm=norm)
        assert ours == pytest.approx(_torchmetrics_ce(y, p, n_bins, norm), abs=TOL)


def test_probability_one_goes_to_last_bin_documented_torchmetrics_difference():
    # torchmetrics gives y_prob == 1.0 its own (n_bins+1)-th bin; we keep it in the last bin, like numpy.histogram
    # and sklearn's calibration_curve. Hand computation with 2 bins: last bin {0.75 (y=1), 1.0 (y=0)}.
    y = np.array([0, 1, 0])
    p = np.array([0.25, 0.75, 1.0])
    expected = (1 / 3) * 0.25 + (2 / 3) * abs(0.5 - 0.875)
    assert expected_calibration_error(y, p, n_bins=2) == pytest.approx(expected, abs=1e-15)
    assert _torchmetrics_ce(y, p, 2, "l1") != pytest.approx(expected, abs=1e-3)
    assert reliability_curve(y, p, n_bins=2).counts.tolist() == [1, 2]


def test_mce_equals_torchmetrics_max(rng):
    y, p = _skewed(rng, 800)
    assert maximum_calibration_error(y, p, n_bins=12) == pytest.approx(_torchmetrics_ce(y, p, 12, "max"), abs=TOL)


def test_debiased_l2_matches_torchmetrics_internal_estimator(rng):
    tm_impl = pytest.importorskip("torchmetrics.functional.classification.calibration_error")
    for n in (60, 400, 3000):
        y, p = _skewed(rng, n)
        ref = tm_impl._ce_compute(torch.tensor(p), torch.tensor(y, dtype=torch.float64), 15, norm="l2",
                                  debias=True).item()
        assert debiased_l2_calibration_error(y, p, n_bins=15) == pytest.approx(ref, abs=TOL)


def test_debiased_l2_removes_plugin_bias_on_calibrated_data(rng):
    # On perfectly calibrated data the true L2 calibration error is 0. The plug-in estimate is inflated by
    # label noise (about sqrt(n_bins * var / n)); the debiased estimate should be much smaller on average.
    plugin, debiased = [], []
    for _ in range(50):
        p = rng.uniform(size=500)
        y = (rng.uniform(size=500) < p).astype(int)
        plugin.append(expected_calibration_error(y, p, n_bins=15, norm="l2") ** 2)
        debiased.append(debiased_l2_calibration_error(y, p, n_bins=15) ** 2)
    assert np.mean(debiased) < 0.25 * np.mean(plugin)


# --------------------------------------------------------------------------- reliability curve vs sklearn
@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
@pytest.mark.parametrize("n_bins", [5, 10, 15])
def test_reliability_curve_matches_sklearn_calibration_curve(rng, strategy, n_bins):
    # Continuous data with n=1000: quantile edges fall strictly between data points and no value sits on a
    # uniform edge, so sklearn's right-closed and our left-closed bins hold the same samples.
    y, p = _skewed(rng, 1000)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=n_bins, strategy=strategy)
    curve = reliability_curve(y, p, n_bins=n_bins, strategy=strategy)
    m = curve.nonempty
    np.testing.assert_allclose(curve.fraction_positive[m], prob_true, atol=TOL, rtol=0)
    np.testing.assert_allclose(curve.mean_predicted[m], prob_pred, atol=TOL, rtol=0)
    assert curve.counts.sum() == y.size


def test_quantile_ece_has_equal_mass_bins(rng):
    y, p = _skewed(rng, 1500)
    curve = reliability_curve(y, p, n_bins=10, strategy="quantile")
    assert set(curve.counts.tolist()) == {150}
    # same definition as the uniform ECE, only the edges differ
    direct = np.sum(curve.weights * np.abs(curve.gaps))
    assert expected_calibration_error(y, p, n_bins=10, strategy="quantile") == pytest.approx(direct, abs=1e-15)


def test_ece_known_value_from_torchmetrics_docs():
    y = [0, 0, 1, 1, 1]
    p = [0.25, 0.25, 0.55, 0.75, 0.75]
    assert expected_calibration_error(y, p, n_bins=2, norm="l1") == pytest.approx(0.29, abs=1e-12)
    assert expected_calibration_error(y, p, n_bins=2, norm="max") == pytest.approx(0.3166666666666667, abs=1e-12)


# --------------------------------------------------------------------------- Brier, NLL, AUROC vs sklearn
def test_brier_matches_sklearn(rng):
    y, p = _skewed(rng, 700)
    assert brier_score(y, p) == pytest.approx(brier_score_loss(y, p), abs=TOL)


def test_nll_matches_sklearn_including_clipped_extremes(rng):
    y, p = _skewed(rng, 700)
    p[:5] = 0.0  # some confident mistakes and hits at the extremes exercise the clipping
    p[5:10] = 1.0
    assert negative_log_likelihood(y, p) == pytest.approx(log_loss(y, p, labels=[0, 1]), abs=TOL)
    assert np.isfinite(negative_log_likelihood([1], [0.0]))


def test_auroc_matches_sklearn_with_ties(rng):
    y, p = _skewed(rng, 900)
    assert auroc(y, p) == pytest.approx(roc_auc_score(y, p), abs=TOL)
    coarse = np.round(p, 1)  # many ties
    assert auroc(y, coarse) == pytest.approx(roc_auc_score(y, coarse), abs=TOL)
    logits = np.log(p + 1e-9) * 7  # any finite score works for AUROC
    assert auroc(y, logits) == pytest.approx(roc_auc_score(y, logits), abs=TOL)


def test_auroc_single_class_is_a_clear_error():
    with pytest.raises(ValueError, match="only class 1.*both classes"):
        auroc([1, 1, 1], [0.2, 0.5, 0.9])


# --------------------------------------------------------------------------- smooth ECE
def _smooth_ece_direct(y, p, sigma, n_grid=8001, n_images=2):
    """smECE_sigma by direct numerical integration of the reflected-kernel smoother (no binning, no FFT)."""
    t = np.linspace(0.0, 1.0, n_grid)
    r = y - p
    acc = np.zeros_like(t)
    for k in range(-n_images, n_images + 1):
        for sign in (1.0, -1.0):
            centre = sign * p + 2 * k
            acc += (np.exp(-0.5 * ((t[:, None] - centre[None, :]) / sigma) ** 2) * r).sum(axis=1)
    acc /= sigma * np.sqrt(2 * np.pi) * p.size
    return np.trapezoid(np.abs(acc), t)


@pytest.mark.parametrize("sigma,tol", [(0.005, 2e-4), (0.03, 1e-5), (0.1, 1e-5), (0.4, 1e-5)])
def test_smooth_ece_at_fixed_bandwidth_matches_direct_integration(rng, sigma, tol):
    p = rng.uniform(size=300)
    y = (rng.uniform(size=300) < 0.5 + 0.35 * np.sin(6 * p)).astype(int)  # residual sign changes along p
    assert smooth_ece(y, p, bandwidth=sigma) == pytest.approx(_smooth_ece_direct(y, p, sigma), abs=tol)


def test_smooth_ece_is_the_bandwidth_fixed_point(rng):
    y, p = _skewed(rng, 1000)
    value, sigma = smooth_ece(y, p, return_bandwidth=True)
    assert value == pytest.approx(sigma, abs=1e-8)
    assert smooth_ece(y, p, bandwidth=sigma) == pytest.approx(sigma, abs=1e-8)


def test_smooth_ece_small_when_calibrated_and_tracks_true_miscalibration(rng, calibrated_probs):
    y, p = calibrated_probs
    assert smooth_ece(y, p) < 0.03
    # Constant shift: truth = p + 0.15 on p in [0, 0.7], so every residual has mean 0.15 and smECE -> 0.15.
    p2 = rng.uniform(0.0, 0.7, size=20000)
    y2 = (rng.uniform(size=p2.size) < p2 + 0.15).astype(int)
    assert smooth_ece(y2, p2) == pytest.approx(0.15, abs=0.01)


# --------------------------------------------------------------------------- bootstrap
@pytest.mark.parametrize("name", METRICS.names())
def test_bootstrap_ci_works_for_every_metric(calibrated_probs, name):
    y, p = calibrated_probs
    point, lo, hi = bootstrap_ci(name, y[:600], p[:600], n_boot=60, seed=1)
    assert lo <= hi
    assert point == pytest.approx(METRICS.get(name)(y[:600], p[:600]))
    assert (point, lo, hi) == bootstrap_ci(name, y[:600], p[:600], n_boot=60, seed=1)  # reproducible


def test_bootstrap_ci_covers_the_population_value(rng):
    # Brier score of a known model: population value E[(p - y)^2] = E[p(1-p)] for calibrated p ~ U(0, 1) = 1/6.
    covered = 0
    trials = 40
    for seed in range(trials):
        p = rng.uniform(size=400)
        y = (rng.uniform(size=400) < p).astype(int)
        _, lo, hi = bootstrap_ci(brier_score, y, p, n_boot=300, alpha=0.1, seed=seed)
        covered += lo <= 1 / 6 <= hi
    # nominal 90 %; binomial(40, 0.9) is >= 30 with probability > 0.99
    assert covered >= 30


def test_bootstrap_ci_narrows_with_more_data(rng):
    widths = []
    for n in (200, 3200):
        p = rng.uniform(size=n)
        y = (rng.uniform(size=n) < p).astype(int)
        _, lo, hi = bootstrap_ci("ece", y, p, n_boot=200)
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2


def test_bootstrap_ci_accepts_partial_and_reports_unstratified_class_loss():
    y = np.array([1] * 19 + [0])
    p = np.linspace(0.05, 0.95, 20)
    point, lo, hi = bootstrap_ci(partial(expected_calibration_error, n_bins=5), y, p, n_boot=50)
    assert point == expected_calibration_error(y, p, n_bins=5)
    assert lo <= hi
    with pytest.raises(ValueError, match="stratify=True"):
        bootstrap_ci("auroc", y, p, n_boot=200, stratify=False, seed=0)
    bootstrap_ci("auroc", y, p, n_boot=200, stratify=True)  # both classes kept in every resample


def test_bootstrap_ci_rejects_bad_options(calibrated_probs):
    y, p = calibrated_probs
    with pytest.raises(ValueError, match="unknown metric 'eceee'.*known: auroc"):
        bootstrap_ci("eceee", y, p)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci("ece", y, p, n_boot=0)
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci("ece", y, p, alpha=1.5)


# --------------------------------------------------------------------------- bad input
ALL_PROB_METRICS = [expected_calibration_error, maximum_calibration_error, debiased_l2_calibration_error,
                    smooth_ece, brier_score, negative_log_likelihood]


@pytest.mark.parametrize("metric", ALL_PROB_METRICS + [auroc])
@pytest.mark.parametrize(
    "y,p,match",
    [
        ([0, 1, 2], [0.1, 0.2, 0.3], r"only the binary labels 0 and 1.*\(y == positive_label\)"),
        ([0, 1, 1], [0.1, np.nan, 0.3], r"y_prob contains 1 NaN.*index 1"),
        ([0, np.nan, 1], [0.1, 0.2, 0.3], r"y_true contains 1 NaN"),
        ([0, 1], [0.1, 0.2, 0.3], r"y_true has 2 samples but y_prob has 3"),
        ([], [], r"empty"),
        ([[0, 1], [1, 0]], [0.1, 0.2], r"must be 1-D"),
        (["a", "b"], [0.1, 0.2], r"numeric"),
    ],
)
def test_bad_input_raises_clear_value_error(metric, y, p, match):
    with pytest.raises(ValueError, match=match):
        metric(y, p)


@pytest.mark.parametrize("metric", ALL_PROB_METRICS)
def test_probabilities_outside_unit_interval_are_rejected_with_advice(metric):
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\].*expit"):
        metric([0, 1, 1], [-0.2, 0.5, 1.3])


def test_bad_binning_options():
    with pytest.raises(ValueError, match="n_bins=0"):
        expected_calibration_error([0, 1], [0.2, 0.8], n_bins=0)
    with pytest.raises(ValueError, match="strategy='equal'.*'uniform', 'quantile'"):
        expected_calibration_error([0, 1], [0.2, 0.8], strategy="equal")
    with pytest.raises(ValueError, match="norm='l3'"):
        expected_calibration_error([0, 1], [0.2, 0.8], norm="l3")


def test_inputs_accept_lists_bools_columns_and_tensors(calibrated_probs):
    y, p = calibrated_probs
    ref = expected_calibration_error(y, p)
    assert expected_calibration_error(y.astype(bool), p[:, None]) == ref
    assert expected_calibration_error(list(y), list(p)) == ref
    assert expected_calibration_error(torch.tensor(y), torch.tensor(p)) == ref
