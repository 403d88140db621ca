"""The calibration report: files, numbers consistent with the metric functions, calibrators reloadable."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
from scipy.special import expit

from thinkctl.calibration import (
    BaseCalibrator,
    brier_score,
    calibration_report,
    expected_calibration_error,
)

N_BOOT = 30


@pytest.fixture
def two_predictors(rng, miscalibrated):
    y, z, _ = miscalibrated
    p = rng.beta(2, 2, size=1200)
    y2 = (rng.uniform(size=p.size) < p**2).astype(int)
    return {
        "probe": (y, z),  # logits, split by the report
        "difficulty": {"y_true": y2[:600], "scores": p[:600], "y_true_test": y2[600:], "scores_test": p[600:],
                       "calibrators": ["isotonic"]},
    }


def test_report_writes_self_contained_html_and_json(tmp_path, two_predictors):
    rep = calibration_report(two_predictors, tmp_path / "out", n_boot=N_BOOT, title="Demo <report>")
    assert rep.html_path.exists() and rep.json_path.exists()
    page = rep.html_path.read_text()
    assert "Demo &lt;report&gt;" in page  # escaped
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 2
    assert all(base64.b64decode(img).startswith(b"\x89PNG") for img in images)
    assert not re.search(r"src=['\"](?!data:)", page)  # nothing loaded from elsewhere
    results = json.loads(rep.json_path.read_text())
    assert results == rep.results
    assert results["config"]["n_boot"] == N_BOOT
    probe = results["predictors"]["probe"]
    assert probe["score_type"] == "logit"
    assert list(probe["variants"]) == ["uncalibrated", "temperature", "platt", "isotonic", "histogram"]
    assert list(results["predictors"]["difficulty"]["variants"]) == ["uncalibrated", "isotonic"]
    assert probe["n_calibration"] + probe["n_test"] == 4000
    for variant in probe["variants"].values():
        for m in variant["metrics"].values():
            assert m["ci_low"] <= m["ci_high"]
        assert sum(variant["reliability"]["counts"]) == probe["n_test"]


def test_report_numbers_match_the_metric_functions(tmp_path, two_predictors):
    rep = calibration_report(two_predictors, tmp_path, n_boot=N_BOOT, n_bins=10)
    diff = rep.results["predictors"]["difficulty"]
    entry = two_predictors["difficulty"]
    y_test, p_test = entry["y_true_test"], entry["scores_test"]
    unc = diff["variants"]["uncalibrated"]["metrics"]
    assert unc["ECE"]["value"] == pytest.approx(expected_calibration_error(y_test, p_test, n_bins=10), abs=1e-12)
    assert unc["Brier"]["value"] == pytest.approx(brier_score(y_test, p_test), abs=1e-12)
    iso = diff["variants"]["isotonic"]
    cal = BaseCalibrator.from_dict(iso["calibrator"], expected_metadata={"predictor": "difficulty"})
    p_cal = cal.predict_proba(p_test)
    assert iso["metrics"]["ECE"]["value"] == pytest.approx(expected_calibration_error(y_test, p_cal, n_bins=10),
                                                           abs=1e-12)


def test_report_calibrators_improve_the_miscalibrated_probe(tmp_path, two_predictors):
    rep = calibration_report({"probe": two_predictors["probe"]}, tmp_path, n_boot=N_BOOT)
    variants = rep.results["predictors"]["probe"]["variants"]
    before = variants["uncalibrated"]["metrics"]["ECE"]["value"]
    for name in ("platt", "isotonic", "histogram"):
        assert variants[name]["metrics"]["ECE"]["value"] < 0.5 * before
        # the improvement is larger than the uncertainty: intervals do not overlap
        assert variants[name]["metrics"]["ECE"]["ci_high"] < variants["uncalibrated"]["metrics"]["ECE"]["ci_low"]


def test_report_split_is_stratified_and_seeded(tmp_path, two_predictors):
    a = calibration_report({"probe": two_predictors["probe"]}, tmp_path / "a", n_boot=5, seed=3,
                           calibrators=["platt"])
    b = calibration_report({"probe": two_predictors["probe"]}, tmp_path / "b", n_boot=5, seed=3,
                           calibrators=["platt"])
    assert a.results == b.results
    y = two_predictors["probe"][0]
    probe = a.results["predictors"]["probe"]
    assert probe["positive_rate_test"] == pytest.approx(y.mean(), abs=1e-3)


def test_report_probability_scores_are_used_as_is(tmp_path, rng):
    p = rng.uniform(size=400)
    y = (rng.uniform(size=400) < p).astype(int)
    rep = calibration_report({"p": {"y_true": y, "scores": p, "score_type": "probability"}}, tmp_path,
                             n_boot=5, calibrators=["temperature"])
    entry = rep.results["predictors"]["p"]
    assert entry["score_type"] == "probability"
    assert entry["variants"]["temperature"]["calibrator"]["params"]["input_type"] == "probability"


@pytest.mark.parametrize(
    "entries,kwargs,match",
    [
        ({}, {}, "non-empty mapping"),
        ({"a": ([0, 1],)}, {}, r"\(y_true, scores\) pair"),
        ({"a": {"y_true": [0, 1]}}, {}, "must have keys 'y_true' and 'scores'"),
        ({"a": ([0, 1, 1], [0.1, 0.2])}, {}, "a: y_true has 3 samples but a: scores has 2"),
        ({"a": ([1, 1, 1, 1, 0], [0.1, 0.2, 0.3, 0.4, 0.5])}, {}, "only one class"),
        ({"a": ([0, 1] * 10, list(expit(np.arange(20.0))))}, {"calibrators": ["beta"]}, "unknown calibrator 'beta'"),
        ({"a": {"y_true": [0, 1], "scores": [0.2, 3.0], "score_type": "probability"}}, {}, "leave \\[0, 1\\]"),
        ({"a": ([0, 1] * 10, list(np.linspace(0, 1, 20)))}, {"n_boot": 0}, "n_boot"),
    ],
)
def test_report_rejects_bad_entries(tmp_path, entries, kwargs, match):
    with pytest.raises(ValueError, match=match):
        calibration_report(entries, tmp_path, **kwargs)
