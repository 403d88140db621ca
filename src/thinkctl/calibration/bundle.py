"""Calibrate a bundle's predictors and certify its early-stopping threshold (``thinkctl calibrate``).

Fits on the bundle's ``calib`` problems (and out-of-fold logits of its ``train`` problems) and measures on its
``test`` problems:

1. the confidence probe's logits -> each calibrator, chosen by grouped cross-validated Brier score. The calibration
   data are the ``calib`` problems' checkpoints plus, by default, every ``train`` checkpoint scored by a probe
   refitted without that checkpoint's problem (``train_folds``-fold cross-fitting by problem, the probe's own
   settings). A few dozen calib problems alone leave the calibrator at the mercy of their right-answer rate (on the
   embedded model's 240-problem bundle, 60 calib problems at 0.23 against 0.30 on test); cross-fitting gives it
   three times the problems without touching ``calib``'s role in step 2. The out-of-fold logits are kept in
   ``calibration/confidence_oof.json`` so that reports refit on the same data;
2. the outlook probe (``outlook_probe``, "the final answer will be right", when ``thinkctl train`` wrote one) ->
   a calibrator chosen the same way on the calib problems (``calibration/outlook.json``);
3. Learn-then-Test (Angelopoulos et al. 2021) on ``calib`` problems for the rule the controller runs: "read the stop
   score at the thinking budgets ``check_points`` (by default every checkpoint of the trace store's grid, every
   ``every`` thinking tokens) and stop at the first one >= λ". With an outlook probe the stop score is chosen on
   the train split, out of fold, among the calibrated confidence, ``1 - outlook`` and ``max(confidence, 1 - kappa *
   outlook)`` (:func:`choose_stop_score`): high when the answer is already there or when the thinking cannot help
   (a final answer that will be wrong anyway loses nothing by stopping); without one it is the confidence. Reading
   is free (a probe on a hidden state), so a dense schedule costs no token; what is certified is the rule actually
   run, score and schedule included. The loss is 1 when stopping there turns a right final answer into a wrong one;
   the chosen λ keeps that risk <= ``epsilon`` with probability >= 1 - ``delta`` (or None, with the reason).
   The unit of the guarantee is the problem, the unit that is drawn independently: a problem's several samples
   are correlated, and counting them as independent overstates the evidence. When the store holds a greedy sample
   of every problem (the controller's serial thinking is greedy) the loss is that sample's (exact binomial test);
   otherwise it is the mean loss over the problem's samples, a number in [0, 1] (Hoeffding-Bentkus);
4. on ``test``: ECE (15 bins) before and after calibration with bootstrap intervals, and the realised risk and
   thinking tokens saved at the chosen λ, in the same units.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

from thinkctl.calibration.calibrators import make_calibrator
from thinkctl.calibration.metrics import (auroc, bootstrap_ci, brier_score, expected_calibration_error,
                                          negative_log_likelihood)
from thinkctl.calibration.risk_control import (STOP_SCORE_CONFIDENCE, STOP_SCORE_OUTLOOK, STOP_SCORE_OUTLOOK_ONLY,
                                               Method, _p_values, early_stopping_losses, learn_then_test,
                                               min_calibration_size, stop_score)
from thinkctl.bundle import (CALIBRATION_DIR, CALIBRATION_REPORT, CONFIDENCE_CALIBRATOR, CONFIDENCE_OOF,
                             CONFIDENCE_PROBE, DIFFICULTY_PROBE, OUTLOOK_CALIBRATOR, OUTLOOK_PROBE, RISK_CONTROL,
                             BundleLayout)
from thinkctl.traces.store import CheckpointArrays, TraceStore

__all__ = ["CalibrationConfig", "calibrate_bundle", "checkpoint_matrix", "bundle_report_entries", "choose_calibrator",
           "out_of_fold_logits", "StopRuleUnits", "stop_rule_units", "RISK_CONTROL_KIND", "OOF_KIND",
           "checkpoint_grid", "threshold_grid", "most_losses_certifiable", "early_stopping_figures", "OUTLOOK_PROBE",
           "choose_stop_score", "KAPPA_GRID", "STOP_SCORE_CANDIDATES"]

logger = logging.getLogger(__name__)

#: Envelope kinds of the calibration parts of a bundle (see :mod:`thinkctl.bundle`).
RISK_CONTROL_KIND = "risk_control"
OOF_KIND = "out_of_fold_logits"


@dataclass(frozen=True)
class CalibrationConfig:
    """Calibrator candidates, risk level and threshold grid.

    ``epsilon=0.02, delta=0.1``: stopping early may lose the right answer of at most 2 % of problems, with 90 %
    confidence (at least 114 calibration problems are needed to certify anything at this level, several hundred to
    certify a rule that stops often). ``check_points``: thinking budgets at which the certified rule reads its
    score; None (default): the trace store's checkpoint grid, every ``every`` thinking tokens up to its
    ``max_new_tokens`` (the controller then reads at exactly these); pass a custom ``ControllerConfig``'s
    ``check_points`` to certify those instead; empty: every recorded checkpoint, end of thinking included.
    Recorded checkpoints at other positions are ignored. ``fine_thresholds``: extra thresholds ``1 - 10**-k``
    spread geometrically between 1e-4 and 1e-1 below 1, where a stop score that must rarely be wrong lives.
    ``train_folds``: folds (by problem) of the cross-fitted train logits added to the calibrators' data; 0 fits
    them on the calib split alone.
    """

    calibrators: tuple[str, ...] = ("temperature", "platt", "isotonic", "histogram")
    cv_folds: int = 5
    n_bins: int = 15
    epsilon: float = 0.02
    delta: float = 0.1
    method: Method = "binomial"
    thresholds: tuple[float, float, int] = (0.05, 0.995, 190)  # linspace(start, stop, num); fixed-sequence testing
    #                                                          from the top, so a finer, wider grid costs no validity
    n_boot: int = 1000
    seed: int = 0
    check_points: tuple[int, ...] | None = None
    train_folds: int = 5
    fine_thresholds: int = 60

    def __post_init__(self) -> None:
        if not 0 < self.epsilon < 1 or not 0 < self.delta < 1:
            raise ValueError(f"epsilon={self.epsilon} and delta={self.delta} must be in (0, 1)")
        if self.check_points is not None and any(not isinstance(c, (int, np.integer)) or c < 1
                                                 for c in self.check_points):
            raise ValueError(f"check_points={self.check_points!r} must be positive integers (thinking tokens), "
                             "e.g. (64, 128, 256); () reads every recorded checkpoint")
        if self.cv_folds < 2:
            raise ValueError(f"cv_folds={self.cv_folds} must be at least 2")
        if self.train_folds == 1 or self.train_folds < 0:
            raise ValueError(f"train_folds={self.train_folds} must be 0 (calibrate on the calib split alone) or at "
                             "least 2 (cross-fit the train split's logits)")


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
    def ece(yt: Any, pp: Any) -> float:
        return expected_calibration_error(yt, pp, n_bins=cfg.n_bins)

    out = {}
    scores: tuple[tuple[str, Callable[[Any, Any], float]], ...] = (
        ("ece", ece), ("brier", brier_score), ("nll", negative_log_likelihood), ("auroc", auroc))
    for name, fn in scores:
        point, lo, hi = bootstrap_ci(fn, y, p, n_boot=cfg.n_boot, seed=groups_seed)
        out[name] = {"value": float(point), "ci95": [float(lo), float(hi)]}
    return out


def choose_calibrator(x: np.ndarray, y: np.ndarray, groups: np.ndarray,
                      cfg: CalibrationConfig = CalibrationConfig()) -> tuple[str, dict[str, float], Any]:
    """The calibrator of ``cfg.calibrators`` with the lowest grouped cross-validated Brier score on logits ``x`` and
    labels ``y`` (``cfg.cv_folds`` folds by ``groups``), refitted on all of them: ``(name, {name: Brier}, fitted)``."""
    n_groups = len(np.unique(groups))
    if n_groups < 2:
        raise ValueError(f"choosing a calibrator by grouped cross-validation needs checkpoints of at least 2 problems, "
                         f"got {n_groups}; give the calib split more problems (collect more, or raise "
                         "`thinkctl train --calib-fraction`)")
    folds = _fold_of(groups, cfg.cv_folds, cfg.seed)
    cv: dict[str, float] = {}
    for name in cfg.calibrators:
        oof = np.empty(len(y))
        for f in range(cfg.cv_folds):
            fit_m, pred_m = folds != f, folds == f
            if not pred_m.any():  # fewer problems than folds: this fold holds none
                continue
            c = make_calibrator(name).fit(x[fit_m], y[fit_m])
            oof[pred_m] = c.predict_proba(x[pred_m])
        cv[name] = float(brier_score(y, oof))
    best = min(cv, key=lambda k: cv[k])
    return best, cv, make_calibrator(best).fit(x, y)


#: Stop-score candidates tried on the train split: the confidence alone, the outlook alone, and both at these
#: exchange rates ``kappa`` (see :func:`~thinkctl.calibration.risk_control.stop_score`).
KAPPA_GRID = tuple(float(k) for k in np.geomspace(1e-2, 1e2, 9))
STOP_SCORE_CANDIDATES: tuple[tuple[str, float | None], ...] = (
    (STOP_SCORE_CONFIDENCE, None), (STOP_SCORE_OUTLOOK_ONLY, None), *((STOP_SCORE_OUTLOOK, k) for k in KAPPA_GRID))


def choose_stop_score(ca: CheckpointArrays, confidence: np.ndarray, outlook: np.ndarray, train: np.ndarray,
                      points: tuple[int, ...], cfg: CalibrationConfig, n_calib: int
                      ) -> tuple[str, float | None, dict[str, float]]:
    """The stop score (and ``kappa``) that saves the most thinking on the train split at the threshold that
    Learn-then-Test would certify on ``n_calib`` calibration problems whose risks were the train split's.

    Pass out-of-fold ``confidence`` and ``outlook`` on the train checkpoints (a probe scoring its own training data
    is overconfident). Choosing on train, before the calib problems are seen, keeps the calib test valid (Pareto
    testing: learn the path on one split, test along it on another; Laufer-Goldshtein et al. 2023,
    arXiv:2210.07913). Returns the score, its kappa (None when it has none) and the train saving of each candidate;
    the confidence alone when the train split has no sample."""
    savings: dict[str, float] = {}
    lam = threshold_grid(cfg)
    for score, kappa in STOP_SCORE_CANDIDATES:
        units = stop_rule_units(ca, stop_score(confidence, outlook, score, kappa or 1.0), train, points)
        if not len(units.final):
            return STOP_SCORE_CONFIDENCE, None, savings
        risk = units.per_problem(early_stopping_losses(units.conf, units.ok, units.final, lam)).mean(0)
        chosen = _predicted_threshold(risk, lam, n_calib, cfg)
        name = score if kappa is None else score.replace("kappa", f"{kappa:g}")
        savings[name] = 0.0 if chosen is None else early_stopping_figures(units, chosen)["thinking_saved_fraction"]
    names = list(savings)
    best = max(range(len(names)), key=lambda i: (round(savings[names[i]], 6), -i))  # ties: the simpler, listed first
    score, kappa = STOP_SCORE_CANDIDATES[best]
    return score, kappa, savings


def _predicted_threshold(risk: np.ndarray, lam: np.ndarray, n: int, cfg: CalibrationConfig) -> float | None:
    """The threshold fixed-sequence testing (from the top, binomial) would certify on ``n`` problems whose losses
    per threshold ``lam`` occurred at the rates ``risk``."""
    order = np.argsort(-lam, kind="stable")
    p = _p_values(np.floor(risk[order] * n + 1e-9), n, cfg.epsilon, "binomial")
    failed = np.flatnonzero(p > cfg.delta)
    valid = len(lam) if not failed.size else int(failed[0])
    return float(lam[order][valid - 1]) if valid else None


def checkpoint_grid(store: TraceStore) -> tuple[int, ...]:
    """The positions at which ``store`` recorded checkpoints on every trace that got that far: every ``every``
    thinking tokens up to its ``max_new_tokens``."""
    collect_cfg = store.config["collect"]
    if "every" not in collect_cfg or "max_new_tokens" not in collect_cfg:
        raise ValueError(f"trace store {store.path} records no checkpoint grid (collect every / max_new_tokens); "
                         "give the thinking budgets to certify explicitly (--check-points B1,B2,... or 'all')")
    every, most = int(collect_cfg["every"]), int(collect_cfg["max_new_tokens"])
    return tuple(range(every, most + 1, every))


def threshold_grid(cfg: CalibrationConfig) -> np.ndarray:
    """The candidate thresholds: ``cfg.thresholds`` (a linspace) plus ``cfg.fine_thresholds`` values ``1 - d`` with
    ``d`` geometric in [1e-4, 1e-1]; fixed-sequence testing from the top, so more candidates cost no validity."""
    lam = np.linspace(*cfg.thresholds[:2], int(cfg.thresholds[2]))
    if cfg.fine_thresholds:
        lam = np.concatenate([lam, 1.0 - np.geomspace(1e-4, 1e-1, cfg.fine_thresholds)])
    return np.unique(np.round(lam, 12))


def most_losses_certifiable(n: int, epsilon: float, delta: float) -> int | None:
    """The most losses among ``n`` calibration problems with which the binomial Learn-then-Test still certifies
    ``epsilon`` at ``delta`` (None: not even zero): what the calibration set can tell apart from ``epsilon``."""
    passing = np.flatnonzero(_p_values(np.arange(n + 1, dtype=float), n, epsilon, "binomial") <= delta)
    return int(passing[-1]) if passing.size else None  # the p-value grows with the losses


def early_stopping_figures(units: "StopRuleUnits", threshold: float) -> dict[str, Any]:
    """What the rule "stop at the first checkpoint whose score >= ``threshold``" does on ``units``: realised risk,
    accuracy before and after, and the thinking tokens it reads (positions where it stops, the natural length
    elsewhere)."""
    reached = units.conf >= threshold
    first = np.where(reached.any(1), reached.argmax(1), -1)
    stopped = first >= 0
    at = np.maximum(first, 0)
    rows = np.arange(len(first))
    stop_ok = np.where(stopped, units.ok[rows, at] > 0, units.final)
    flipped = units.final & ~stop_ok
    frac_used = np.where(stopped, units.frac[rows, at], 1.0)
    used = np.where(stopped, units.position[rows, at], units.n_thinking)
    full = float(units.n_thinking.mean()) if len(units.n_thinking) else float("nan")
    return {
        "threshold": threshold,
        "units": units.description,
        "realised_risk": float(units.per_problem(flipped.astype(float)[:, None])[:, 0].mean()),
        "accuracy_full": float(units.final.mean()),
        "accuracy_stopped": float(stop_ok.mean()),
        "stopped_fraction": float(stopped.mean()),
        "thinking_fraction_used_mean": float(frac_used.mean()),
        "thinking_tokens_full_mean": full,
        "thinking_tokens_stopped_mean": float(used.mean()) if len(used) else float("nan"),
        "thinking_saved_fraction": 1.0 - float(used.mean()) / full if full > 0 else float("nan"),
        "n_samples": int(len(units.final)),
        "n_problems": int(len(units.problems)),
    }


def out_of_fold_logits(probe: Any, X: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int,
                       seed: int = 0) -> np.ndarray:
    """Logits of every row from a copy of ``probe`` (same settings, unfitted) trained without that row's group.

    ``folds``-fold by group (problem), so no probe scores a problem it was trained on: the logits then carry the
    fitted probe's miscalibration on new problems, which is what a calibrator must undo.
    """
    from sklearn.base import clone

    fold = _fold_of(groups, folds, seed)
    out = np.empty(len(y))
    for f in range(folds):
        held = fold == f
        if not held.any():
            continue
        refit = clone(probe).fit(X[~held], y[~held], groups=groups[~held])
        out[held] = refit.decision_function(X[held])
    return out


def _fit_arrays(meta: dict[str, Any], ca: CheckpointArrays, logits: np.ndarray,
                train_logits: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits, labels and problem ids of the calibrators' data: the train split's out-of-fold ``train_logits``
    (None: none) followed by the calib split's checkpoints."""
    y = ca.y.astype(int)
    cal = np.isin(ca.groups, meta["split"]["calib"])
    if train_logits is None:
        return logits[cal], y[cal], ca.groups[cal]
    train = np.isin(ca.groups, meta["split"]["train"])
    return (np.concatenate([train_logits, logits[cal]]), np.concatenate([y[train], y[cal]]),
            np.concatenate([ca.groups[train], ca.groups[cal]]))


