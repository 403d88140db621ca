"""layer_sweep picks the informative layer on synthetic data, with intervals; plot_layer_sweep draws it."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest
import torch

from thinkctl.predictors import HiddenStateProbe, grouped_train_test_split, layer_sweep, plot_layer_sweep

matplotlib.use("Agg")

PROBE = HiddenStateProbe(max_epochs=40, patience=5)


@pytest.fixture
def layered(rng: np.random.Generator):
    """Layer 0: noise; layer 4: strong signal; layer 8: weak signal. 120 problems x 3 samples."""
    g = np.repeat(np.arange(120), 3)
    y = rng.integers(0, 2, size=g.size)
    hidden = 16
    direction = rng.normal(size=hidden)
    direction /= np.linalg.norm(direction)
    noise = lambda: rng.normal(size=(g.size, hidden))  # noqa: E731
    X = {0: noise(), 4: noise() + 2.0 * np.outer(y - 0.5, direction), 8: noise() + 0.6 * np.outer(y - 0.5, direction)}
    return X, y, g


def test_picks_the_informative_layer(layered) -> None:
    X, y, g = layered
    r = layer_sweep(X, y, g, probe=PROBE, test_size=0.3, n_bootstrap=200, seed=0)
    assert r["layers"] == [0, 4, 8] and r["best_layer"] == 4
    assert r["auroc"][4] > 0.9 > r["auroc"][8] > r["auroc"][0]
    lo0, hi0 = r["ci95"][0]
    assert lo0 < 0.5 < hi0  # the noise layer is indistinguishable from chance
    for k in r["layers"]:
        assert r["ci95"][k][0] <= r["auroc"][k] <= r["ci95"][k][1]
    _, test = grouped_train_test_split(g, test_size=0.3, seed=0, stratify=y)
    assert r["n_test"] == test.size and r["n_test_groups"] == 36 and r["n_train"] + r["n_test"] == g.size
    json.dumps(r)  # a plain, serialisable result


def test_return_probes_and_torch_input(layered) -> None:
    X, y, g = layered
    Xt = {k: torch.from_numpy(v).to(torch.float16) for k, v in X.items() if k != 8}
    r = layer_sweep(Xt, y, g, probe=PROBE, n_bootstrap=50, return_probes=True)
    assert set(r["probes"]) == {0, 4}
    assert r["probes"][4].layer == 4 and r["probes"][4].max_epochs == PROBE.max_epochs
    assert not hasattr(PROBE, "module_")  # the template is cloned, never fitted


def test_bad_inputs_raise(layered) -> None:
    X, y, g = layered
    with pytest.raises(ValueError, match="non-empty dict"):
        layer_sweep({}, y)
    with pytest.raises(ValueError, match="different numbers of samples"):
        layer_sweep({0: X[0], 1: X[4][:-3]}, y)
    with pytest.raises(ValueError, match="binary"):
        layer_sweep({0: X[0]}, y * 3)
    with pytest.raises(ValueError, match="one problem id per sample"):
        layer_sweep({0: X[0]}, y, g[:-1])
    with pytest.raises(ValueError, match="integer layer indices"):
        layer_sweep({"last": X[0]}, y)


def test_plot_returns_axes_and_reads_json_results(layered) -> None:
    import matplotlib.pyplot as plt

    X, y, g = layered
    r = layer_sweep({0: X[0], 4: X[4]}, y, g, probe=PROBE, n_bootstrap=50)
    ax = plot_layer_sweep(r)
    assert ax.get_xlabel() == "layer" and "95% CI" in ax.get_ylabel()
    assert any("best layer (4)" in t.get_text() for t in ax.get_legend().get_texts())
    fig, given = plt.subplots()
    assert plot_layer_sweep(json.loads(json.dumps(r)), ax=given) is given  # JSON turns int keys into strings
    plt.close("all")
    with pytest.raises(ValueError, match="layer_sweep output"):
        plot_layer_sweep({"layers": [0]})
