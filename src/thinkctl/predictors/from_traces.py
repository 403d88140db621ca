"""Train the predictors of a bundle from a trace store, with honest held-out figures.

Problems (never samples) are split three ways with a seed: ``train`` fits the predictors, ``calib`` is kept
untouched for calibration and risk control (``thinkctl calibrate``), ``test`` only measures. The bundle records
the split so that later stages use the same one.

* confidence: a :class:`HiddenStateProbe` on mid-generation states, target "the answer forced at this checkpoint is
  right"; the layer is chosen by a sweep **on the train split only**;
* outlook: a probe on the same states, target "the sample's final answer will be right" (what stopping now can
  lose: nothing, when the final answer would be wrong anyway);
* difficulty: a prompt-state probe and a LightGBM :class:`DifficultyModel` on the query, target "one sample solves
  it"; both are reported, the better one on train-split cross-validation is the bundle's ``difficulty``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from thinkctl import __version__
from thinkctl.bundle import (CONFIDENCE_PROBE, DIFFICULTY_LGBM, DIFFICULTY_PROBE, LAYER_SWEEP_PLOT, OUTLOOK_PROBE,
                             TRAIN_REPORT, BundleLayout)
from thinkctl.predictors.bootstrap import auroc_ci
from thinkctl.predictors.difficulty import DifficultyModel
from thinkctl.predictors.layer_sweep import layer_sweep, plot_layer_sweep
from thinkctl.predictors.probe import HiddenStateProbe
from thinkctl.predictors.splits import grouped_train_test_split
from thinkctl.traces.store import TraceStore

__all__ = ["PredictorTrainingConfig", "train_predictors", "problem_split"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictorTrainingConfig:
    """Split sizes (fractions of problems), probe kind and bootstrap size."""

    seed: int = 0
    calib_fraction: float = 0.25
    test_fraction: float = 0.25
    probe_kind: Literal["linear", "mlp"] = "linear"
    n_bootstrap: int = 1000

    def __post_init__(self) -> None:
        if not (0 < self.calib_fraction < 1 and 0 < self.test_fraction < 1
                and self.calib_fraction + self.test_fraction < 0.9):
            raise ValueError(f"calib_fraction={self.calib_fraction} and test_fraction={self.test_fraction} must be in "
                             "(0, 1) and leave at least 10 % of problems for training")


def problem_split(problem_ids: list[str], cfg: PredictorTrainingConfig) -> dict[str, list[str]]:
    """Split distinct problem ids into train / calib / test (deterministic in ``cfg.seed``)."""
    ids = np.array(sorted(set(problem_ids)))
    rest, test = grouped_train_test_split(ids, test_size=cfg.test_fraction, seed=cfg.seed)
    rel = cfg.calib_fraction / (1 - cfg.test_fraction)
    tr, cal = grouped_train_test_split(ids[rest], test_size=rel, seed=cfg.seed + 1)
    return {"train": sorted(ids[rest][tr].tolist()), "calib": sorted(ids[rest][cal].tolist()),
            "test": sorted(ids[test].tolist())}


def _mask(groups: np.ndarray, ids: list[str]) -> np.ndarray:
    return np.isin(groups, np.array(ids))


def train_predictors(store: TraceStore, out_dir: str | os.PathLike[str],
                     cfg: PredictorTrainingConfig = PredictorTrainingConfig()) -> dict[str, Any]:
    """Fit the bundle's predictors from ``store`` into ``out_dir``; return the report (also in
    ``train_report.json``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layout = BundleLayout(out)
    meta = store.config
    model_name = meta["model"]["name"]
    rows = store.samples()
    split = problem_split([r["problem_id"] for r in rows], cfg)
    report: dict[str, Any] = {"thinkctl_version": __version__, "model": meta["model"], "config": asdict(cfg),
                              "n_problems": {k: len(v) for k, v in split.items()}}

    # -- confidence: layer sweep on train, probe on train, AUROC on test --------------------------------------
    by_layer = {layer: store.checkpoint_arrays(layer) for layer in store.layers()}
    first = next(iter(by_layer.values()))
    tr, te = _mask(first.groups, split["train"]), _mask(first.groups, split["test"])
    sweep = layer_sweep({k: v.X[tr] for k, v in by_layer.items()}, first.y[tr], first.groups[tr],
                        probe=HiddenStateProbe(kind=cfg.probe_kind, model_name=model_name),
                        n_bootstrap=min(cfg.n_bootstrap, 300), seed=cfg.seed)
    best = int(sweep["best_layer"])
    probe = HiddenStateProbe(kind=cfg.probe_kind, model_name=model_name, layer=best, random_state=cfg.seed)
    probe.fit(by_layer[best].X[tr], first.y[tr], groups=first.groups[tr])
    p_test = probe.predict_proba(by_layer[best].X[te])
    conf_report = {
        "target": "answer forced at this checkpoint is right",
        "layer": best,
        "layer_sweep_train_split": {str(k): {"auroc": sweep["auroc"][k], "ci95": sweep["ci95"][k]}
                                    for k in sweep["auroc"]},
        "test_auroc": auroc_ci(first.y[te], p_test, groups=first.groups[te], n_bootstrap=cfg.n_bootstrap,
                               seed=cfg.seed),
        "test_positive_rate": float(first.y[te].mean()),
        "n_checkpoints": {"train": int(tr.sum()), "test": int(te.sum())},
    }
    # baselines: token confidence alone (DeepConf-style), position alone
    names = first.confidence_names
    if "conf_window" in names:
        c = first.confidence[te, names.index("conf_window")]
        conf_report["baseline_token_confidence_auroc"] = auroc_ci(first.y[te], c, groups=first.groups[te],
                                                                  n_bootstrap=cfg.n_bootstrap, seed=cfg.seed)
    conf_report["baseline_position_fraction_auroc"] = auroc_ci(first.y[te], first.fraction[te],
                                                               groups=first.groups[te],
                                                               n_bootstrap=cfg.n_bootstrap, seed=cfg.seed)
    probe.save(layout.path(CONFIDENCE_PROBE))
    report["confidence"] = conf_report

    # -- outlook: at the same layer and checkpoints, "the sample's own final answer will be right" ----------------
    # With the confidence it estimates what stopping now can lose (a right final answer): thinking whose final
    # answer will be wrong anyway is cheap to stop, and the stop rule certified by ``thinkctl calibrate`` uses both.
    final = first.final_correct
    if len(np.unique(final[tr])) == 2 and len(np.unique(final[te])) == 2:
        outlook = HiddenStateProbe(kind=cfg.probe_kind, model_name=model_name, layer=best, random_state=cfg.seed)
        outlook.fit(by_layer[best].X[tr], final[tr], groups=first.groups[tr])
        report["outlook"] = {
            "target": "the sample's final answer will be right (read at each checkpoint)", "layer": best,
            "test_auroc": auroc_ci(final[te], outlook.predict_proba(by_layer[best].X[te]), groups=first.groups[te],
                                   n_bootstrap=cfg.n_bootstrap, seed=cfg.seed),
            "test_positive_rate": float(final[te].mean())}
        outlook.save(layout.path(OUTLOOK_PROBE))
    else:
        report["outlook"] = {"skipped": "one split holds a single class (every final answer right or every one wrong)"}
        if layout.path(OUTLOOK_PROBE).is_dir():  # a previous training's probe must not outlive this one
            shutil.rmtree(layout.path(OUTLOOK_PROBE))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ax = plot_layer_sweep(sweep)
        ax.figure.savefig(layout.path(LAYER_SWEEP_PLOT), dpi=110, bbox_inches="tight")
        plt.close(ax.figure)
    except (ImportError, ValueError, KeyError) as exc:  # a plot is a nicety; never lose the bundle over it
        logger.warning("layer-sweep plot not written: %s", exc)

    # -- difficulty: prompt-state probe and LightGBM on query features ------------------------------------------
    samp = store.sample_arrays(best)
    s_tr, s_te = _mask(samp.groups, split["train"]), _mask(samp.groups, split["test"])
    diff: dict[str, Any] = {"target": "one sample solves the query", "test_positive_rate": float(samp.y[s_te].mean())}
    if len(np.unique(samp.y[s_tr])) == 2 and len(np.unique(samp.y[s_te])) == 2:
        dprobe = HiddenStateProbe(kind=cfg.probe_kind, model_name=model_name, layer=best, random_state=cfg.seed)
        dprobe.fit(samp.X[s_tr], samp.y[s_tr], groups=samp.groups[s_tr])
        diff["prompt_probe_test_auroc"] = auroc_ci(samp.y[s_te], dprobe.predict_proba(samp.X[s_te]),
                                                   groups=samp.groups[s_te], n_bootstrap=cfg.n_bootstrap,
                                                   seed=cfg.seed)
        dprobe.save(layout.path(DIFFICULTY_PROBE))
        # LightGBM on the query: one row per problem, target = fraction of its samples solved
        by_pid: dict[str, dict[str, Any]] = {}
        for r in rows:
            d = by_pid.setdefault(r["problem_id"], {"prompt": r["prompt"], "features": r["features"], "ok": []})
            d["ok"].append(r["correct"])
        train_ids = [pid for pid in split["train"] if pid in by_pid]
        lgbm = DifficultyModel(target="solve", random_state=cfg.seed)
        lgbm.fit([by_pid[p] for p in train_ids], [float(np.mean(by_pid[p]["ok"])) for p in train_ids],
                 sample_weight=[len(by_pid[p]["ok"]) for p in train_ids])
        test_rows = [r for r in rows if r["problem_id"] in set(split["test"])]
        p_solve = lgbm.predict_proba([by_pid[r["problem_id"]] for r in test_rows])
        diff["lightgbm_test_auroc"] = auroc_ci(np.array([r["correct"] for r in test_rows]), p_solve,
                                               groups=np.array([r["problem_id"] for r in test_rows]),
                                               n_bootstrap=cfg.n_bootstrap, seed=cfg.seed)
        lgbm.save(layout.path(DIFFICULTY_LGBM), metadata={"model_name": model_name})
    else:
        diff["skipped"] = "one split holds a single class (every sample right or every sample wrong)"
    report["difficulty"] = diff
    layout.write_manifest({"model": meta["model"], "task": meta["collect"]["task"],
                           **layout.store_reference(store.path), "split": split,
                           "confidence_layer": best, "collect": meta["collect"],
                           "parts": layout.probe_fingerprints()})
    layout.path(TRAIN_REPORT).write_text(json.dumps(report, indent=2, default=float))
    return report
