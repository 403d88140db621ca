"""Training a bundle from a trace store: splits by problem, finds the informative layer, reports held-out AUROC."""

from __future__ import annotations


import pytest

from thinkctl.bundle import BundleLayout
from thinkctl.predictors import HiddenStateProbe
from thinkctl.predictors.from_traces import PredictorTrainingConfig, problem_split, train_predictors

HIDDEN = 16


def test_split_is_by_problem_and_disjoint():
    ids = [f"p{i}" for i in range(100)] * 3
    split = problem_split(ids, PredictorTrainingConfig(seed=3))
    sets = [set(split[k]) for k in ("train", "calib", "test")]
    assert sum(len(s) for s in sets) == 100
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert split == problem_split(ids, PredictorTrainingConfig(seed=3))


def test_bundle_finds_the_informative_layer_and_reports_heldout_auroc(tmp_path, synthetic_store):
    store = synthetic_store(tmp_path / "traces")
    rep = train_predictors(store, tmp_path / "bundle", PredictorTrainingConfig(n_bootstrap=100))
    assert rep["confidence"]["layer"] == 1
    auc = rep["confidence"]["test_auroc"]
    assert auc["value"] > 0.9 and auc["ci95"][0] <= auc["value"] <= auc["ci95"][1]
    assert rep["confidence"]["baseline_token_confidence_auroc"]["value"] < 0.7  # noise feature
    assert rep["difficulty"]["prompt_probe_test_auroc"]["value"] > 0.6
    assert rep["difficulty"]["lightgbm_test_auroc"]["value"] > 0.6
    bundle = BundleLayout(tmp_path / "bundle").read_manifest()
    assert bundle["confidence_layer"] == 1 and set(bundle["split"]) == {"train", "calib", "test"}
    probe = HiddenStateProbe.load(tmp_path / "bundle" / "confidence_probe")
    with pytest.raises(ValueError, match="toy-model|hidden"):
        probe.check_compatible(model_name="another-model", hidden_size=HIDDEN, layer=1)


def test_bad_split_fractions():
    with pytest.raises(ValueError, match="calib_fraction"):
        PredictorTrainingConfig(calib_fraction=0.5, test_fraction=0.45)
