"""Calibrating a bundle: calibrator chosen on calib, ECE measured on test, LTT threshold certified or refused."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import BaseEstimator

from thinkctl.bundle import CONFIDENCE_OOF, RISK_CONTROL, BundleLayout
from thinkctl.calibration.bundle import (OOF_KIND, RISK_CONTROL_KIND, CalibrationConfig, bundle_report_entries,
                                         calibrate_bundle, choose_calibrator, out_of_fold_logits)
from thinkctl.predictors.from_traces import PredictorTrainingConfig, train_predictors


@pytest.fixture(scope="module")
def trained_bundle(tmp_path_factory, synthetic_store):
    """One trained bundle for the module; each test calibrates its own copy (calibration writes into the bundle)."""
    root = tmp_path_factory.mktemp("bundle_calibration")
    store = synthetic_store(root / "traces", n_problems=200)
    train_predictors(store, root / "bundle", PredictorTrainingConfig(n_bootstrap=50))
    return root / "bundle"


@pytest.fixture
def bundle(trained_bundle, tmp_path):
    return Path(shutil.copytree(trained_bundle, tmp_path / "bundle"))


def manifest(bundle):
    return BundleLayout(bundle).read_manifest()


def risk_control(bundle):
    return BundleLayout(bundle).read_document(RISK_CONTROL, RISK_CONTROL_KIND)


SYNTH_POINTS = (8, 16, 24)  # the synthetic store's checkpoints are at 8, 16, 24, 32 thinking tokens


def test_calibration_report_and_threshold(bundle):
    rep = calibrate_bundle(bundle, CalibrationConfig(n_boot=50, epsilon=0.2, delta=0.2, check_points=SYNTH_POINTS))
    assert rep["calibrator"] in rep["cv_brier"]
    cal, raw = rep["test_calibrated"]["ece"], rep["test_uncalibrated"]["ece"]
    assert cal["ci95"][0] <= cal["value"] <= cal["ci95"][1]
    assert cal["value"] < max(raw["value"], 0.1)
    rc = risk_control(bundle)
    lo = CalibrationConfig().thresholds[0]
    assert rc["threshold"] is not None and lo <= rc["threshold"] < 1
    es = rep["test_early_stopping"]
    assert es["thinking_fraction_used_mean"] < 1.0  # the threshold actually stops some samples early
    # the guarantee's units are problems, through their greedy samples (one per problem)
    assert rc["units"].startswith("problems (the greedy sample") and rc["method"] == "binomial"
    assert rc["n_calib_problems"] == rc["n_calib_samples"] == es["n_problems"] == es["n_samples"]
    assert rc["check_points"] == list(SYNTH_POINTS)
    assert manifest(bundle)["calibration"]["stop_threshold"] == rc["threshold"]


def test_impossible_risk_gives_no_threshold_and_says_why(bundle):
    rep = calibrate_bundle(bundle, replace(CalibrationConfig(n_boot=50, train_folds=0), epsilon=1e-4, delta=1e-3))
    assert rep["risk_control"]["threshold"] is None
    assert rep["risk_control"]["reason"]
    assert "test_early_stopping" not in rep


def test_risk_is_certified_per_problem_not_per_sample(tmp_path, synthetic_store):
    """Correlated samples do not count as independent evidence: without greedy rows each problem's loss is the
    mean over its samples (Hoeffding-Bentkus), so n is the number of calib problems."""
    import shutil

    from thinkctl.traces import TraceStore

    store = synthetic_store(tmp_path / "traces", n_problems=200, samples=3)
    for shard in sorted(store.path.glob("shard-*.jsonl")):  # forget which sample was greedy
        shard.write_text(shard.read_text().replace('"greedy": true', '"greedy": false'))
    train_predictors(TraceStore(store.path), tmp_path / "bundle", PredictorTrainingConfig(n_bootstrap=50))
    rep = calibrate_bundle(tmp_path / "bundle", CalibrationConfig(n_boot=50, epsilon=0.2, delta=0.2, train_folds=0,
                                                                  check_points=SYNTH_POINTS))
    rc = rep["risk_control"]
    assert rc["method"] == "hoeffding-bentkus" and rc["units"].startswith("problems (mean loss")
    assert rc["n_calib_samples"] == 3 * rc["n_calib_problems"]
    # off-schedule checkpoints are ignored: a schedule the store never recorded cannot stop anything
    shutil.rmtree(tmp_path / "bundle" / "calibration")
    rep = calibrate_bundle(tmp_path / "bundle", CalibrationConfig(n_boot=50, epsilon=0.2, delta=0.2, train_folds=0,
                                                                  check_points=(64, 128)))
    es = rep["test_early_stopping"]
    assert es["stopped_fraction"] == 0.0 and es["realised_risk"] == 0.0


def test_calibrators_are_fitted_on_calib_plus_cross_fitted_train_logits(bundle):
    meta = manifest(bundle)
    rep = calibrate_bundle(bundle, CalibrationConfig(n_boot=20, epsilon=0.2, delta=0.2, check_points=SYNTH_POINTS))
    data = rep["calibration_data"]
    oof = BundleLayout(bundle).read_document(CONFIDENCE_OOF, OOF_KIND)
    assert data["train_folds"] == 5 and oof["n"] == data["train_out_of_fold_checkpoints"] == len(oof["logits"]) > 0
    assert oof["layer"] == meta["confidence_layer"] and np.isfinite(oof["logits"]).all()
    # the report refits on the same data: calib checkpoints + the saved out-of-fold train logits
    entry = bundle_report_entries(bundle)["confidence probe (forced answer right)"]
    assert len(entry["scores"]) == data["calib_checkpoints"] + data["train_out_of_fold_checkpoints"]
    np.testing.assert_allclose(entry["scores"][:oof["n"]], oof["logits"])
    # the risk guarantee still rests on the calib problems alone
    assert rep["risk_control"]["n_calib_problems"] == len(meta["split"]["calib"])


def test_calib_split_alone_when_cross_fitting_is_off(bundle):
    calibrate_bundle(bundle, CalibrationConfig(n_boot=20, train_folds=2, check_points=SYNTH_POINTS))
    assert (bundle / "calibration" / "confidence_oof.json").is_file()
    # recalibrating without cross-fitting drops the earlier run's out-of-fold logits with its calibrator
    rep = calibrate_bundle(bundle, CalibrationConfig(n_boot=20, train_folds=0, check_points=SYNTH_POINTS))
    assert rep["calibration_data"]["train_out_of_fold_checkpoints"] == 0
    assert rep["n_checkpoints"]["calib"] == rep["calibration_data"]["calib_checkpoints"]
    assert not (bundle / "calibration" / "confidence_oof.json").exists()
    entry = bundle_report_entries(bundle)["confidence probe (forced answer right)"]
    assert len(entry["scores"]) == rep["n_checkpoints"]["calib"]


def test_a_stale_out_of_fold_file_is_refused(bundle):
    calibrate_bundle(bundle, CalibrationConfig(n_boot=20, train_folds=2, check_points=SYNTH_POINTS))
    layout = BundleLayout(bundle)
    doc = layout.read_document(CONFIDENCE_OOF, OOF_KIND)
    layout.write_document(CONFIDENCE_OOF, OOF_KIND, {**doc, "n": doc["n"] + 1})
    with pytest.raises(ValueError, match="rerun `thinkctl calibrate`"):
        bundle_report_entries(bundle)


class _Memorizer(BaseEstimator):
    """A probe stand-in that scores 1 on rows it was trained on and 0 elsewhere (clonable like HiddenStateProbe)."""

    def fit(self, X, y, *, groups=None) -> "_Memorizer":
        self.seen_ = {tuple(r) for r in np.asarray(X).tolist()}
        return self

    def decision_function(self, X) -> np.ndarray:
        return np.array([float(tuple(r) in self.seen_) for r in np.asarray(X).tolist()])


def test_out_of_fold_logits_never_score_a_problem_with_a_probe_that_saw_it():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(30), 4).astype(str)
    X = rng.normal(size=(len(groups), 3))
    y = rng.integers(0, 2, len(groups))
    out = out_of_fold_logits(_Memorizer(), X, y, groups, folds=5)
    assert out.shape == (len(groups),) and (out == 0).all()


@pytest.mark.parametrize("folds", [1, -2])
def test_bad_train_folds(folds):
    with pytest.raises(ValueError, match="train_folds"):
        CalibrationConfig(train_folds=folds)


def test_calibrate_command_rejects_bad_train_folds(bundle, capsys):
    from thinkctl.cli import main

    assert main(["calibrate", "--bundle", str(bundle), "--train-folds", "1"]) == 2
    err = capsys.readouterr().err
    assert "thinkctl calibrate: error: train_folds=1" in err and "Traceback" not in err


def test_not_a_bundle(tmp_path):
    with pytest.raises(FileNotFoundError, match="thinkctl train"):
        calibrate_bundle(tmp_path)


def test_report_command_writes_html_with_embedded_plots(bundle, tmp_path):
    from thinkctl.cli import main

    out = tmp_path / "report"
    assert main(["report", "--bundle", str(bundle), "--out", str(out), "--n-bootstrap", "20"]) == 0
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "confidence probe" in html
    data = json.loads((out / "report.json").read_text())
    assert data


def test_calibrate_command_fits_the_routing_table_within_its_token_budget(bundle, capsys):
    from thinkctl.cli import main
    from thinkctl.controller.routing import ROUTE_KINDS, RoutingTable

    rc = main(["calibrate", "--bundle", str(bundle), "--n-bootstrap", "50", "--epsilon", "0.2", "--delta", "0.2",
               "--route-budget", "2.0", "--train-folds", "0"])
    assert rc == 0, capsys.readouterr().err
    assert "routing table (fitted on the calib split)" in capsys.readouterr().out
    table = RoutingTable.load(bundle / "routing.json")
    assert (bundle / "calibration" / "difficulty.json").is_file()
    assert all(r.kind in ROUTE_KINDS for r in table.routes) and len(table.routes) == len(table.edges) + 1
    meta = table.meta
    assert meta["feasible"] and meta["expected_tokens"] <= meta["token_budget"] + 1e-9
    serial = [e["serial"]["tokens"] for e in table.estimates]
    assert meta["token_budget"] == pytest.approx(2.0 * float(np.average(serial, weights=meta["bin_weights"])))
    # the table is the best feasible choice among the candidates, bin by bin: no cheaper-or-equal swap gains
    acc = sum(w * e[r.name]["accuracy"] for w, e, r in zip(meta["bin_weights"], table.estimates, table.routes))
    assert acc == pytest.approx(meta["expected_accuracy"])


def test_outlook_probe_is_calibrated_and_the_stop_score_chosen_on_train(tmp_path, synthetic_store):
    """With an outlook signal in the states, calibrate fits the outlook's calibrator, chooses the stop score on the
    train split (out of fold) and certifies its threshold on calib; the certified rule's calib losses are within
    what the binomial test lets through, and the controller loads the same score."""
    from thinkctl.calibration.bundle import STOP_SCORE_CANDIDATES, stop_rule_units
    from thinkctl.calibration.calibrators import load_calibrator
    from thinkctl.calibration.risk_control import STOP_SCORES, stop_score
    from thinkctl.predictors.probe import HiddenStateProbe
    from thinkctl.traces import TraceStore

    store = synthetic_store(tmp_path / "traces", n_problems=400, samples=2, outlook_signal=True)
    rep_t = train_predictors(TraceStore(store.path), tmp_path / "b", PredictorTrainingConfig(n_bootstrap=50))
    assert rep_t["outlook"]["test_auroc"]["value"] > 0.9  # the second coordinate says whether the final is right
    rep = calibrate_bundle(tmp_path / "b", CalibrationConfig(n_boot=20, epsilon=0.1, delta=0.1))
    rc = risk_control(tmp_path / "b")
    assert rc["score"] in STOP_SCORES and rc["score"] != "confidence"  # hopeless thinking is worth stopping here
    assert rc["check_points"] == [8, 16, 24, 32, 40]  # the store's grid: every 8 tokens up to max_new_tokens
    assert len(rep["outlook"]["train_saving_by_score"]) == len(STOP_SCORE_CANDIDATES)
    assert rep["outlook"]["train_out_of_fold"] is True
    # recompute the certified rule on calib from the saved artefacts: its losses pass the binomial test
    meta = manifest(tmp_path / "b")
    ca = TraceStore(store.path).checkpoint_arrays(meta["confidence_layer"])
    c = load_calibrator(tmp_path / "b" / "calibration" / "confidence.json").predict_proba(
        HiddenStateProbe.load(tmp_path / "b" / "confidence_probe").decision_function(ca.X))
    f = load_calibrator(tmp_path / "b" / "calibration" / "outlook.json").predict_proba(
        HiddenStateProbe.load(tmp_path / "b" / "outlook_probe").decision_function(ca.X))
    u = stop_rule_units(ca, stop_score(c, f, rc["score"], rc["kappa"] or 1.0),
                        np.isin(ca.groups, meta["split"]["calib"]), tuple(rc["check_points"]))
    reached = u.conf >= rc["threshold"]
    first = reached.argmax(1)
    lost = reached.any(1) & ~(u.ok[np.arange(len(first)), first] > 0) & u.final
    assert lost.sum() <= rc["most_losses_certifiable"]
    assert rep["test_early_stopping"]["thinking_saved_fraction"] > 0
    assert meta["calibration"]["stop_score"] == rc["score"]


def test_retraining_without_an_outlook_leaves_no_stale_outlook(tmp_path, synthetic_store):
    from thinkctl.traces import TraceStore

    store = synthetic_store(tmp_path / "traces", n_problems=200, samples=2, outlook_signal=True)
    train_predictors(TraceStore(store.path), tmp_path / "b", PredictorTrainingConfig(n_bootstrap=20))
    calibrate_bundle(tmp_path / "b", CalibrationConfig(n_boot=20, epsilon=0.2, delta=0.2))
    assert (tmp_path / "b" / "outlook_probe").is_dir() and (tmp_path / "b" / "calibration" / "outlook.json").is_file()
    # a store where every final answer is right: no outlook can be trained, and the old one must go
    for shard in sorted(store.path.glob("shard-*.jsonl")):
        shard.write_text(shard.read_text().replace('"correct": false', '"correct": true'))
    rep = train_predictors(TraceStore(store.path), tmp_path / "b", PredictorTrainingConfig(n_bootstrap=20))
    assert "skipped" in rep["outlook"] and not (tmp_path / "b" / "outlook_probe").exists()
    calibrate_bundle(tmp_path / "b", CalibrationConfig(n_boot=20, epsilon=0.2, delta=0.2))
    assert not (tmp_path / "b" / "calibration" / "outlook.json").exists()
    rc = risk_control(tmp_path / "b")
    assert rc["score"] == "confidence" and rc["kappa"] is None


def test_the_blunt_easy_route_is_a_candidate_only_without_a_certified_stop_rule(bundle):
    from thinkctl.controller.routing import fit_bundle_routing

    calibrate_bundle(bundle, CalibrationConfig(n_boot=20, epsilon=0.2, delta=0.2, check_points=SYNTH_POINTS))
    assert risk_control(bundle)["threshold"] is not None
    table = fit_bundle_routing(bundle)
    assert "easy" not in table.meta["candidates"] and "serial" in table.meta["candidates"]
    assert all(r.kind != "easy" for r in table.routes)
    calibrate_bundle(bundle, replace(CalibrationConfig(n_boot=20, train_folds=0), epsilon=1e-4, delta=1e-3))
    assert "easy" in fit_bundle_routing(bundle).meta["candidates"]  # nothing certified: the cap is the only stop


def test_the_trace_store_resolves_from_any_folder_and_moves_with_the_bundle(trained_bundle, bundle, tmp_path,
                                                                             monkeypatch):
    layout = BundleLayout(bundle)  # a copy of the bundle alone: the absolute path finds the original traces
    meta = manifest(bundle)
    assert not Path(meta["trace_store"]).is_absolute()  # relative to the bundle folder
    assert layout.trace_store_path(meta) == Path(meta["trace_store_absolute"]) == (trained_bundle.parent / "traces")
    # the bundle and its traces moved together (the original gone): the relative path finds them
    shutil.copytree(trained_bundle.parent / "traces", tmp_path / "traces")
    layout.write_manifest({**meta, "trace_store_absolute": str(tmp_path / "gone")})
    meta = manifest(bundle)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert layout.trace_store_path(meta).resolve() == (tmp_path / "traces").resolve()
    rep = calibrate_bundle(bundle, CalibrationConfig(n_boot=20, check_points=SYNTH_POINTS))
    assert rep["risk_control"]["n_calib_problems"] == len(meta["split"]["calib"])


def test_a_manifest_without_the_envelope_is_read_and_its_working_folder_path_resolved(bundle, tmp_path, monkeypatch):
    layout = BundleLayout(bundle)
    store = layout.trace_store_path(layout.read_manifest()).resolve()
    meta = {k: v for k, v in layout.read_manifest().items()
            if k not in ("parts", "calibration", "trace_store_absolute")}
    monkeypatch.chdir(store.parent.parent)  # the old manifests stored the path as typed where `train` ran
    old = {**meta, "kind": "thinkctl-bundle", "trace_store": str(store.relative_to(store.parent.parent))}
    layout.manifest_path.write_text(json.dumps(old))
    read = layout.read_manifest()
    assert layout.trace_store_path(read).resolve() == store
    calibrate_bundle(bundle, CalibrationConfig(n_boot=20, check_points=SYNTH_POINTS))  # rewrites it, enveloped
    doc = json.loads(layout.manifest_path.read_text())
    assert doc["format"] == "thinkctl.bundle" and doc["kind"] == "manifest"
    assert (bundle / doc["state"]["trace_store"]).resolve() == store  # now relative to the bundle


def test_a_missing_trace_store_says_where_it_was_looked_for(bundle):
    layout = BundleLayout(bundle)
    meta = {**layout.read_manifest(), "trace_store": "../nowhere", "trace_store_absolute": "/nowhere/traces"}
    layout.write_manifest(meta)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        calibrate_bundle(bundle, CalibrationConfig(n_boot=20, check_points=SYNTH_POINTS))


def test_retraining_without_recalibrating_is_refused_with_what_to_run(bundle, synthetic_store, tmp_path):
    from thinkctl.controller.bundle import Bundle
    from thinkctl.traces import TraceStore

    calibrate_bundle(bundle, CalibrationConfig(n_boot=20, check_points=SYNTH_POINTS))
    layout = BundleLayout(bundle)
    assert layout.stale_parts(layout.read_manifest()) == []
    store = TraceStore(layout.trace_store_path(layout.read_manifest()))
    # another seed: other splits, other probes, while calibration/ still holds the old calibrators and threshold
    train_predictors(store, bundle, PredictorTrainingConfig(n_bootstrap=20, seed=1))
    stale = layout.stale_parts(layout.read_manifest())
    assert stale and all(f"thinkctl calibrate {bundle}" in s for s in stale)
    with pytest.raises(ValueError, match="thinkctl calibrate"):
        Bundle.load(bundle, model=None)  # refused before the model is even looked at
    calibrate_bundle(bundle, CalibrationConfig(n_boot=20, check_points=SYNTH_POINTS))
    assert layout.stale_parts(layout.read_manifest()) == []
    # a probe replaced by hand after calibration is caught by its fingerprint
    shutil.rmtree(bundle / "outlook_probe", ignore_errors=True)
    other = tmp_path / "other"
    train_predictors(store, other, PredictorTrainingConfig(n_bootstrap=20, seed=2))
    shutil.rmtree(bundle / "confidence_probe")
    shutil.copytree(other / "confidence_probe", bundle / "confidence_probe")
    assert any("another confidence_probe" in s for s in layout.stale_parts(layout.read_manifest()))


def test_a_calibrator_is_chosen_on_fewer_problems_than_folds_and_one_problem_is_refused():
    """Three calib problems and five folds: the empty folds are skipped; every checkpoint is scored out of fold."""
    rng = np.random.default_rng(0)
    groups = np.repeat(np.array(["a", "b", "c"]), 8)
    y = np.tile([0, 1], 12)
    x = rng.normal(size=24) + 2.0 * y
    name, cv, fitted = choose_calibrator(x, y, groups, CalibrationConfig(cv_folds=5))
    assert name in cv and set(cv) == set(CalibrationConfig().calibrators)
    assert all(np.isfinite(v) and 0.0 <= v <= 1.0 for v in cv.values())
    p = fitted.predict_proba(x)
    assert p.shape == (24,) and np.all((p >= 0) & (p <= 1))
    with pytest.raises(ValueError, match="at least 2 problems, got 1.*--calib-fraction"):
        choose_calibrator(x, y, np.repeat("a", 24), CalibrationConfig())
