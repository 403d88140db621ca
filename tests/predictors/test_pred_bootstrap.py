"""Bootstrap intervals: point values match scikit-learn / SciPy, intervals cover them, groups widen them."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from thinkctl.predictors import auroc_ci, bootstrap_ci, spearman_ci


def test_auroc_matches_sklearn_and_interval_covers_it(rng: np.random.Generator) -> None:
    y = rng.integers(0, 2, size=400)
    s = y + rng.normal(size=400)
    r = auroc_ci(y, s, n_bootstrap=300, seed=1)
    assert r["value"] == pytest.approx(roc_auc_score(y, s))
    lo, hi = r["ci95"]
    assert lo < r["value"] < hi and hi - lo < 0.15
    assert r["n"] == 400 and r["n_bootstrap_valid"] == 300


def test_spearman_matches_scipy(rng: np.random.Generator) -> None:
    a = rng.normal(size=300)
    b = a + rng.normal(size=300)
    r = spearman_ci(a, b, n_bootstrap=200)
    assert r["value"] == pytest.approx(spearmanr(a, b).statistic)
    assert r["ci95"][0] < r["value"] < r["ci95"][1]


def test_cluster_bootstrap_is_wider_for_duplicated_samples(rng: np.random.Generator) -> None:
    # 40 problems, each copied 10 times: the i.i.d. bootstrap thinks there are 400 independent samples.
    y0 = rng.integers(0, 2, size=40)
    s0 = y0 + rng.normal(size=40)
    y, s, g = np.repeat(y0, 10), np.repeat(s0, 10), np.repeat(np.arange(40), 10)
    iid = auroc_ci(y, s, n_bootstrap=300, seed=0)["ci95"]
    grouped = auroc_ci(y, s, groups=g, n_bootstrap=300, seed=0)["ci95"]
    assert (grouped[1] - grouped[0]) > 2 * (iid[1] - iid[0])


def test_degenerate_resamples_are_dropped() -> None:
    y = np.array([0] * 19 + [1])
    s = np.arange(20.0)
    value, lo, hi, n_valid = bootstrap_ci(lambda a, b: roc_auc_score(a, b) if a.min() != a.max() else np.nan,
                                          y, s, n_bootstrap=200, seed=0)
    assert value == 1.0 and 0 < n_valid < 200


def test_bad_arguments_raise(rng: np.random.Generator) -> None:
    with pytest.raises(ValueError, match="two classes"):
        auroc_ci(np.ones(10), rng.normal(size=10))
    with pytest.raises(ValueError, match="n_bootstrap"):
        auroc_ci([0, 1], [0.1, 0.2], n_bootstrap=0)
    with pytest.raises(ValueError, match="confidence"):
        auroc_ci([0, 1], [0.1, 0.2], confidence=95)
    with pytest.raises(ValueError, match="different numbers of rows"):
        bootstrap_ci(np.mean, np.zeros(3), np.zeros(4))
