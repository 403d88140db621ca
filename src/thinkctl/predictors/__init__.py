"""Predictors: how hard a query is (before generation) and how likely the current answer is right (during it).

All are scikit-learn estimators (``fit(X, y) -> self``, fitted state ending in ``_``, ``NotFittedError`` before
fit) that persist without pickle:

* :class:`QueryFeatures` — task-agnostic text features of a prompt plus the numeric / categorical entries of a
  ``Problem.features`` dict (a transformer).
* :class:`DifficultyModel` — LightGBM on :class:`QueryFeatures`: P(one sample solves the query), or the difficulty
  level (expected level, P(level >= k)); optional expected-token head. Saved as LightGBM text + JSON.
* :class:`HiddenStateProbe` — linear or small MLP (torch) on one layer's hidden states; ``predict_proba`` of shape
  ``(n_samples,)``, ``decision_function`` logits, callable on a ``(B, hidden)`` tensor for the stopping hooks.
  Saved as safetensors + JSON recording the model, hidden size and layer it belongs to.
* :func:`layer_sweep` / :func:`plot_layer_sweep` — which layer to probe, with bootstrap intervals.
* :func:`grouped_train_test_split` — splits by problem, so that no problem straddles train and test.
* :func:`auroc_ci`, :func:`spearman_ci`, :func:`bootstrap_ci` — held-out metrics with (cluster) bootstrap intervals.

Examples
--------
>>> import numpy as np
>>> from thinkctl.predictors import HiddenStateProbe, grouped_train_test_split
>>> rng = np.random.default_rng(0)
>>> problem = np.repeat(np.arange(100), 4)                  # 100 problems x 4 samples
>>> X = rng.normal(size=(400, 32)); y = (X[:, :4].sum(axis=1) > 0).astype(int)
>>> train, test = grouped_train_test_split(problem, test_size=0.25, seed=0)
>>> probe = HiddenStateProbe(model_name="toy", layer=-1).fit(X[train], y[train], groups=problem[train])
>>> from sklearn.metrics import roc_auc_score
>>> roc_auc_score(y[test], probe.predict_proba(X[test])) > 0.9
True
"""

from __future__ import annotations

from thinkctl.predictors.bootstrap import auroc_ci, bootstrap_ci, spearman_ci
from thinkctl.predictors.difficulty import TARGETS, DifficultyModel
from thinkctl.predictors.features import FEATURE_SETS, QueryFeatures
from thinkctl.predictors.layer_sweep import layer_sweep, plot_layer_sweep
from thinkctl.predictors.probe import PROBE_KINDS, HiddenStateProbe
from thinkctl.predictors.splits import grouped_train_test_split

__all__ = [
    "QueryFeatures",
    "FEATURE_SETS",
    "DifficultyModel",
    "TARGETS",
    "HiddenStateProbe",
    "PROBE_KINDS",
    "layer_sweep",
    "plot_layer_sweep",
    "grouped_train_test_split",
    "auroc_ci",
    "spearman_ci",
    "bootstrap_ci",
]
