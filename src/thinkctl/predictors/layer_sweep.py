"""Which layer to probe: fit one probe per layer on a grouped split and compare held-out AUROC.

:func:`layer_sweep` computes; :func:`plot_layer_sweep` draws (compute and plot stay separate, as scikit-learn's
``calibration_curve`` and ``CalibrationDisplay``). All layers share one train/test split by problem, so their AUROCs
are compared on the same held-out problems; intervals come from a bootstrap over held-out problems.

Examples
--------
>>> import numpy as np
>>> from thinkctl.predictors import HiddenStateProbe, layer_sweep
>>> rng = np.random.default_rng(0)
>>> y = rng.integers(0, 2, size=300)
>>> X_by_layer = {0: rng.normal(size=(300, 8)), 1: rng.normal(size=(300, 8)) + y[:, None]}
>>> result = layer_sweep(X_by_layer, y, probe=HiddenStateProbe(max_epochs=30), n_bootstrap=100)
>>> result["best_layer"], result["auroc"][1] > 0.8
(1, True)
"""

from __future__ import annotations

import logging
import numbers
from typing import Any, Mapping

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import clone

from thinkctl.predictors.bootstrap import DEFAULT_CONFIDENCE, DEFAULT_N_BOOTSTRAP, auroc_ci
from thinkctl.predictors.probe import HiddenStateProbe, _as_binary, _as_matrix
from thinkctl.predictors.splits import DEFAULT_TEST_SIZE, grouped_train_test_split

__all__ = ["layer_sweep", "plot_layer_sweep", "CHANCE_AUROC"]

logger = logging.getLogger(__name__)

#: AUROC of an uninformative score, drawn as a reference line.
CHANCE_AUROC = 0.5


