"""Calibrate a bundle's predictors and certify its early-stopping threshold (``thinkctl calibrate``).

Uses only the bundle's ``calib`` problems to fit and the ``test`` problems to measure:

1. the confidence probe's logits -> each calibrator, chosen by grouped cross-validated Brier score on ``calib``;
2. Learn-then-Test (Angelopoulos et al. 2021) on ``calib`` samples for the rule "stop at the first checkpoint
   whose calibrated confidence >= λ": the loss is 1 when stopping there turns a right final answer into a wrong
   one; the chosen λ keeps that risk <= ``epsilon`` with probability >= 1 - ``delta`` (or None, with the reason);
3. on ``test``: ECE (15 bins) before and after calibration with bootstrap intervals, and the realised risk and
   thinking tokens saved at the chosen λ.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from thinkctl.calibration.calibrators import make_calibrator
from thinkctl.calibration.metrics import (auroc, bootstrap_ci, brier_score, expected_calibration_error,
                                          negative_log_likelihood)
from thinkctl.calibration.risk_control import early_stopping_losses, learn_then_test
from thinkctl.traces.store import TraceStore

__all__ = ["CalibrationConfig", "calibrate_bundle", "checkpoint_matrix", "bundle_report_entries"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CalibrationConfig:
    """Calibrator candidates, risk level and threshold grid.

    ``epsilon=0.05, delta=0.1``: stopping early may turn at most 5 % of right answers wrong, with 90 % confidence.
    """

    calibrators: tuple[str, ...] = ("temperature", "platt", "isotonic", "histogram")
    cv_folds: int = 5
    n_bins: int = 15
    epsilon: float = 0.05
    delta: float = 0.1
    method: str = "binomial"
    thresholds: tuple[float, float, int] = (0.05, 0.995, 190)  # linspace(start, stop, num); fixed-sequence testing
    #                                                          from the top, so a finer, wider grid costs no validity
    n_boot: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.epsilon < 1 or not 0 < self.delta < 1:
            raise ValueError(f"epsilon={self.epsilon} and delta={self.delta} must be in (0, 1)")
        if self.cv_folds < 2:
            raise ValueError(f"cv_folds={self.cv_folds} must be at least 2")


def _fold_of(groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    uniq = np.unique(groups)
    perm = np.random.default_rng(seed).permutation(len(uniq))
    fold_of_group = dict(zip(uniq[perm], np.arange(len(uniq)) % k))
    return np.array([fold_of_group[g] for g in groups])


def checkpoint_matrix(sample: np.ndarray, values: np.ndarray, fill: float = np.nan) -> tuple[np.ndarray, np.ndarray]:
    """Arrange per-checkpoint ``values`` into (n_samples, max_checkpoints) in generation order, padded with ``fill``.

    Returns the matrix and the sample ids of its rows.
    """
    ids, inverse = np.unique(sample, return_inverse=True)
    width = int(np.bincount(inverse).max())
    out = np.full((len(ids), width), fill, dtype=float)
    col = np.zeros(len(ids), dtype=int)
    for i, row in enumerate(inverse):
        out[row, col[row]] = values[i]
        col[row] += 1
    return out, ids


def _metrics(y: np.ndarray, p: np.ndarray, cfg: CalibrationConfig, groups_seed: int) -> dict[str, Any]:
    def ece(yt: np.ndarray, pp: np.ndarray) -> float:
        return expected_calibration_error(yt, pp, n_bins=cfg.n_bins)

    out = {}
    for name, fn in (("ece", ece), ("brier", brier_score), ("nll", negative_log_likelihood), ("auroc", auroc)):
        point, lo, hi = bootstrap_ci(fn, y, p, n_boot=cfg.n_boot, seed=groups_seed)
        out[name] = {"value": float(point), "ci95": [float(lo), float(hi)]}
    return out


def calibrate_bundle(bundle_dir: str | os.PathLike[str], cfg: CalibrationConfig = CalibrationConfig()) -> dict[str, Any]:
    """Calibrate the bundle in ``bundle_dir`` in place; return the report (also ``calibration_report.json``)."""
    from thinkctl.predictors.probe import HiddenStateProbe

    bdir = Path(bundle_dir)
    meta_path = bdir / "bundle.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{bdir} is not a bundle (no bundle.json); create one with `thinkctl train`")
    meta = json.loads(meta_path.read_text())
    store = TraceStore(meta["trace_store"])
    probe = HiddenStateProbe.load(bdir / "confidence_probe")
    ca = store.checkpoint_arrays(meta["confidence_layer"])
    logits = probe.decision_function(ca.X)
    y = ca.y.astype(int)
    cal = np.isin(ca.groups, meta["split"]["calib"])
    test = np.isin(ca.groups, meta["split"]["test"])

    # 1. choose the calibrator by grouped cross-validation on calib
    folds = _fold_of(ca.groups[cal], cfg.cv_folds, cfg.seed)
    cv: dict[str, float] = {}
    for name in cfg.calibrators:
        oof = np.empty(cal.sum())
        for f in range(cfg.cv_folds):
            fit_m, pred_m = folds != f, folds == f
            c = make_calibrator(name).fit(logits[cal][fit_m], y[cal][fit_m])
            oof[pred_m] = c.predict_proba(logits[cal][pred_m])
        cv[name] = float(brier_score(y[cal], oof))
    best = min(cv, key=cv.get)
    calibrator = make_calibrator(best).fit(logits[cal], y[cal])
    (bdir / "calibration").mkdir(exist_ok=True)
    calibrator.save(bdir / "calibration" / "confidence.json",
                    metadata={"model": meta["model"]["name"], "layer": meta["confidence_layer"]})
    p_raw = 1.0 / (1.0 + np.exp(-logits))
    p_cal = calibrator.predict_proba(logits)

    # 2. Learn-then-Test on calib samples
    lam = np.linspace(*cfg.thresholds[:2], int(cfg.thresholds[2]))

    def matrices(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        conf, ids = checkpoint_matrix(ca.sample[mask], p_cal[mask])
        ok, _ = checkpoint_matrix(ca.sample[mask], y[mask].astype(float), fill=0.0)
        pos, _ = checkpoint_matrix(ca.sample[mask], ca.position[mask].astype(float))
        frac, _ = checkpoint_matrix(ca.sample[mask], ca.fraction[mask].astype(float))
        final = np.array([ca.final_correct[mask][ca.sample[mask] == s][0] for s in ids])
        return conf, ok, pos, frac, final

    conf_c, ok_c, _, _, final_c = matrices(cal)
    losses = early_stopping_losses(conf_c, ok_c, final_c, lam)
    ltt = learn_then_test(None, losses, lam, cfg.epsilon, cfg.delta, method=cfg.method)
    risk_doc = {"rule": "stop at the first checkpoint whose calibrated confidence >= threshold",
                "loss": "1 when the stopped answer is wrong and the full run's answer is right",
                "epsilon": cfg.epsilon, "delta": cfg.delta, "method": cfg.method, "n_calib_samples": int(len(final_c)),
                "threshold": None if ltt.chosen is None else float(ltt.chosen), "reason": ltt.reason,
                "n_valid_thresholds": int(len(ltt.valid_thresholds))}
    (bdir / "calibration" / "risk_control.json").write_text(json.dumps(risk_doc, indent=2))

    # 3. held-out test figures
    report: dict[str, Any] = {
        "config": asdict(cfg), "calibrator": best, "cv_brier_on_calib": cv,
        "n_checkpoints": {"calib": int(cal.sum()), "test": int(test.sum())},
        "test_uncalibrated": _metrics(y[test], p_raw[test], cfg, cfg.seed),
        "test_calibrated": _metrics(y[test], p_cal[test], cfg, cfg.seed),
        "risk_control": risk_doc,
    }
    conf_t, ok_t, pos_t, frac_t, final_t = matrices(test)
    if ltt.chosen is not None:
        reached = conf_t >= ltt.chosen
        first = np.where(reached.any(1), reached.argmax(1), -1)
        stopped = first >= 0
        stop_ok = np.where(stopped, ok_t[np.arange(len(first)), np.maximum(first, 0)] > 0, final_t)
        flipped = final_t & ~stop_ok
        frac_used = np.where(stopped, frac_t[np.arange(len(first)), np.maximum(first, 0)], 1.0)
        report["test_early_stopping"] = {
            "threshold": float(ltt.chosen),
            "realised_risk": float(flipped.mean()),
            "accuracy_full": float(final_t.mean()),
            "accuracy_stopped": float(stop_ok.mean()),
            "stopped_fraction": float(stopped.mean()),
            "thinking_fraction_used_mean": float(frac_used.mean()),
            "n_samples": int(len(final_t)),
        }
    (bdir / "calibration_report.json").write_text(json.dumps(report, indent=2))
    meta["calibration"] = {"confidence_calibrator": best, "stop_threshold": risk_doc["threshold"]}
    meta_path.write_text(json.dumps(meta, indent=2))
    return report


def bundle_report_entries(bundle_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Entries for :func:`thinkctl.calibration.calibration_report`: each predictor's raw logits on the bundle's
    calib problems (to fit calibrators) and test problems (to measure)."""
    from thinkctl.predictors.probe import HiddenStateProbe

    bdir = Path(bundle_dir)
    meta = json.loads((bdir / "bundle.json").read_text())
    store = TraceStore(meta["trace_store"])
    split = meta["split"]
    entries: dict[str, dict[str, Any]] = {}
    ca = store.checkpoint_arrays(meta["confidence_layer"])
    logits = HiddenStateProbe.load(bdir / "confidence_probe").decision_function(ca.X)
    cal, test = np.isin(ca.groups, split["calib"]), np.isin(ca.groups, split["test"])
    entries["confidence probe (forced answer right)"] = {
        "y_true": ca.y[cal].astype(int), "scores": logits[cal], "y_true_test": ca.y[test].astype(int),
        "scores_test": logits[test], "score_type": "logit"}
    if (bdir / "difficulty_probe").is_dir():
        sa = store.sample_arrays(meta["confidence_layer"])
        dl = HiddenStateProbe.load(bdir / "difficulty_probe").decision_function(sa.X)
        cal, test = np.isin(sa.groups, split["calib"]), np.isin(sa.groups, split["test"])
        entries["difficulty probe (one sample solves)"] = {
            "y_true": sa.y[cal].astype(int), "scores": dl[cal], "y_true_test": sa.y[test].astype(int),
            "scores_test": dl[test], "score_type": "logit"}
    return entries
