"""Training a bundle from a trace store: splits by problem, finds the informative layer, reports held-out AUROC."""

from __future__ import annotations

import json

import numpy as np
import pytest

from thinkctl.predictors import HiddenStateProbe
from thinkctl.predictors.from_traces import PredictorTrainingConfig, problem_split, train_predictors
from thinkctl.traces import TraceStore

HIDDEN, LAYERS = 16, [0, 1, 2]


def _synthetic_store(path, n_problems=120, samples=3, seed=0):
    """Layer 1 carries the signal (first coordinate = correctness); layers 0 and 2 are noise."""
    rng = np.random.default_rng(seed)
    store = TraceStore(path)
    store.init({"collect": {"task": "arith"}, "layers_resolved": LAYERS,
                "model": {"name": "toy-model", "hidden_size": HIDDEN, "num_layers": 3}})
    for shard in range(n_problems // 20):
        rows, prompt_h, ck_h = [], [], []
        for p in range(shard * 20, shard * 20 + 20):
            hard = rng.random() < 0.5
            for s in range(samples):
                correct = bool(rng.random() < (0.3 if hard else 0.8))
                ph = rng.normal(size=(len(LAYERS), HIDDEN))
                ph[1, 0] += -1.5 if hard else 1.5
                checkpoints = []
                for k in range(4):
                    forced = bool(correct and k >= 2) or bool(rng.random() < 0.1)
                    h = rng.normal(size=(len(LAYERS), HIDDEN))
                    h[1, 0] += 2.0 if forced else -2.0
                    checkpoints.append({"position": 8 * (k + 1), "row": len(ck_h), "forced_answer": "1",
                                        "forced_correct": forced, "probe_tokens": 6, "agrees_with_final": forced,
                                        "confidence": {"conf_window": float(rng.normal())}})
                    ck_h.append(h)
                rows.append({"problem_id": f"p{p:04d}", "prompt": f"Evaluate {p} + {'9' * (5 if hard else 1)}",
                             "level": 2 if hard else 1, "features": {"n_ops": 5 if hard else 1}, "sample": s,
                             "correct": correct, "n_prompt_tokens": 10, "n_generated": 40, "n_thinking": 32,
                             "prompt_row": len(prompt_h), "checkpoints": checkpoints})
                prompt_h.append(ph)
        store.write_shard(shard, {"prompt_hidden": np.array(prompt_h, dtype=np.float16),
                                  "checkpoint_hidden": np.array(ck_h, dtype=np.float16)}, rows)
    return store


def test_split_is_by_problem_and_disjoint():
    ids = [f"p{i}" for i in range(100)] * 3
    split = problem_split(ids, PredictorTrainingConfig(seed=3))
    sets = [set(split[k]) for k in ("train", "calib", "test")]
    assert sum(len(s) for s in sets) == 100
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert split == problem_split(ids, PredictorTrainingConfig(seed=3))


def test_bundle_finds_the_informative_layer_and_reports_heldout_auroc(tmp_path):
    store = _synthetic_store(tmp_path / "traces")
    rep = train_predictors(store, tmp_path / "bundle", PredictorTrainingConfig(n_bootstrap=100))
    assert rep["confidence"]["layer"] == 1
    auc = rep["confidence"]["test_auroc"]
    assert auc["value"] > 0.9 and auc["ci95"][0] <= auc["value"] <= auc["ci95"][1]
    assert rep["confidence"]["baseline_token_confidence_auroc"]["value"] < 0.7  # noise feature
    assert rep["difficulty"]["prompt_probe_test_auroc"]["value"] > 0.6
    assert rep["difficulty"]["lightgbm_test_auroc"]["value"] > 0.6
    bundle = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert bundle["confidence_layer"] == 1 and set(bundle["split"]) == {"train", "calib", "test"}
    probe = HiddenStateProbe.load(tmp_path / "bundle" / "confidence_probe")
    with pytest.raises(ValueError, match="toy-model|hidden"):
        probe.check_compatible(model_name="another-model", hidden_size=HIDDEN, layer=1)


def test_bad_split_fractions():
    with pytest.raises(ValueError, match="calib_fraction"):
        PredictorTrainingConfig(calib_fraction=0.5, test_fraction=0.45)