def layer_sweep(
    X_by_layer: Mapping[int, Any],
    y: ArrayLike,
    groups: ArrayLike | None = None,
    *,
    probe: HiddenStateProbe | None = None,
    test_size: float | int = DEFAULT_TEST_SIZE,
    n_bootstrap: int = DEFAULT_N_BOOTSTRAP,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
    return_probes: bool = False,
) -> dict[str, Any]:
    """Fit a probe per layer and report its held-out AUROC with a bootstrap interval.

    Parameters
    ----------
    X_by_layer : mapping of int to array-like of shape (n_samples, hidden_size)
        Hidden states of the same samples at each layer (numpy or torch).
    y : array-like of shape (n_samples,)
        Binary labels in {0, 1}.
    groups : array-like of shape (n_samples,), optional
        Problem id of every sample: the test split holds whole problems and the bootstrap resamples problems.
        ``None``: every sample is its own problem.
    probe : HiddenStateProbe, optional
        Template, cloned per layer (its ``layer`` is set to the key). ``None``: ``HiddenStateProbe()`` (linear).
    test_size : float or int, default=0.25
        Fraction (or number) of problems held out; the split is stratified by ``y``.
    n_bootstrap : int, default=1000
        Bootstrap resamples for each interval.
    confidence : float, default=0.95
        Coverage of the intervals.
    seed : int, default=0
        Seed of the split and of the bootstrap.
    return_probes : bool, default=False
        Add the fitted probes under ``"probes"`` (then the result is no longer JSON-serialisable).

    Returns
    -------
    dict
        ``layers`` (sorted list), ``auroc`` ({layer: float}), ``ci95`` ({layer: [lo, hi]}), ``best_layer`` (highest
        held-out AUROC), ``n_train``, ``n_test``, ``n_test_groups``, ``confidence``, ``n_bootstrap``, ``seed``,
        ``test_size`` and ``probe_params``; plus ``probes`` when asked.
    """
    if not isinstance(X_by_layer, Mapping) or not X_by_layer:
        raise ValueError("X_by_layer must be a non-empty dict {layer index: array of shape (n_samples, hidden)}")
    layers = sorted(X_by_layer)
    if not all(isinstance(k, numbers.Integral) and not isinstance(k, bool) for k in layers):
        raise ValueError(f"X_by_layer keys must be integer layer indices, got {layers[:5]}")
    mats = {k: _as_matrix(X_by_layer[k], f"X_by_layer[{k}]") for k in layers}
    n = mats[layers[0]].shape[0]
    wrong = {k: m.shape[0] for k, m in mats.items() if m.shape[0] != n}
    if wrong:
        raise ValueError(f"layers hold different numbers of samples ({n} for layer {layers[0]}, {wrong} elsewhere); "
                         "pass the same samples for every layer")
    yy = _as_binary(y, n)
    g = np.arange(n) if groups is None else np.asarray(groups)
    if g.shape != (n,):
        raise ValueError(f"groups has shape {g.shape} but there are {n} samples; pass one problem id per sample")
    tr, te = grouped_train_test_split(g, test_size=test_size, seed=seed, stratify=yy)
    if np.unique(yy[te]).size < 2 or np.unique(yy[tr]).size < 2:
        raise ValueError("the grouped split left a single class on one side; pass more problems or a larger test_size")
    template = probe if probe is not None else HiddenStateProbe()
    if not isinstance(template, HiddenStateProbe):
        raise ValueError(f"probe={probe!r} must be a HiddenStateProbe (it is cloned per layer)")
    auroc: dict[int, float] = {}
    ci: dict[int, list[float]] = {}
    probes: dict[int, HiddenStateProbe] = {}
    for layer in layers:
        est = clone(template).set_params(layer=int(layer))
        est.fit(mats[layer][tr], yy[tr], groups=g[tr])
        r = auroc_ci(yy[te], est.decision_function(mats[layer][te]), groups=g[te], n_bootstrap=n_bootstrap,
                     confidence=confidence, seed=seed)
        auroc[int(layer)], ci[int(layer)] = r["value"], r["ci95"]
        if return_probes:
            probes[int(layer)] = est
        logger.info("layer %d: held-out AUROC %.3f [%.3f, %.3f]", layer, r["value"], *r["ci95"])
    best = max(auroc, key=lambda k: auroc[k])
    result: dict[str, Any] = {
        "layers": [int(k) for k in layers],
        "auroc": auroc,
        "ci95": ci,
        "best_layer": best,
        "n_train": int(tr.size),
        "n_test": int(te.size),
        "n_test_groups": int(np.unique(g[te]).size),
        "test_size": test_size,
        "confidence": confidence,
        "n_bootstrap": n_bootstrap,
        "seed": seed,
        "probe_params": {k: v for k, v in template.get_params().items()},
    }
    if return_probes:
        result["probes"] = probes
    return result


def plot_layer_sweep(result: Mapping[str, Any], ax: Any = None) -> Any:
    """Held-out AUROC per layer with its interval, the chance line and the best layer marked.

    Parameters
    ----------
    result : dict
        Output of :func:`layer_sweep` (or the same loaded from JSON, whose keys are strings).
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; a new figure is made when None.

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt

    try:
        layers = [int(k) for k in result["layers"]]
        auroc = {int(k): float(v) for k, v in result["auroc"].items()}
        ci = {int(k): v for k, v in result["ci95"].items()}
        best = int(result["best_layer"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"result is not a layer_sweep output ({exc!r}); pass what layer_sweep returned") from exc
    if ax is None:
        _, ax = plt.subplots()
    values = np.array([auroc[k] for k in layers])
    lo = np.array([ci[k][0] for k in layers], dtype=float)
    hi = np.array([ci[k][1] for k in layers], dtype=float)
    ax.errorbar(layers, values, yerr=[values - lo, hi - values], fmt="o-", capsize=3, label="held-out AUROC")
    ax.axhline(CHANCE_AUROC, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.plot([best], [auroc[best]], marker="*", markersize=14, color="tab:red", linestyle="none",
            label=f"best layer ({best})")
    conf = result.get("confidence", DEFAULT_CONFIDENCE)
    ax.set_xlabel("layer")
    ax.set_ylabel(f"AUROC ({round(100 * float(conf))}% CI)")
    ax.set_title("Probe AUROC by layer")
    ax.legend(loc="best")
    return ax
