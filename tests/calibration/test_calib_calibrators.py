"""Calibrators: scikit-learn references, calibration improvement, estimator contract, JSON persistence."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.exceptions import NotFittedError
from sklearn.frozen import FrozenEstimator
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

import thinkctl
from thinkctl.calibration import (
    CALIBRATORS,
    BaseCalibrator,
    HistogramBinning,
    IsotonicCalibrator,
    PlattScaler,
    TemperatureScaler,
    auroc,
    expected_calibration_error,
    load_calibrator,
    make_calibrator,
)
from thinkctl.registry import UnknownNameError

ALL = ["temperature", "platt", "isotonic", "histogram"]


class _ScoreAsDecision(ClassifierMixin, BaseEstimator):
    """A 'classifier' whose decision function is its single input column, to feed raw scores to sklearn."""

    def fit(self, X, y):
        self.classes_ = np.array([0, 1])
        return self

    def decision_function(self, X):
        return np.asarray(X)[:, 0]

    def predict(self, X):
        return (self.decision_function(X) > 0).astype(int)


def _sklearn_calibrated(method, z, y, z_eval):
    X = z[:, None]
    cal = CalibratedClassifierCV(FrozenEstimator(_ScoreAsDecision().fit(X, y)), method=method).fit(X, y)
    return cal.predict_proba(z_eval[:, None])[:, 1]


# --------------------------------------------------------------------------- references
def test_temperature_matches_sklearn_temperature_scaling(miscalibrated):
    y, z, _ = miscalibrated
    ours = TemperatureScaler().fit(z[:2000], y[:2000])
    ref = _sklearn_calibrated("temperature", z[:2000], y[:2000], z[2000:])
    # both minimise the same convex NLL over one scalar; differences are the optimisers' tolerances
    np.testing.assert_allclose(ours.predict_proba(z[2000:]), ref, atol=1e-6)


def test_temperature_on_probabilities_equals_temperature_on_logits(miscalibrated):
    y, z, _ = miscalibrated
    from_logits = TemperatureScaler().fit(z, y)
    from_probs = TemperatureScaler(input_type="probability").fit(expit(z), y)
    assert from_probs.temperature_ == pytest.approx(from_logits.temperature_, rel=1e-6)
    np.testing.assert_allclose(from_probs.predict_proba(expit(z)), from_logits.predict_proba(z), atol=1e-8)


def test_temperature_recovers_known_temperature(rng, miscalibrated_factory):
    y, z, _ = miscalibrated_factory(rng, 20000, scale=3.0, shift=0.0)
    assert TemperatureScaler().fit(z, y).temperature_ == pytest.approx(3.0, rel=0.05)


def test_platt_matches_sklearn_sigmoid_calibration(miscalibrated):
    y, z, _ = miscalibrated
    ours = PlattScaler().fit(z[:2000], y[:2000])
    ref = _sklearn_calibrated("sigmoid", z[:2000], y[:2000], z[2000:])
    np.testing.assert_allclose(ours.predict_proba(z[2000:]), ref, atol=1e-7)


def test_platt_without_target_smoothing_is_unpenalised_logistic_regression(rng, miscalibrated_factory):
    y, z, _ = miscalibrated_factory(rng, 40000)
    ours = PlattScaler(platt_targets=False).fit(z, y)
    lr = LogisticRegression(C=np.inf, solver="newton-cholesky", tol=1e-12).fit(z[:, None], y)
    assert ours.slope_ == pytest.approx(lr.coef_[0, 0], abs=1e-8)
    assert ours.intercept_ == pytest.approx(lr.intercept_[0], abs=1e-8)
    # the generating model: y ~ sigmoid((z - 1) / 3) -> slope 1/3, intercept -1/3 (standard errors ~0.004, ~0.012)
    assert ours.slope_ == pytest.approx(1 / 3, abs=0.02)
    assert ours.intercept_ == pytest.approx(-1 / 3, abs=0.06)


def test_isotonic_matches_sklearn_isotonic_regression(rng, miscalibrated):
    y, z, _ = miscalibrated
    ours = IsotonicCalibrator().fit(z[:2000], y[:2000])
    ref = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(z[:2000], y[:2000])
    z_eval = np.concatenate([z[2000:], rng.normal(scale=20, size=200)])  # includes out-of-range scores
    np.testing.assert_allclose(ours.predict_proba(z_eval), ref.predict(z_eval), atol=1e-12)
    np.testing.assert_array_equal(ours.X_thresholds_, ref.X_thresholds_)


def test_isotonic_decreasing(rng):
    s = rng.uniform(size=500)
    y = (rng.uniform(size=500) < 1 - s).astype(int)
    iso = IsotonicCalibrator(increasing=False).fit(s, y)
    p = iso.predict_proba(np.linspace(0, 1, 50))
    assert np.all(np.diff(p) <= 0) and p[0] > p[-1]


def test_histogram_binning_by_hand():
    x = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9])
    y = np.array([0, 0, 1, 0, 1, 1, 0, 1])
    hb = HistogramBinning(n_bins=2, strategy="quantile").fit(x, y)
    np.testing.assert_allclose(hb.edges_, [0.5])
    np.testing.assert_allclose(hb.bin_values_, [0.25, 0.75])
    np.testing.assert_allclose(hb.predict_proba([-5.0, 0.5, 0.49, 7.0]), [0.25, 0.75, 0.25, 0.75])


def test_histogram_binning_fills_empty_bins_by_interpolation():
    x = np.array([0.0, 0.05, 0.1, 0.95, 1.0])
    y = np.array([0, 0, 0, 1, 1])
    hb = HistogramBinning(n_bins=4, strategy="uniform").fit(x, y)
    assert hb.bin_counts_.tolist() == [3, 0, 0, 2]
    np.testing.assert_allclose(hb.bin_values_, [0.0, 1 / 3, 2 / 3, 1.0])


def test_histogram_binning_merges_tied_quantile_edges():
    x = np.array([0.0] * 50 + [1.0] * 50)
    y = np.array([0] * 40 + [1] * 10 + [0] * 10 + [1] * 40)
    hb = HistogramBinning(n_bins=10).fit(x, y)
    np.testing.assert_allclose(hb.predict_proba([0.0, 1.0]), [0.2, 0.8])


# --------------------------------------------------------------------------- calibration actually improves
@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("input_type", ["logit", "probability"])
def test_calibrator_cuts_ece_on_miscalibrated_data(miscalibrated, name, input_type):
    y, z, _ = miscalibrated
    x = z if input_type == "logit" else expit(z)
    kwargs = {"input_type": input_type} if name in ("temperature", "platt") else {}
    before = expected_calibration_error(y[2000:], expit(z[2000:]))
    cal = make_calibrator(name, **kwargs).fit(x[:2000], y[:2000])
    after = expected_calibration_error(y[2000:], cal.predict_proba(x[2000:]))
    assert before > 0.1  # the synthetic predictor is badly calibrated ...
    # ... temperature cannot remove the shift, the others can; all cut the error substantially
    assert after < (0.6 if name == "temperature" else 0.35) * before


@pytest.mark.parametrize("name", ["temperature", "platt"])
def test_monotone_parametric_calibrators_keep_the_ranking(miscalibrated, name):
    y, z, _ = miscalibrated
    cal = make_calibrator(name).fit(z, y)
    assert auroc(y, cal.predict_proba(z)) == pytest.approx(auroc(y, z), abs=1e-12)


# --------------------------------------------------------------------------- estimator contract
@pytest.mark.parametrize("name", ALL)
def test_unfitted_calibrator_raises_not_fitted(name):
    cal = make_calibrator(name)
    with pytest.raises(NotFittedError):
        cal.predict_proba([0.1, 0.2])
    with pytest.raises(NotFittedError):
        cal.predict([0.1, 0.2])
    with pytest.raises(NotFittedError):
        cal.to_dict()


@pytest.mark.parametrize("name", ALL)
def test_estimator_contract(miscalibrated, name):
    y, z, _ = miscalibrated
    x = expit(z)
    cal = make_calibrator(name)
    assert not [k for k in vars(cal) if k.endswith("_")]  # __init__ stores arguments only
    assert cal.fit(x, y) is cal
    p = cal.predict_proba(x)
    assert p.shape == (x.size,) and p.min() >= 0 and p.max() <= 1
    np.testing.assert_array_equal(cal.predict(x), (p >= 0.5).astype(int))
    np.testing.assert_array_equal(cal.predict_proba(x[:, None]), p)  # a single column is accepted
    twin = clone(cal)
    assert twin.get_params() == cal.get_params()
    with pytest.raises(NotFittedError):
        twin.predict_proba(x)


@pytest.mark.parametrize("name", ALL)
def test_fit_rejects_bad_data(name):
    cal = make_calibrator(name)
    with pytest.raises(ValueError, match="only class 1.*both"):
        cal.fit([0.1, 0.2, 0.3], [1, 1, 1])
    with pytest.raises(ValueError, match="NaN"):
        cal.fit([0.1, np.nan, 0.3], [0, 1, 1])
    with pytest.raises(ValueError, match="X has 3 samples but y has 2"):
        cal.fit([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="binary labels"):
        cal.fit([0.1, 0.2, 0.3], [0, 1, 2])
    with pytest.raises(ValueError, match="empty"):
        cal.fit([], [])


def test_probability_input_is_checked():
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        TemperatureScaler(input_type="probability").fit([0.1, 1.5, 0.3], [0, 1, 1])
    with pytest.raises(ValueError, match="input_type='prob'.*'logit', 'probability'"):
        PlattScaler(input_type="prob").fit([0.1, 0.5], [0, 1])
    with pytest.raises(ValueError, match="n_bins"):
        HistogramBinning(n_bins=0).fit([0.1, 0.5], [0, 1])


# --------------------------------------------------------------------------- registry
def test_registry_and_factory():
    assert CALIBRATORS.names() == ["histogram", "isotonic", "platt", "temperature"]
    assert isinstance(make_calibrator("platt", platt_targets=False), PlattScaler)
    with pytest.raises(UnknownNameError, match="unknown calibrator 'beta'; known: histogram, isotonic"):
        make_calibrator("beta")
    with pytest.raises(ValueError, match=r"no parameter\(s\) \['bins'\].*\['n_bins', 'strategy'\]"):
        make_calibrator("histogram", bins=3)


# --------------------------------------------------------------------------- persistence
@pytest.mark.parametrize("name", ALL)
def test_json_round_trip_gives_identical_predictions(tmp_path, rng, miscalibrated, name):
    y, z, _ = miscalibrated
    x = expit(z)
    cal = make_calibrator(name).fit(x[:2000], y[:2000])
    x_new = np.concatenate([x[2000:], rng.uniform(size=100), [0.0, 1.0]])
    via_dict = type(cal).from_dict(json.loads(json.dumps(cal.to_dict())))
    np.testing.assert_array_equal(via_dict.predict_proba(x_new), cal.predict_proba(x_new))
    path = cal.save(tmp_path / "sub" / f"{name}.json", metadata={"model": "tiny", "layer": 3})
    text = path.read_text()
    doc = json.loads(text)
    assert doc["kind"] == name and doc["thinkctl_version"] == thinkctl.__version__
    assert "pickle" not in text
    for loaded in (type(cal).load(path), load_calibrator(path), BaseCalibrator.load(path),
                   load_calibrator(path, expected_metadata={"model": "tiny"})):
        assert type(loaded) is type(cal)
        assert loaded.get_params() == cal.get_params()
        np.testing.assert_array_equal(loaded.predict_proba(x_new), cal.predict_proba(x_new))


def test_loading_checks_version_kind_and_metadata(tmp_path, miscalibrated):
    y, z, _ = miscalibrated
    doc = TemperatureScaler().fit(z, y).to_dict(metadata={"model": "tiny"})
    with pytest.raises(ValueError, match="holds a 'temperature', expected 'platt'"):
        PlattScaler.from_dict(doc)
    old = dict(doc, thinkctl_version="9.0.0")
    with pytest.raises(ValueError, match="saved by thinkctl 9.0.0.*not compatible.*installed"):
        TemperatureScaler.from_dict(old)
    with pytest.raises(ValueError, match="layout"):
        TemperatureScaler.from_dict(dict(doc, format_version=99))
    with pytest.raises(ValueError, match="not a thinkctl calibration file"):
        TemperatureScaler.from_dict({"temperature": 2.0})
    with pytest.raises(ValueError, match="model: saved 'tiny', expected 'big'"):
        TemperatureScaler.from_dict(doc, expected_metadata={"model": "big"})
    with pytest.raises(ValueError, match="no file at"):
        load_calibrator(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_calibrator(bad)


def test_damaged_files_give_clear_errors(miscalibrated):
    y, z, _ = miscalibrated
    doc = HistogramBinning().fit(z, y).to_dict()
    with pytest.raises(ValueError, match=r"parameters \['bins'\] that HistogramBinning does not take"):
        BaseCalibrator.from_dict(dict(doc, params={"bins": 3}))
    with pytest.raises(ValueError, match="incomplete 'histogram' state"):
        BaseCalibrator.from_dict(dict(doc, state={"edges": [0.0]}))
