"""HiddenStateProbe: learns a planted direction (not shuffled labels), matches logistic regression, stopping-hook
calling convention, early stopping, class weights, safetensors persistence and model-compatibility errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.utils.validation import check_is_fitted

from thinkctl.predictors import HiddenStateProbe, grouped_train_test_split
from thinkctl.registry import UnknownNameError


@pytest.fixture
def split(hidden_data):
    X, y, g, logit = hidden_data
    train, test = grouped_train_test_split(g, test_size=0.3, seed=0, stratify=y)
    return X, y, g, train, test, logit


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_learns_planted_direction_and_not_shuffled_labels(split, kind: str) -> None:
    X, y, g, tr, te, logit = split
    probe = HiddenStateProbe(kind=kind, hidden_units=16, random_state=0).fit(X[tr], y[tr], groups=g[tr])
    auc = roc_auc_score(y[te], probe.predict_proba(X[te]))
    oracle = roc_auc_score(y[te], logit[te])  # the true log-odds: the best any probe can do
    reference = roc_auc_score(y[te], LogisticRegression(max_iter=1000).fit(X[tr], y[tr]).decision_function(X[te]))
    assert oracle > 0.9 and auc > oracle - 0.05 and auc > reference - 0.03
    shuffled = HiddenStateProbe(kind=kind, hidden_units=16, random_state=0).fit(
        X[tr], np.random.default_rng(1).permutation(y[tr]), groups=g[tr])
    assert abs(roc_auc_score(y[te], shuffled.predict_proba(X[te])) - 0.5) < 0.1


def test_mlp_learns_what_a_linear_probe_cannot(rng: np.random.Generator) -> None:
    X = rng.normal(size=(800, 4)).astype(np.float32)
    y = (X[:, 0] * X[:, 1] > 0).astype(int)  # XOR of two signs
    tr, te = np.arange(600), np.arange(600, 800)
    linear = HiddenStateProbe(kind="linear").fit(X[tr], y[tr])
    mlp = HiddenStateProbe(kind="mlp", hidden_units=32).fit(X[tr], y[tr])
    assert roc_auc_score(y[te], linear.predict_proba(X[te])) < 0.65
    assert roc_auc_score(y[te], mlp.predict_proba(X[te])) > 0.9


def test_outputs_and_calling_conventions(split) -> None:
    X, y, g, tr, te, _ = split
    probe = HiddenStateProbe(model_name="toy", layer=-1).fit(X[tr], y[tr], groups=g[tr])
    p = probe.predict_proba(X[te])
    z = probe.decision_function(X[te])
    assert p.shape == z.shape == (te.size,) and p.dtype == np.float64
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-z)), rtol=1e-12)
    np.testing.assert_array_equal(probe.predict(X[te]), (p >= 0.5).astype(int))
    # as the stopping hooks call it: a (B, hidden) tensor in, (B,) probabilities out, same device, float32
    h = torch.from_numpy(X[te[:8]]).to(torch.float16)
    out = probe(h)
    assert isinstance(out, torch.Tensor) and out.shape == (8,) and out.dtype == torch.float32
    assert out.device == h.device
    np.testing.assert_allclose(out.numpy(), probe.predict_proba(h), rtol=1e-6)
    np.testing.assert_allclose(probe.predict_proba(h), probe.predict_proba(X[te[:8]].astype(np.float16)), rtol=1e-6)
    np.testing.assert_allclose(probe(X[te[:8]]), p[:8])  # numpy in, numpy out
    assert probe.predict_proba(torch.from_numpy(X[te]).double()).shape == (te.size,)


def test_class_weight_balanced_raises_minority_scores(rng: np.random.Generator) -> None:
    X = rng.normal(size=(600, 8)).astype(np.float32)
    y = (X[:, 0] + rng.normal(scale=1.0, size=600) > 1.6).astype(int)  # ~13 % positives
    plain = HiddenStateProbe().fit(X, y)
    balanced = HiddenStateProbe(class_weight="balanced").fit(X, y)
    assert plain.predict_proba(X).mean() == pytest.approx(y.mean(), abs=0.05)
    assert balanced.predict_proba(X).mean() > y.mean() + 0.15
    assert balanced.predict(X)[y == 1].mean() > plain.predict(X)[y == 1].mean()


def test_early_stopping_and_reproducibility(split) -> None:
    X, y, g, tr, _, _ = split
    state = torch.random.get_rng_state()
    a = HiddenStateProbe(kind="mlp", patience=3, max_epochs=300, random_state=7).fit(X[tr], y[tr], groups=g[tr])
    assert torch.equal(state, torch.random.get_rng_state())  # the global torch RNG is left alone
    assert a.n_epochs_ < 300 and a.best_epoch_ <= a.n_epochs_ and a.n_epochs_ - a.best_epoch_ == 3
    assert len(a.validation_loss_curve_) == a.n_epochs_
    assert min(a.validation_loss_curve_) == a.validation_loss_curve_[a.best_epoch_ - 1]
    b = HiddenStateProbe(kind="mlp", patience=3, max_epochs=300, random_state=7).fit(X[tr], y[tr], groups=g[tr])
    np.testing.assert_array_equal(a.decision_function(X), b.decision_function(X))
    c = HiddenStateProbe(kind="mlp", patience=3, max_epochs=300, random_state=8).fit(X[tr], y[tr], groups=g[tr])
    assert not np.array_equal(a.decision_function(X), c.decision_function(X))
    full = HiddenStateProbe(validation_fraction=0.0, max_epochs=12).fit(X[tr], y[tr])
    assert full.n_epochs_ == 12 and full.validation_loss_curve_ == []


def test_standardisation_is_fitted_on_training_data(rng: np.random.Generator) -> None:
    X = (rng.normal(size=(300, 6)) * [1, 10, 100, 1e3, 1e-3, 0] + 50).astype(np.float32)  # one constant column
    y = (X[:, 4] > 50).astype(int)
    probe = HiddenStateProbe(validation_fraction=0.0).fit(X, y)
    np.testing.assert_allclose(probe.module_.standardize_mean.numpy(), X.mean(axis=0), rtol=1e-4)
    assert probe.module_.standardize_scale.numpy()[5] == 1.0  # constant feature: centred only
    assert roc_auc_score(y, probe.predict_proba(X)) > 0.95


def test_save_load_round_trip(tmp_path: Path, split) -> None:
    X, y, g, tr, te, _ = split
    for kind in ("linear", "mlp"):
        probe = HiddenStateProbe(kind=kind, hidden_units=8, model_name="tiny-llama", layer=-1, max_epochs=20)
        probe.fit(X[tr], y[tr], groups=g[tr])
        json_path = probe.save(tmp_path / kind)
        loaded = HiddenStateProbe.load(tmp_path / kind, expected_model="tiny-llama")
        np.testing.assert_array_equal(loaded.decision_function(X[te]), probe.decision_function(X[te]))
        assert loaded.get_params() == probe.get_params()
        doc = json.loads(json_path.read_text())
        assert doc["metadata"] == {"model_name": "tiny-llama", "hidden_size": 32, "layer": -1}
        assert doc["thinkctl_version"] and doc["kind"] == "HiddenStateProbe"
        assert sorted(f.name for f in (tmp_path / kind).iterdir()) == ["probe.json", "probe.safetensors"]
    HiddenStateProbe.load(tmp_path / "mlp", expected_model={"model_name": "tiny-llama", "hidden_size": 32, "layer": -1})


def test_wrong_model_is_refused_with_a_clear_error(tmp_path: Path, split) -> None:
    X, y, g, tr, _, _ = split
    HiddenStateProbe(model_name="tiny-llama", layer=-1, max_epochs=5).fit(X[tr], y[tr]).save(tmp_path / "p")
    with pytest.raises(ValueError) as err:
        HiddenStateProbe.load(tmp_path / "p", expected_model={"model_name": "SmolLM2-135M", "hidden_size": 576})
    msg = str(err.value)
    assert "probe was trained for model 'tiny-llama' (hidden 32, layer -1)" in msg
    assert "this is model 'SmolLM2-135M' (hidden 576" in msg and "model name and the hidden size differ" in msg
    probe = HiddenStateProbe.load(tmp_path / "p")
    with pytest.raises(ValueError, match="the layer differs"):
        probe.check_compatible("tiny-llama", 32, layer=12)
    probe.check_compatible("tiny-llama", 32, -1)  # the right model passes
    with pytest.raises(ValueError, match="unknown keys"):
        HiddenStateProbe.load(tmp_path / "p", expected_model={"name": "x"})


def test_damaged_or_foreign_files_are_refused(tmp_path: Path, split) -> None:
    X, y, _, tr, _, _ = split
    HiddenStateProbe(model_name="m", layer=3, max_epochs=5).fit(X[tr], y[tr]).save(tmp_path / "p")
    doc_path = tmp_path / "p" / "probe.json"
    good = json.loads(doc_path.read_text())
    bad = json.loads(json.dumps(good))
    bad["params"]["kind"] = "mlp"  # weights are a linear probe's
    doc_path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="do not belong together"):
        HiddenStateProbe.load(tmp_path / "p")
    bad = json.loads(json.dumps(good))
    bad["format_version"] = 99
    doc_path.write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="layout"):
        HiddenStateProbe.load(tmp_path / "p")
    doc_path.write_text(json.dumps(good))
    (tmp_path / "p" / "probe.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="probe.safetensors"):
        HiddenStateProbe.load(tmp_path / "p")


def test_save_requires_the_model_it_belongs_to(tmp_path: Path, split) -> None:
    X, y, _, tr, _, _ = split
    probe = HiddenStateProbe(max_epochs=3).fit(X[tr], y[tr])
    with pytest.raises(ValueError, match="set model_name and layer"):
        probe.save(tmp_path / "p")


def test_bad_inputs_raise(split) -> None:
    X, y, _, tr, _, _ = split
    Xn = X[tr].copy()
    Xn[5, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite values \\(first in row 5\\)"):
        HiddenStateProbe().fit(Xn, y[tr])
    with pytest.raises(ValueError, match="binary labels"):
        HiddenStateProbe().fit(X[tr], np.where(y[tr] == 1, 2, 0))
    with pytest.raises(ValueError, match="binary labels"):
        HiddenStateProbe().fit(X[tr], y[tr] * 0.5)
    with pytest.raises(ValueError, match="only class 1"):
        HiddenStateProbe().fit(X[tr], np.ones(tr.size, dtype=int))
    with pytest.raises(ValueError, match="one 0/1 label per hidden state"):
        HiddenStateProbe().fit(X[tr], y[tr][:-1])
    with pytest.raises(ValueError, match="reshape"):
        HiddenStateProbe().fit(X[0], y[:1])
    with pytest.raises(UnknownNameError, match="known: linear, mlp"):
        HiddenStateProbe(kind="transformer").fit(X[tr], y[tr])
    with pytest.raises(ValueError, match="class_weight"):
        HiddenStateProbe(class_weight="auto").fit(X[tr], y[tr])
    with pytest.raises(ValueError, match="validation_fraction"):
        HiddenStateProbe(validation_fraction=1.0).fit(X[tr], y[tr])
    probe = HiddenStateProbe(model_name="m", layer=2, max_epochs=3).fit(X[tr], y[tr])
    with pytest.raises(ValueError,
                       match="hidden size 16 but this probe was trained on model 'm' \\(hidden 32, layer 2\\)"):
        probe.predict_proba(X[:4, :16])
    with pytest.raises(ValueError, match="\\(B, 32\\)"):
        probe(torch.zeros(4, 16))
    with pytest.raises(ValueError, match="NaN"):
        probe(torch.full((2, 32), float("nan")))
    with pytest.raises(ValueError, match="NaN"):
        probe.predict_proba(np.full((2, 32), np.inf))


def test_estimator_contract(split) -> None:
    X, y, _, tr, _, _ = split
    probe = HiddenStateProbe(kind="mlp", hidden_units=4, layer=5)
    for call in (probe.predict_proba, probe.decision_function, probe, lambda x: probe(torch.from_numpy(x))):
        with pytest.raises(NotFittedError):
            call(X[:2])
    with pytest.raises(NotFittedError):
        check_is_fitted(probe)
    twin = clone(probe)
    assert twin.get_params() == probe.get_params()
    assert probe.fit(X[tr], y[tr]) is probe
    check_is_fitted(probe)
    assert not hasattr(clone(probe), "module_")
    with pytest.raises(TypeError):
        HiddenStateProbe("linear")  # keyword-only
