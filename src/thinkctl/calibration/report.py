"""Calibration report: fit calibrators per predictor, evaluate them on held-out data, write HTML + JSON.

For every predictor (name -> labels and raw scores) the report fits each requested calibrator on a calibration
split, evaluates the uncalibrated and calibrated probabilities on a test split with bootstrap confidence
intervals, and writes

* ``report.html``: one self-contained page (PNG figures embedded as base64): per predictor, reliability diagrams
  and confidence histograms of the uncalibrated and each calibrated variant side by side, and a metrics table
  with ``1 - alpha`` intervals;
* ``report.json``: every number in the page, the fitted calibrators (as in ``to_dict()``) and the resolved config.

Examples
--------
>>> import numpy as np, tempfile
>>> rng = np.random.default_rng(0)
>>> z = rng.normal(scale=3.0, size=600)
>>> y = (rng.uniform(size=600) < 1 / (1 + np.exp(-z / 3.0))).astype(int)
>>> with tempfile.TemporaryDirectory() as d:
...     rep = calibration_report({"probe": (y, z)}, d, n_boot=20, calibrators=("temperature",))
...     rep.html_path.name, sorted(rep.results["predictors"]["probe"]["variants"])
('report.html', ['temperature', 'uncalibrated'])
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray
from scipy.special import expit

from thinkctl.calibration._persistence import installed_version
from thinkctl.calibration._validation import (
    check_binary_labels,
    check_n_bins,
    check_same_length,
    check_scores,
    check_unit_interval,
)
from thinkctl.calibration.calibrators import CALIBRATORS, BaseCalibrator, make_calibrator
from thinkctl.calibration.metrics import (
    DEFAULT_N_BINS,
    MetricFn,
    auroc,
    bootstrap_ci,
    brier_score,
    debiased_l2_calibration_error,
    expected_calibration_error,
    maximum_calibration_error,
    negative_log_likelihood,
    reliability_curve,
    smooth_ece,
)
from thinkctl.calibration.plotting import confidence_histogram, reliability_diagram

__all__ = ["ReportConfig", "CalibrationReport", "calibration_report", "SCORE_TYPES"]

logger = logging.getLogger(__name__)

#: How raw scores are read: ``"auto"`` treats scores that all lie in [0, 1] as probabilities, others as logits.
SCORE_TYPES = ("auto", "probability", "logit")
#: Size of one panel of the report figures, in inches.
PANEL_INCHES = 3.6
#: Resolution of the embedded PNGs.
FIGURE_DPI = 110
UNCALIBRATED = "uncalibrated"


@dataclass(frozen=True)
class ReportConfig:
    """Settings of :func:`calibration_report`.

    Attributes
    ----------
    calibrators : tuple of str
        Registry names of the calibrators to fit (see ``CALIBRATORS``).
    calibration_fraction : float
        Share of each class used for fitting when an entry has no held-out split.
    n_bins : int
        Bins of the binned metrics and diagrams.
    n_boot : int
        Bootstrap resamples per interval.
    alpha : float
        Intervals cover ``1 - alpha``.
    seed : int
        Seed of the split and of the bootstrap.
    title : str
        Page title.
    """

    calibrators: tuple[str, ...] = ("temperature", "platt", "isotonic", "histogram")
    calibration_fraction: float = 0.5
    n_bins: int = DEFAULT_N_BINS
    n_boot: int = 1000
    alpha: float = 0.05
    seed: int = 0
    title: str = "thinkctl calibration report"

    def __post_init__(self) -> None:
        if isinstance(self.calibrators, str):
            object.__setattr__(self, "calibrators", (self.calibrators,))
        object.__setattr__(self, "calibrators", tuple(self.calibrators))
        for name in self.calibrators:
            CALIBRATORS.get(name)  # unknown names list the known ones
        check_unit_interval(self.calibration_fraction, "calibration_fraction")
        check_n_bins(self.n_bins)
        if isinstance(self.n_boot, bool) or not isinstance(self.n_boot, int) or self.n_boot < 1:
            raise ValueError(f"n_boot={self.n_boot!r} is invalid; use a positive integer (1000 is typical)")
        check_unit_interval(self.alpha, "alpha")


@dataclass(frozen=True)
class CalibrationReport:
    """Paths and numbers of a written report.

    Attributes
    ----------
    html_path, json_path : Path
        The files written.
    results : dict
        The content of ``report.json``.
    """

    html_path: Path
    json_path: Path
    results: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class _Entry:
    y_cal: NDArray[np.int64]
    s_cal: NDArray[np.float64]
    y_test: NDArray[np.int64]
    s_test: NDArray[np.float64]
    score_type: str
    calibrators: tuple[str, ...]


def _metrics(n_bins: int) -> dict[str, MetricFn]:
    return {
        "ECE": partial(expected_calibration_error, n_bins=n_bins),
        "MCE": partial(maximum_calibration_error, n_bins=n_bins),
        "debiased L2-CE": partial(debiased_l2_calibration_error, n_bins=n_bins),
        "smooth ECE": smooth_ece,  # type: ignore[dict-item]
        "Brier": brier_score,
        "NLL": negative_log_likelihood,
        "AUROC": auroc,
    }


def _split(y: NDArray[np.int64], s: NDArray[np.float64], fraction: float,
           rng: np.random.Generator, name: str) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    cal, test = [], []
    for c in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(round(fraction * idx.size))
        cal.append(idx[:k])
        test.append(idx[k:])
    cal_idx, test_idx = np.sort(np.concatenate(cal)), np.sort(np.concatenate(test))
    for part, idx in (("calibration", cal_idx), ("test", test_idx)):
        if np.unique(y[idx]).size < 2:
            raise ValueError(f"entry {name!r}: the {part} split has only one class ({y.sum()} positives of "
                             f"{y.size}); give more data or a held-out split (y_true_test, scores_test)")
    return cal_idx, test_idx


def _parse_entry(name: str, value: Any, config: ReportConfig, rng: np.random.Generator) -> _Entry:
    if isinstance(value, Mapping):
        unknown = set(value) - {"y_true", "scores", "y_true_test", "scores_test", "score_type", "calibrators"}
        if unknown or "y_true" not in value or "scores" not in value:
            raise ValueError(f"entry {name!r} must have keys 'y_true' and 'scores' (optional: 'y_true_test', "
                             f"'scores_test', 'score_type', 'calibrators'); got {sorted(value)}")
        spec = dict(value)
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        spec = {"y_true": value[0], "scores": value[1]}
    else:
        raise ValueError(f"entry {name!r} must be a (y_true, scores) pair or a mapping with 'y_true' and 'scores'")
    y = check_binary_labels(spec["y_true"], f"{name}: y_true")
    s = check_scores(spec["scores"], f"{name}: scores")
    check_same_length(y, s, f"{name}: y_true", f"{name}: scores")
    if ("y_true_test" in spec) != ("scores_test" in spec):
        raise ValueError(f"entry {name!r}: give both 'y_true_test' and 'scores_test' or neither")
    held_out = "y_true_test" in spec
    if held_out:
        y_test = check_binary_labels(spec["y_true_test"], f"{name}: y_true_test")
        s_test = check_scores(spec["scores_test"], f"{name}: scores_test")
        check_same_length(y_test, s_test, f"{name}: y_true_test", f"{name}: scores_test")
    score_type = spec.get("score_type", "auto")
    if score_type not in SCORE_TYPES:
        raise ValueError(f"entry {name!r}: score_type={score_type!r}; use one of {', '.join(map(repr, SCORE_TYPES))}")
    all_scores = np.concatenate([s, s_test]) if held_out else s
    in_unit = bool(all_scores.min() >= 0.0 and all_scores.max() <= 1.0)
    if score_type == "auto":
        score_type = "probability" if in_unit else "logit"
        logger.info("report entry %r: scores read as %ss", name, score_type)
    elif score_type == "probability" and not in_unit:
        raise ValueError(f"entry {name!r}: score_type='probability' but scores leave [0, 1]; use 'logit'")
    if held_out:
        for part, labels in (("calibration", y), ("test", y_test)):
            if np.unique(labels).size < 2:
                raise ValueError(f"entry {name!r}: the {part} data has only one class; both are needed")
        y_cal, s_cal = y, s
    else:
        cal_idx, test_idx = _split(y, s, config.calibration_fraction, rng, name)
        y_cal, s_cal, y_test, s_test = y[cal_idx], s[cal_idx], y[test_idx], s[test_idx]
    cals = spec.get("calibrators", config.calibrators)
    cals = (cals,) if isinstance(cals, str) else tuple(cals)
    for c in cals:
        CALIBRATORS.get(c)
    return _Entry(y_cal, s_cal, y_test, s_test, score_type, cals)


def _build(name: str, score_type: str) -> BaseCalibrator:
    cls = CALIBRATORS.get(name)
    kwargs = {"input_type": score_type} if "input_type" in cls._get_param_names() else {}
    return make_calibrator(name, **kwargs)


def _figure_png(y: NDArray[np.int64], probs: Mapping[str, NDArray[np.float64]], n_bins: int) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    k = len(probs)
    fig = Figure(figsize=(PANEL_INCHES * k, PANEL_INCHES * 2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, k, squeeze=False)
    for col, (variant, p) in enumerate(probs.items()):
        reliability_diagram(y, p, n_bins=n_bins, ax=axes[0, col], label=variant)
        axes[0, col].set_title(variant)
        confidence_histogram(p, n_bins=n_bins, ax=axes[1, col], y_true=y)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=FIGURE_DPI)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _clean(x: Any) -> Any:
    """Make a structure strict-JSON safe (NaN / inf -> None, numpy scalars -> Python)."""
    if isinstance(x, Mapping):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def _html(results: Mapping[str, Any], figures: Mapping[str, str], config: ReportConfig) -> str:
    level = round(100 * (1 - config.alpha))
    parts = [
        "<!DOCTYPE html>", "<html><head><meta charset='utf-8'>", f"<title>{html.escape(config.title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1600px} table{border-collapse:collapse;margin:1em 0}"
        " td,th{border:1px solid #ccc;padding:4px 8px;text-align:right} th:first-child,td:first-child{text-align:left}"
        " img{max-width:100%} .note{color:#555;font-size:90%}</style>",
        "</head><body>", f"<h1>{html.escape(config.title)}</h1>",
        f"<p class='note'>thinkctl {html.escape(results['thinkctl_version'])}. Calibrators are fitted on the "
        f"calibration split and evaluated on the test split; brackets give {level}% percentile-bootstrap intervals "
        f"({config.n_boot} class-stratified resamples, seed {config.seed}). Binned metrics use {config.n_bins} "
        "equal-width bins; lower is better except AUROC.</p>",
    ]
    for name, res in results["predictors"].items():
        metric_names = list(next(iter(res["variants"].values()))["metrics"])
        parts.append(f"<h2>{html.escape(name)}</h2>")
        parts.append(f"<p class='note'>calibration n={res['n_calibration']}, test n={res['n_test']} "
                     f"(positive rate {res['positive_rate_test']:.3f}); scores read as "
                     f"{html.escape(res['score_type'])}s.</p>")
        parts.append("<table><tr><th>variant</th>" + "".join(f"<th>{html.escape(m)}</th>" for m in metric_names)
                     + "</tr>")
        for variant, vres in res["variants"].items():
            cells = []
            for m in metric_names:
                v = vres["metrics"][m]
                cells.append("<td>n/a</td>" if v["value"] is None else
                             f"<td>{v['value']:.4f} <span class='note'>[{v['ci_low']:.4f}, {v['ci_high']:.4f}]"
                             "</span></td>")
            parts.append(f"<tr><td>{html.escape(variant)}</td>{''.join(cells)}</tr>")
        parts.append("</table>")
        parts.append(f"<img alt='reliability diagrams of {html.escape(name)}' "
                     f"src='data:image/png;base64,{figures[name]}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def calibration_report(
    entries: Mapping[str, Any],
    out_dir: str | os.PathLike[str],
    *,
    calibrators: Sequence[str] = ReportConfig.calibrators,
    calibration_fraction: float = ReportConfig.calibration_fraction,
    n_bins: int = ReportConfig.n_bins,
    n_boot: int = ReportConfig.n_boot,
    alpha: float = ReportConfig.alpha,
    seed: int = ReportConfig.seed,
    title: str = ReportConfig.title,
) -> CalibrationReport:
    """Fit calibrators per predictor, evaluate on held-out data, and write ``report.html`` and ``report.json``.

    Parameters
    ----------
    entries : mapping of str to pair or mapping
        Predictor name -> ``(y_true, scores)`` (split into calibration and test parts, stratified by class,
        with ``calibration_fraction`` and ``seed``), or name -> mapping with keys ``"y_true"``, ``"scores"`` and
        optionally ``"y_true_test"`` / ``"scores_test"`` (a held-out test split; then all of ``y_true`` /
        ``scores`` is used for fitting), ``"score_type"`` (``"auto"``, ``"probability"``, ``"logit"``) and
        ``"calibrators"`` (a name or list of names overriding ``calibrators``). ``y_true`` has shape
        (n_samples,) with labels in {0, 1}; ``scores`` has shape (n_samples,). Uncalibrated probabilities are the
        scores themselves, or ``sigmoid(scores)`` for logits.
    out_dir : path
        Directory to write into (created if needed).
    calibrators : sequence of str, default=("temperature", "platt", "isotonic", "histogram")
        Calibrator registry names.
    calibration_fraction : float, default=0.5
        Share of each class used for fitting when there is no held-out split.
    n_bins : int, default=15
        Bins of binned metrics and diagrams.
    n_boot : int, default=1000
        Bootstrap resamples per interval.
    alpha : float, default=0.05
        Intervals cover ``1 - alpha``.
    seed : int, default=0
        Seed of the split and the bootstrap.
    title : str
        Page title.

    Returns
    -------
    CalibrationReport
    """
    config = ReportConfig(calibrators=tuple(calibrators), calibration_fraction=calibration_fraction, n_bins=n_bins,
                          n_boot=n_boot, alpha=alpha, seed=seed, title=title)
    if not isinstance(entries, Mapping) or not entries:
        raise ValueError("entries must be a non-empty mapping of predictor name -> (y_true, scores)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    metrics = _metrics(config.n_bins)
    predictors: dict[str, Any] = {}
    figures: dict[str, str] = {}
    for name, value in entries.items():
        entry = _parse_entry(str(name), value, config, rng)
        to_prob = (lambda s: s) if entry.score_type == "probability" else expit
        probs: dict[str, NDArray[np.float64]] = {UNCALIBRATED: to_prob(entry.s_test)}
        fitted: dict[str, Any] = {}
        for cal_name in entry.calibrators:
            cal = _build(cal_name, entry.score_type).fit(entry.s_cal, entry.y_cal)
            probs[cal_name] = cal.predict_proba(entry.s_test)
            fitted[cal_name] = cal.to_dict(metadata={"predictor": str(name)})
        variants: dict[str, Any] = {}
        for variant, p in probs.items():
            vals = {}
            for m_name, fn in metrics.items():
                point, lo, hi = bootstrap_ci(fn, entry.y_test, p, n_boot=config.n_boot, alpha=config.alpha,
                                             seed=config.seed)
                vals[m_name] = {"value": point, "ci_low": lo, "ci_high": hi}
            variants[variant] = {
                "metrics": vals,
                "reliability": reliability_curve(entry.y_test, p, config.n_bins).to_dict(),
            }
            if variant in fitted:
                variants[variant]["calibrator"] = fitted[variant]
        predictors[str(name)] = {
            "n_calibration": int(entry.y_cal.size), "n_test": int(entry.y_test.size),
            "positive_rate_test": float(entry.y_test.mean()), "score_type": entry.score_type,
            "variants": variants,
        }
        figures[str(name)] = _figure_png(entry.y_test, probs, config.n_bins)
        logger.info("report: %s done (%d calibrators)", name, len(entry.calibrators))
    results = _clean({"thinkctl_version": installed_version(), "config": asdict(config), "predictors": predictors})
    json_path = out / "report.json"
    json_path.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    html_path = out / "report.html"
    html_path.write_text(_html(results, figures, config), encoding="utf-8")
    return CalibrationReport(html_path=html_path, json_path=json_path, results=results)
