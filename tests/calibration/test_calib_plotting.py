"""Plots draw what the compute functions return, on the axes they are given."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

from thinkctl.calibration import (
    confidence_histogram,
    expected_calibration_error,
    learn_then_test,
    reliability_curve,
    reliability_diagram,
    risk_curve,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _curve_line(ax):
    return next(line for line in ax.get_lines() if line.get_gid() != "thinkctl-diagonal")


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_reliability_diagram_plots_the_curve_diagonal_and_counts(calibrated_probs, strategy):
    y, p = calibrated_probs
    ax = reliability_diagram(y, p, n_bins=10, strategy=strategy, label="probe")
    curve = reliability_curve(y, p, n_bins=10, strategy=strategy)
    diag = [line for line in ax.get_lines() if line.get_gid() == "thinkctl-diagonal"]
    assert len(diag) == 1 and list(diag[0].get_xdata()) == [0, 1]
    line = _curve_line(ax)
    np.testing.assert_allclose(line.get_xdata(), curve.mean_predicted[curve.nonempty])
    np.testing.assert_allclose(line.get_ydata(), curve.fraction_positive[curve.nonempty])
    heights = [r.get_height() for r in ax.patches]
    np.testing.assert_allclose(heights, curve.weights[curve.nonempty])
    counts = [int(t.get_text()) for t in ax.texts]
    assert counts == curve.counts[curve.nonempty].tolist()
    ece = expected_calibration_error(y, p, n_bins=10, strategy=strategy)
    assert line.get_label() == f"probe (ECE = {ece:.3f})"


def test_reliability_diagram_uses_given_axes_and_overlays(calibrated_probs):
    y, p = calibrated_probs
    fig = Figure()
    ax = fig.add_subplot()
    out = reliability_diagram(y, p, ax=ax, show_counts=False)
    out = reliability_diagram(y, np.clip(p * 1.3, 0, 1), ax=ax, show_counts=False, color="red")
    assert out is ax
    assert len([line for line in ax.get_lines() if line.get_gid() == "thinkctl-diagonal"]) == 1
    assert len(ax.patches) == 0 and len(ax.texts) == 0
    assert len(ax.get_lines()) == 3


def test_reliability_diagram_creates_axes_when_none(calibrated_probs):
    y, p = calibrated_probs
    n_before = len(plt.get_fignums())
    ax = reliability_diagram(y, p)
    assert len(plt.get_fignums()) == n_before + 1
    assert ax.get_xlim() == (0, 1)


def test_confidence_histogram_counts_and_lines(calibrated_probs):
    y, p = calibrated_probs
    ax = confidence_histogram(p, n_bins=10, y_true=y)
    heights = [r.get_height() for r in ax.patches]
    np.testing.assert_array_equal(heights, np.histogram(p, bins=np.linspace(0, 1, 11))[0])
    vlines = [line.get_xdata()[0] for line in ax.get_lines()]
    np.testing.assert_allclose(vlines, [p.mean(), y.mean()])


def test_risk_curve_marks_epsilon_and_chosen(rng):
    s = rng.uniform(size=800)
    harm = (rng.uniform(size=800) < 0.6 * (1 - s)).astype(float)
    grid = np.linspace(0, 1, 21)
    res = learn_then_test(s, harm, grid, 0.1, 0.1)
    ax = risk_curve(res)
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_allclose(lines["empirical risk"].get_xdata(), grid)
    assert list(lines["epsilon = 0.1"].get_ydata()) == [0.1, 0.1]
    assert lines[f"chosen = {res.chosen:g}"].get_xdata()[0] == res.chosen
    assert len(lines[f"certified ({res.valid_thresholds.size})"].get_xdata()) == res.valid_thresholds.size


def test_risk_curve_without_a_chosen_threshold_says_so():
    res = learn_then_test(np.ones(20), np.zeros(20), [0.5, 0.9], 0.05, 0.05)
    ax = risk_curve(res, show_p_values=False)
    assert "no threshold certified" in ax.get_title()
    assert not any(line.get_label().startswith("chosen") for line in ax.get_lines())


def test_plots_validate_inputs():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        reliability_diagram([0, 1], [0.5, 2.0])
    with pytest.raises(ValueError, match="y_true has 2 samples but y_prob has 3"):
        confidence_histogram([0.1, 0.2, 0.3], y_true=[0, 1])
    with pytest.raises(ValueError, match="LTTResult"):
        risk_curve({"chosen": 0.5})
