"""AdaptiveController.load: a bundle's probes, calibrator and stop threshold, checked against the model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from thinkctl.calibration.calibrators import TemperatureScaler
from thinkctl.controller import AdaptiveController, ControllerConfig
from thinkctl.controller.routing import Route, RoutingTable
from thinkctl.predictors.probe import HiddenStateProbe
from controller_helpers import events

CFG = ControllerConfig(token_cap=120, initial_budget=8, max_answer_tokens=4, easy_cap=40, max_samples=10,
                       wave_size=5)


def write_bundle(path, hidden, *, layer=1, threshold=0.7, record_hidden=True, difficulty=True):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, hidden)).astype("float32")
    y = (X[:, 0] > 0).astype(int)
    probe = HiddenStateProbe(model_name="tiny", layer=layer, max_epochs=3, random_state=0).fit(X, y)
    probe.save(path / "confidence_probe")
    TemperatureScaler().fit(probe.decision_function(X), y).save(path / "calibration" / "confidence.json")
    if difficulty:
        probe.save(path / "difficulty_probe")
    meta = {"kind": "thinkctl-bundle", "confidence_layer": layer, "split": {"train": [], "calib": [], "test": []},
            "model": {"name": "tiny", **({"hidden_size": hidden} if record_hidden else {})},
            "calibration": {"confidence_calibrator": "temperature", "stop_threshold": threshold}}
    (path / "bundle.json").write_text(json.dumps(meta))
    return probe


def test_load_wires_probe_calibrator_and_threshold(tmp_path, model, tok):
    probe = write_bundle(tmp_path, 32)
    c = AdaptiveController.load(tmp_path, model, tok, CFG)
    assert c.confidence.threshold == 0.7 and c.confidence.layer == 1
    assert c.difficulty is not None and c.config is CFG
    h = torch.randn(3, 32)
    expected = c.confidence.calibrator.predict_proba(probe.decision_function(h.numpy()))
    np.testing.assert_allclose(c.confidence(h), expected, rtol=1e-6)
    results = c.generate(["What is 2+3?", "hi"])
    for r in results:
        assert isinstance(r.answer, str) and 0.0 <= r.confidence <= 1.0
        assert events(r, "route")[0]["p_solve"] is not None


def test_load_wires_the_bundles_routing_table(tmp_path, model, tok):
    write_bundle(tmp_path, 32)
    table = RoutingTable([0.0], [Route("parallel", 4), Route("easy")])  # every P(solve) >= 0 takes "easy"
    table.save(tmp_path / "routing.json")
    c = AdaptiveController.load(tmp_path, model, tok, CFG)
    assert c.routing == table
    r = c.generate(["What is 2+3?"])[0]
    assert events(r, "route")[0]["table"] is True and r.strategy == "easy"
    # an explicit routing table wins over the bundle's
    other = RoutingTable([], [Route("serial")])
    c = AdaptiveController.load(tmp_path, model, tok, CFG, routing=other)
    assert c.routing is other and c.generate(["hi"])[0].strategy == "serial"


def test_threshold_falls_back_to_risk_control_json(tmp_path, model, tok):
    write_bundle(tmp_path, 32, threshold=None, difficulty=False)
    (tmp_path / "calibration" / "risk_control.json").write_text(json.dumps({"threshold": 0.66}))
    c = AdaptiveController.load(tmp_path, model, tok)
    assert c.confidence.threshold == 0.66 and c.difficulty is None


@pytest.mark.parametrize("record_hidden", [True, False])
def test_probe_of_another_model_is_refused(tmp_path, model, tok, record_hidden):
    write_bundle(tmp_path, 16, record_hidden=record_hidden)
    with pytest.raises(ValueError, match="hidden_size=32.*belongs to another model"):
        AdaptiveController.load(tmp_path, model, tok)


def test_bundle_of_another_checkpoint_is_refused(tmp_path, model, tok):
    from thinkctl.models import model_stamp

    write_bundle(tmp_path, 32)
    meta = json.loads((tmp_path / "bundle.json").read_text())
    meta["model"] = model_stamp(model, "tiny")
    (tmp_path / "bundle.json").write_text(json.dumps(meta))
    AdaptiveController.load(tmp_path, model, tok)  # the checkpoint it was made for
    meta["model"]["fingerprint"] = "0" * 16  # same shape, other weights (e.g. a retrained model)
    (tmp_path / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="another checkpoint"):
        AdaptiveController.load(tmp_path, model, tok)


def test_bundle_layer_must_exist_in_the_model(tmp_path, model, tok):
    write_bundle(tmp_path, 32, layer=7)
    with pytest.raises(ValueError, match="layer=7 is out of range for a model with 2 layers"):
        AdaptiveController.load(tmp_path, model, tok)


def test_missing_bundle_is_a_clear_error(tmp_path, model, tok):
    with pytest.raises(FileNotFoundError, match="is not a bundle"):
        AdaptiveController.load(tmp_path, model, tok)


def test_reading_confidence_outside_the_certified_schedule_warns(tmp_path, model, tok, caplog):
    write_bundle(tmp_path, 32, threshold=0.99)
    (tmp_path / "calibration" / "risk_control.json").write_text(json.dumps({"threshold": 0.99,
                                                                           "check_points": [8, 16, 32, 64]}))
    c = AdaptiveController.load(tmp_path, model, tok, CFG)
    assert c.confidence.certified_at == (8, 16, 32, 64)
    with caplog.at_level("WARNING", logger="thinkctl.controller.serial"):
        c.run_serial(["What is 2+3?"])  # CFG's schedule 8, 16, 32, 64: certified
    assert "guarantee does not cover" not in caplog.text
    with caplog.at_level("WARNING", logger="thinkctl.controller.serial"):
        c.run_serial(["What is 2+3?"], budgets=[12, 24, 100])
    assert "guarantee does not cover" in caplog.text and "[12, 24]" in caplog.text


def test_load_wires_the_certified_outlook_and_refuses_a_missing_one(tmp_path, model, tok):
    probe = write_bundle(tmp_path, 32)
    risk = {"threshold": 0.7, "score": "max(confidence, 1 - kappa * outlook)", "kappa": 2.0,
            "check_points": [8, 16, 24]}
    (tmp_path / "calibration" / "risk_control.json").write_text(json.dumps(risk))
    with pytest.raises(ValueError, match="rerun `thinkctl train` and `thinkctl calibrate`"):
        AdaptiveController.load(tmp_path, model, tok, CFG)
    probe.save(tmp_path / "outlook_probe")
    TemperatureScaler().fit(np.array([-1.0, 1.0, 2.0]), np.array([0, 1, 1])).save(
        tmp_path / "calibration" / "outlook.json")
    c = AdaptiveController.load(tmp_path, model, tok, CFG)
    assert c.outlook is not None and c.outlook.kappa == 2.0 and c.outlook.score == risk["score"]
    assert c.confidence.certified_at == (8, 16, 24)
    r = c.run_serial(["What is 2+3?"])[0]
    # the serial route reads its score where the threshold was certified, up to the cap
    probes = [e["thinking_tokens"] for e in events(r, "probe")]
    assert probes and set(probes) <= {8, 16, 24}
    # a confidence-only certificate loads no outlook, even when an outlook probe is present
    (tmp_path / "calibration" / "risk_control.json").write_text(json.dumps({**risk, "score": "confidence"}))
    assert AdaptiveController.load(tmp_path, model, tok, CFG).outlook is None


def test_a_bundle_without_its_routing_table_warns_and_says_what_to_run(tmp_path, model, tok, caplog):
    write_bundle(tmp_path, 32)  # a difficulty probe, but no routing.json
    with caplog.at_level("WARNING", logger="thinkctl.controller.bundle"):
        c = AdaptiveController.load(tmp_path, model, tok, CFG)
    assert c.routing is None
    assert "no routing.json" in caplog.text and f"thinkctl calibrate {tmp_path}" in caplog.text
    caplog.clear()
    RoutingTable([], [Route("serial")]).save(tmp_path / "routing.json")
    with caplog.at_level("WARNING", logger="thinkctl.controller.bundle"):
        AdaptiveController.load(tmp_path, model, tok, CFG)
    assert "routing.json" not in caplog.text


def test_bundle_save_round_trips_every_part(tmp_path, model, tok):
    from thinkctl.controller import Bundle

    write_bundle(tmp_path / "a", 32, threshold=0.65)
    (tmp_path / "a" / "calibration" / "risk_control.json").write_text(json.dumps({"threshold": 0.65,
                                                                                 "check_points": [8, 16]}))
    table = RoutingTable([0.5], [Route("parallel", 4), Route("serial")])
    table.save(tmp_path / "a" / "routing.json")
    a = Bundle.load(tmp_path / "a", model)
    a.save(tmp_path / "b")
    b = Bundle.load(tmp_path / "b", model)
    assert b.routing == table and b.risk_control == a.risk_control
    assert b.confidence.threshold == 0.65 and b.confidence.certified_at == (8, 16)
    assert b.layout.stale_parts(b.manifest) == []
    h = torch.randn(4, 32)
    np.testing.assert_allclose(b.confidence(h), a.confidence(h), rtol=1e-6)
    np.testing.assert_allclose(b.difficulty(h), a.difficulty(h), rtol=1e-6)
