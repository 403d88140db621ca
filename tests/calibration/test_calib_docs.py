"""The Examples sections of thinkctl.calibration stay runnable and public names stay importable."""

from __future__ import annotations

import doctest
import importlib

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
    if name != "thinkctl.calibration.plotting" or result.attempted:
        assert result.attempted > 0


def test_public_names():
    assert set(REQUIRED) <= set(calibration.__all__)
    for name in calibration.__all__:
        assert getattr(calibration, name) is not None
