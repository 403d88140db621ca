"""The Examples sections of thinkctl.calibration stay runnable and public names stay importable."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest

import thinkctl.calibration as calibration

MODULES = [
    "thinkctl.calibration",
    "thinkctl.calibration.metrics",
    "thinkctl.calibration.calibrators",
    "thinkctl.calibration.risk_control",
    "thinkctl.calibration.plotting",
    "thinkctl.calibration.report",
]

REQUIRED = [
    "TemperatureScaler", "PlattScaler", "IsotonicCalibrator", "HistogramBinning", "expected_calibration_error",
    "maximum_calibration_error", "brier_score", "negative_log_likelihood", "auroc", "bootstrap_ci",
    "reliability_diagram", "confidence_histogram", "risk_curve", "learn_then_test", "RiskControlledThreshold",
    "calibration_report", "make_calibrator", "CALIBRATORS",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted > 0, f"{name} has no runnable Examples section"


def test_public_names():
    assert set(REQUIRED) <= set(calibration.__all__)
    for name in calibration.__all__:
        assert getattr(calibration, name) is not None


def test_plots_draw_on_the_given_axes_what_the_metrics_compute():
    from matplotlib.figure import Figure
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(0)
    y_prob = rng.random(400)
    y_true = (rng.random(400) < y_prob).astype(int)

    ax = Figure().subplots()  # no pyplot: the functions draw where they are told
    assert calibration.reliability_diagram(y_true, y_prob, n_bins=10, ax=ax) is ax
    (curve,) = [line for line in ax.lines if line.get_label().startswith("ECE")]
    prob_true, prob_pred = calibration_curve(y_true, y_prob, n_bins=10)
    np.testing.assert_allclose(curve.get_xdata(), prob_pred)
    np.testing.assert_allclose(curve.get_ydata(), prob_true)
    ece = calibration.expected_calibration_error(y_true, y_prob, n_bins=10)
    assert curve.get_label() == f"ECE = {ece:.3f}"

    ax = Figure().subplots()
    assert calibration.confidence_histogram(y_prob, ax=ax) is ax and len(ax.patches) > 0

    result = calibration.learn_then_test(y_prob, (y_prob < 0.5) * y_true, np.linspace(0, 1, 11), 0.2, 0.1)
    ax = Figure().subplots()
    assert calibration.risk_curve(result, ax=ax) is ax
    (risk,) = [line for line in ax.lines if line.get_label() == "empirical risk"]
    order = np.argsort(result.thresholds)
    np.testing.assert_allclose(risk.get_ydata(), result.risks[order])