def _calibration_data(layout: BundleLayout, meta: dict[str, Any], ca: CheckpointArrays, logits: np.ndarray, probe: Any,
                      cfg: CalibrationConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    """Logits, labels and problem ids the calibrators are fitted on: the calib split's checkpoints and, with
    ``cfg.train_folds``, the train split's out-of-fold logits (computed and saved into the existing
    calibration folder of ``layout``)."""
    y = ca.y.astype(int)
    cal = np.isin(ca.groups, meta["split"]["calib"])
    train = np.isin(ca.groups, meta["split"]["train"])
    info: dict[str, Any] = {"calib_checkpoints": int(cal.sum()), "train_folds": cfg.train_folds,
                            "train_out_of_fold_checkpoints": 0}
    layout.path(CONFIDENCE_OOF).unlink(missing_ok=True)  # a previous run's logits must not outlive its fit
    if not cfg.train_folds or not train.any():
        return (*_fit_arrays(meta, ca, logits, None), info)
    logger.info("cross-fitting the confidence probe on %d train checkpoints (%d folds by problem)",
                int(train.sum()), cfg.train_folds)
    try:
        oof = out_of_fold_logits(probe, ca.X[train], y[train], ca.groups[train], cfg.train_folds, cfg.seed)
    except ValueError as exc:  # e.g. a fold whose complement holds one class: calibrate on calib alone
        logger.warning("cannot cross-fit the train split (%s); calibrating on the calib split alone", exc)
        info["train_out_of_fold_error"] = str(exc)
        return (*_fit_arrays(meta, ca, logits, None), info)
    layout.write_document(CONFIDENCE_OOF, OOF_KIND, {
        "model": meta["model"]["name"], "layer": meta["confidence_layer"],
        "train_folds": cfg.train_folds, "seed": cfg.seed, "n": int(train.sum()), "logits": oof.tolist()})
    info["train_out_of_fold_checkpoints"] = int(train.sum())
    return (*_fit_arrays(meta, ca, logits, oof), info)


def _saved_calibration_data(layout: BundleLayout, meta: dict[str, Any], ca: CheckpointArrays,
                            logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The calibrators' data as :func:`calibrate_bundle` last fitted them (calib, plus saved out-of-fold logits)."""
    path = layout.path(CONFIDENCE_OOF)
    train_logits = None
    if path.is_file():
        doc = layout.read_document(CONFIDENCE_OOF, OOF_KIND)
        n_train = int(np.isin(ca.groups, meta["split"]["train"]).sum())
        if (doc.get("n") != n_train
                or doc.get("layer") != meta["confidence_layer"]):
            raise ValueError(f"{path} does not match this bundle's train split or confidence layer; rerun "
                             "`thinkctl calibrate` on the bundle")
        train_logits = np.asarray(doc["logits"], dtype=float)
    fit_x, fit_y, _ = _fit_arrays(meta, ca, logits, train_logits)
    return fit_x, fit_y


def calibrate_bundle(bundle_dir: str | os.PathLike[str],
                    cfg: CalibrationConfig = CalibrationConfig()) -> dict[str, Any]:
    """Calibrate the bundle in ``bundle_dir`` in place; return the report (also ``calibration_report.json``)."""
    from thinkctl.predictors.probe import HiddenStateProbe

    layout = BundleLayout(bundle_dir)
    meta = layout.read_manifest()
    store = TraceStore(layout.trace_store_path(meta))
    probe = HiddenStateProbe.load(layout.path(CONFIDENCE_PROBE))
    ca = store.checkpoint_arrays(meta["confidence_layer"])
    logits = probe.decision_function(ca.X)
    y = ca.y.astype(int)
    cal = np.isin(ca.groups, meta["split"]["calib"])
    test = np.isin(ca.groups, meta["split"]["test"])

    # 1. choose the calibrator by grouped cross-validation on the calibration data (calib + out-of-fold train)
    layout.path(CALIBRATION_DIR).mkdir(exist_ok=True)
    fit_x, fit_y, fit_groups, data_info = _calibration_data(layout, meta, ca, logits, probe, cfg)
    best, cv, calibrator = choose_calibrator(fit_x, fit_y, fit_groups, cfg)
    calibrator.save(layout.path(CONFIDENCE_CALIBRATOR),
                    metadata={"model": meta["model"]["name"], "layer": meta["confidence_layer"]})
    p_raw = 1.0 / (1.0 + np.exp(-logits))
    p_cal = calibrator.predict_proba(logits)

    # 2. the outlook probe's calibrator (calib problems), and the stop score the rule reads, chosen on train
    points = checkpoint_grid(store) if cfg.check_points is None else tuple(cfg.check_points)
    score_name, kappa, score, outlook_info = STOP_SCORE_CONFIDENCE, None, p_cal, None
    layout.path(OUTLOOK_CALIBRATOR).unlink(missing_ok=True)
    if layout.path(OUTLOOK_PROBE).is_dir():
        outlook = HiddenStateProbe.load(layout.path(OUTLOOK_PROBE))
        if outlook.layer is not None and int(outlook.layer) != int(meta["confidence_layer"]):
            raise ValueError(f"{layout.path(OUTLOOK_PROBE)} reads layer {outlook.layer} but the confidence probe reads "
                             f"{meta['confidence_layer']}; retrain the bundle with `thinkctl train`")
        o_logits = outlook.decision_function(ca.X)
        final = ca.final_correct.astype(int)
        o_name, o_cv, o_cal = choose_calibrator(o_logits[cal], final[cal], ca.groups[cal], cfg)
        o_cal.save(layout.path(OUTLOOK_CALIBRATOR),
                   metadata={"model": meta["model"]["name"], "layer": meta["confidence_layer"]})
        p_out = o_cal.predict_proba(o_logits)
        # choose the score on train, from probes that never saw the problem they score (out of fold)
        train = np.isin(ca.groups, meta["split"]["train"])
        c_sel, f_sel = p_cal.copy(), p_out.copy()
        n_oof = data_info["train_out_of_fold_checkpoints"]
        if n_oof and n_oof == int(train.sum()):
            c_sel[train] = calibrator.predict_proba(fit_x[:n_oof])
            f_sel[train] = o_cal.predict_proba(out_of_fold_logits(outlook, ca.X[train], final[train],
                                                                  ca.groups[train], cfg.train_folds, cfg.seed))
        n_calib = len(np.unique(ca.groups[cal]))
        score_name, kappa, by_score = choose_stop_score(ca, c_sel, f_sel, train, points, cfg, n_calib)
        score = stop_score(p_cal, p_out, score_name, kappa or 1.0)
        outlook_info = {"calibrator": o_name, "cv_brier": o_cv, "train_saving_by_score": by_score,
                        "train_out_of_fold": bool(n_oof),
                        "test_calibrated": _metrics(final[test], p_out[test], cfg, cfg.seed)}

    # 3. Learn-then-Test on calib problems, at the schedule the controller reads
    lam = threshold_grid(cfg)
    units_c = stop_rule_units(ca, score, cal, points)
    losses = early_stopping_losses(units_c.conf, units_c.ok, units_c.final, lam)
    losses = units_c.per_problem(losses)
    method = cfg.method if units_c.greedy else "hoeffding-bentkus"
    ltt = learn_then_test(None, losses, lam, cfg.epsilon, cfg.delta, method=method)
    n_cal = int(losses.shape[0])
    risk_doc = {"rule": "stop at the first checkpoint in check_points whose stop score >= threshold",
                "score": score_name, "kappa": kappa,
                "loss": "1 when the stopped answer is wrong and the full run's answer is right",
                "units": units_c.description, "check_points": list(points),
                "epsilon": cfg.epsilon, "delta": cfg.delta, "method": method,
                "n_calib_problems": n_cal, "n_calib_samples": int(len(units_c.final)),
                "min_problems_for_epsilon": min_calibration_size(cfg.epsilon, cfg.delta),
                "most_losses_certifiable": most_losses_certifiable(n_cal, cfg.epsilon, cfg.delta)
                if method == "binomial" else None,
                "threshold": None if ltt.chosen is None else float(ltt.chosen), "reason": ltt.reason,
                "n_valid_thresholds": int(len(ltt.valid_thresholds))}
    layout.write_document(RISK_CONTROL, RISK_CONTROL_KIND, risk_doc,
                          metadata={"model": meta["model"]["name"], "layer": meta["confidence_layer"]})

    # 4. held-out test figures
    report: dict[str, Any] = {
        "config": asdict(cfg), "calibrator": best, "cv_brier": cv, "calibration_data": data_info,
        "n_checkpoints": {"calib": int(cal.sum()), "test": int(test.sum()),
                          "train_out_of_fold": data_info["train_out_of_fold_checkpoints"]},
        "test_uncalibrated": _metrics(y[test], p_raw[test], cfg, cfg.seed),
        "test_calibrated": _metrics(y[test], p_cal[test], cfg, cfg.seed),
        "outlook": outlook_info,
        "risk_control": risk_doc,
    }
    if ltt.chosen is not None:
        report["test_early_stopping"] = early_stopping_figures(stop_rule_units(ca, score, test, points),
                                                               float(ltt.chosen))
    meta["calibration"] = {"confidence_calibrator": best, "stop_threshold": risk_doc["threshold"],
                           "stop_score": risk_doc["score"], "kappa": kappa,
                           "outlook_calibrator": None if outlook_info is None else outlook_info["calibrator"],
                           "made_for": {name: fp for name, fp in layout.probe_fingerprints().items()
                                        if name != DIFFICULTY_PROBE}}
    layout.path(CALIBRATION_REPORT).write_text(json.dumps(report, indent=2))
    layout.write_manifest(meta)
    return report


@dataclass
class StopRuleUnits:
    """The stop rule's inputs on some problems, one row per sample (checkpoints at the schedule only), and the
    map from samples to the problems that are the risk's independent units."""

    conf: np.ndarray  # (n_samples, n_checkpoints) calibrated confidence, NaN where a sample has no such checkpoint
    ok: np.ndarray  # (n_samples, n_checkpoints) forced answer right there
    frac: np.ndarray  # (n_samples, n_checkpoints) fraction of natural thinking read
    position: np.ndarray  # (n_samples, n_checkpoints) thinking tokens read (0 where there is no checkpoint)
    n_thinking: np.ndarray  # (n_samples,) the full run's thinking tokens
    final: np.ndarray  # (n_samples,) full run right
    problem_of: np.ndarray  # (n_samples,) index into problems
    problems: np.ndarray
    greedy: bool  # one greedy sample per problem (else every sample, averaged per problem)

    @property
    def description(self) -> str:
        return ("problems (the greedy sample of each)" if self.greedy else
                "problems (mean loss over each problem's samples; no greedy sample recorded for every problem)")

    def per_problem(self, losses: np.ndarray) -> np.ndarray:
        """(n_samples, T) -> (n_problems, T): the mean over each problem's samples (its one greedy sample)."""
        sums = np.zeros((len(self.problems), losses.shape[1]))
        np.add.at(sums, self.problem_of, losses)
        return sums / np.bincount(self.problem_of, minlength=len(self.problems))[:, None]


def stop_rule_units(ca: CheckpointArrays, p_cal: np.ndarray, mask: np.ndarray,
                    check_points: tuple[int, ...]) -> StopRuleUnits:
    """The stop rule's matrices for the checkpoints in ``mask`` (a problem subset), with calibrated confidences
    ``p_cal`` (one per checkpoint of ``ca``): the greedy sample of each problem when every problem has one, else
    all its samples; only checkpoints at ``check_points`` (all when empty) and not past the end of thinking."""
    problems = np.unique(ca.groups[mask])
    use_greedy = len(problems) > 0 and len(np.unique(ca.groups[mask & ca.greedy])) == len(problems)
    unit = mask & ca.greedy if use_greedy else mask
    idx = np.flatnonzero(unit)
    samples, first = np.unique(ca.sample[idx], return_index=True)
    first = idx[first]  # each sample's first checkpoint: its final correctness and problem
    # a checkpoint counts when it is on the schedule and thinking was still open there (at or before its end);
    # a sample with none never stops early (an all-NaN row)
    on = unit & (ca.fraction <= 1.0)
    if check_points:
        on &= np.isin(ca.position, np.asarray(check_points))
    conf, ids = checkpoint_matrix(ca.sample[on], p_cal[on]) if on.any() else (np.full((0, 1), np.nan), samples[:0])
    C = np.full((len(samples), conf.shape[1]), np.nan)
    ok, F, P = np.zeros_like(C), np.ones_like(C), np.zeros_like(C)
    if len(ids):
        rows = np.searchsorted(samples, ids)
        C[rows] = conf
        ok[rows] = checkpoint_matrix(ca.sample[on], ca.y[on].astype(float), fill=0.0)[0]
        F[rows] = checkpoint_matrix(ca.sample[on], ca.fraction[on], fill=1.0)[0]
        P[rows] = checkpoint_matrix(ca.sample[on], ca.position[on].astype(float), fill=0.0)[0]
    final = ca.final_correct[first].astype(bool)
    # the natural thinking length: position / fraction of any of the sample's checkpoints
    n_thinking = np.rint(ca.position[first] / np.maximum(ca.fraction[first], 1e-12))
    problem_of = np.searchsorted(problems, ca.groups[first])  # problems is sorted (np.unique)
    return StopRuleUnits(C, ok, F, P, n_thinking, final, problem_of, problems, use_greedy)


def bundle_report_entries(bundle_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Entries for :func:`thinkctl.calibration.calibration_report`: each predictor's raw logits on the bundle's
    calibration data (to fit calibrators: the calib problems, plus the train split's out-of-fold logits when
    :func:`calibrate_bundle` cross-fitted them) and test problems (to measure)."""
    from thinkctl.predictors.probe import HiddenStateProbe

    layout = BundleLayout(bundle_dir)
    meta = layout.read_manifest()
    store = TraceStore(layout.trace_store_path(meta))
    split = meta["split"]
    entries: dict[str, dict[str, Any]] = {}
    ca = store.checkpoint_arrays(meta["confidence_layer"])
    logits = HiddenStateProbe.load(layout.path(CONFIDENCE_PROBE)).decision_function(ca.X)
    fit_x, fit_y = _saved_calibration_data(layout, meta, ca, logits)
    test = np.isin(ca.groups, split["test"])
    entries["confidence probe (forced answer right)"] = {
        "y_true": fit_y, "scores": fit_x, "y_true_test": ca.y[test].astype(int),
        "scores_test": logits[test], "score_type": "logit"}
    if layout.path(DIFFICULTY_PROBE).is_dir():
        sa = store.sample_arrays(meta["confidence_layer"])
        dl = HiddenStateProbe.load(layout.path(DIFFICULTY_PROBE)).decision_function(sa.X)
        cal, test = np.isin(sa.groups, split["calib"]), np.isin(sa.groups, split["test"])
        entries["difficulty probe (one sample solves)"] = {
            "y_true": sa.y[cal].astype(int), "scores": dl[cal], "y_true_test": sa.y[test].astype(int),
            "scores_test": dl[test], "score_type": "logit"}
    return entries
