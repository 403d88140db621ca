"""Calibration: honest probabilities and risk-controlled thresholds from raw predictor scores.

* **Calibrators** (scikit-learn estimators on 1-D scores; ``predict_proba`` returns shape ``(n_samples,)``, the
  positive-class probability; JSON persistence): :class:`TemperatureScaler`, :class:`PlattScaler`,
  :class:`IsotonicCalibrator`, :class:`HistogramBinning`, by name through :data:`CALIBRATORS` /
  :func:`make_calibrator`.
* **Metrics** on binary labels and positive-class probabilities, matching scikit-learn and torchmetrics where
  definitions coincide: :func:`expected_calibration_error`, :func:`maximum_calibration_error`,
  :func:`debiased_l2_calibration_error` (Kumar et al. 2019), :func:`smooth_ece` (Błasiok & Nakkiran 2023),
  :func:`brier_score`, :func:`negative_log_likelihood`, :func:`auroc`, with :func:`bootstrap_ci` for intervals.
* **Risk control**: :func:`learn_then_test` and :class:`RiskControlledThreshold` (Learn then Test, fixed-sequence
  testing) for decisions such as "stop thinking now"; :func:`early_stopping_losses` builds their losses.
* **Plots and reports**: :func:`reliability_diagram`, :func:`confidence_histogram`, :func:`risk_curve`,
  :func:`calibration_report`.

Examples
--------
>>> import numpy as np
>>> from thinkctl.calibration import TemperatureScaler, expected_calibration_error
>>> rng = np.random.default_rng(0)
>>> z = rng.normal(scale=4.0, size=2000)                           # logits 4x too confident
>>> y = (rng.uniform(size=2000) < 1 / (1 + np.exp(-z / 4.0))).astype(int)
>>> ts = TemperatureScaler().fit(z[:1000], y[:1000])
>>> before = expected_calibration_error(y[1000:], 1 / (1 + np.exp(-z[1000:])))
>>> after = expected_calibration_error(y[1000:], ts.predict_proba(z[1000:]))
>>> bool(after < before / 2)
True
"""

from __future__ import annotations

from thinkctl.calibration.calibrators import (
    CALIBRATORS,
    BaseCalibrator,
    HistogramBinning,
    IsotonicCalibrator,
    PlattScaler,
    TemperatureScaler,
    load_calibrator,
    make_calibrator,
)
from thinkctl.calibration.metrics import (
    METRICS,
    ReliabilityCurve,
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
from thinkctl.calibration.plotting import confidence_histogram, reliability_diagram, risk_curve
from thinkctl.calibration.report import CalibrationReport, ReportConfig, calibration_report
from thinkctl.calibration.risk_control import (
    LTTResult,
    RiskControlledThreshold,
    early_stopping_losses,
    learn_then_test,
    min_calibration_size,
)

__all__ = [
    # calibrators
    "TemperatureScaler",
    "PlattScaler",
    "IsotonicCalibrator",
    "HistogramBinning",
    "BaseCalibrator",
    "CALIBRATORS",
    "make_calibrator",
    "load_calibrator",
    # metrics
    "expected_calibration_error",
    "maximum_calibration_error",
    "debiased_l2_calibration_error",
    "smooth_ece",
    "brier_score",
    "negative_log_likelihood",
    "auroc",
    "bootstrap_ci",
    "reliability_curve",
    "ReliabilityCurve",
    "METRICS",
    # risk control
    "learn_then_test",
    "LTTResult",
    "RiskControlledThreshold",
    "early_stopping_losses",
    "min_calibration_size",
    # plots and reports
    "reliability_diagram",
    "confidence_histogram",
    "risk_curve",
    "calibration_report",
    "CalibrationReport",
    "ReportConfig",
]
