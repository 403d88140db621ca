"""Plots of calibration and risk control: reliability diagram, confidence histogram, risk curve.

Compute and plot are separate: the numbers come from :func:`~thinkctl.calibration.metrics.reliability_curve` and
:func:`~thinkctl.calibration.risk_control.learn_then_test`; these functions only draw. Each takes ``ax=None``
(then a new figure is created with pyplot) and returns the axes it drew on. ``pyplot`` is imported only when no
axes are given, so drawing on a ``matplotlib.figure.Figure`` never touches global pyplot state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike

from thinkctl.calibration._validation import (
    check_binary_labels,
    check_n_bins,
    check_probabilities,
    check_same_length,
)
from thinkctl.calibration.metrics import (
    DEFAULT_N_BINS,
    Strategy,
    expected_calibration_error,
    reliability_curve,
)
from thinkctl.calibration.risk_control import LTTResult

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes

__all__ = ["reliability_diagram", "confidence_histogram", "risk_curve"]

#: Opacity of the per-bin sample-fraction bars behind a reliability curve.
COUNT_BAR_ALPHA = 0.25
#: Opacity of the gap segments between a bin's mean prediction and its observed frequency.
GAP_ALPHA = 0.5
#: Opacity of histogram bars and of the p-value curve.
HIST_ALPHA = 0.6
#: Font size of the per-bin count labels.
COUNT_FONTSIZE = 6
_DIAGONAL_GID = "thinkctl-diagonal"


def _new_axes(ax: "Axes | None") -> "Axes":
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, new_ax = plt.subplots()
    return new_ax


def reliability_diagram(
    y_true: ArrayLike,
    y_prob: ArrayLike,
    n_bins: int = DEFAULT_N_BINS,
    strategy: Strategy = "uniform",
    ax: "Axes | None" = None,
    label: str | None = None,
    *,
    show_counts: bool = True,
    **line_kwargs: Any,
) -> "Axes":
    """Reliability diagram: observed frequency of the positive class against mean predicted probability per bin.

    Draws the diagonal (perfect calibration), the per-bin curve with its ECE in the legend, a segment per bin
    showing the gap to the diagonal, and (``show_counts``) grey bars giving the fraction of samples in each bin,
    annotated with the bin's count.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        Binary labels in {0, 1}.
    y_prob : array-like of shape (n_samples,)
        Predicted probability of the positive class.
    n_bins : int, default=15
        Number of bins.
    strategy : {"uniform", "quantile"}, default="uniform"
        Equal-width or equal-mass bins.
    ax : matplotlib Axes, optional
        Where to draw; a new figure when ``None``.
    label : str, optional
        Legend label; the ECE is appended.
    show_counts : bool, default=True
        Draw the per-bin sample fractions and counts (turn off when overlaying several curves on one axes).
    **line_kwargs
        Passed to ``ax.plot`` for the curve (``color``, ``marker``, ...).

    Returns
    -------
    matplotlib Axes

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> ax = reliability_diagram([0, 1, 1, 0, 1], [0.2, 0.7, 0.9, 0.4, 0.6], n_bins=5)
    >>> ax.get_xlabel()
    'mean predicted probability'
    """
    curve = reliability_curve(y_true, y_prob, n_bins, strategy)
    ece = expected_calibration_error(y_true, y_prob, n_bins, strategy)
    ax = _new_axes(ax)
    if not any(line.get_gid() == _DIAGONAL_GID for line in ax.get_lines()):
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration",
                gid=_DIAGONAL_GID)
    mask = curve.nonempty
    if show_counts:
        widths = np.diff(curve.edges)
        bars = ax.bar(curve.edges[:-1][mask], curve.weights[mask], width=widths[mask], align="edge",
                      color="grey", alpha=COUNT_BAR_ALPHA, edgecolor="white", label="fraction of samples")
        for rect, count in zip(bars, curve.counts[mask]):
            ax.annotate(str(int(count)), (rect.get_x() + rect.get_width() / 2, rect.get_height()),
                        ha="center", va="bottom", rotation=90, fontsize=COUNT_FONTSIZE, color="dimgrey")
    text = f"ECE = {ece:.3f}" if label is None else f"{label} (ECE = {ece:.3f})"
    kwargs = {"marker": "o", **line_kwargs}
    (line,) = ax.plot(curve.mean_predicted[mask], curve.fraction_positive[mask], label=text, **kwargs)
    ax.vlines(curve.mean_predicted[mask], curve.mean_predicted[mask], curve.fraction_positive[mask],
              color=line.get_color(), alpha=GAP_ALPHA)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("fraction of positives")
    ax.set_aspect("equal")
    ax.legend(loc="upper left", fontsize="small")
    return ax


def confidence_histogram(
    y_prob: ArrayLike,
    n_bins: int = DEFAULT_N_BINS,
    ax: "Axes | None" = None,
    label: str | None = None,
    *,
    y_true: ArrayLike | None = None,
) -> "Axes":
    """Histogram of predicted probabilities, with their mean and (given labels) the observed positive rate.

    Parameters
    ----------
    y_prob : array-like of shape (n_samples,)
        Predicted probability of the positive class.
    n_bins : int, default=15
        Number of equal-width bins on [0, 1].
    ax : matplotlib Axes, optional
        Where to draw; a new figure when ``None``.
    label : str, optional
        Legend label of the histogram.
    y_true : array-like of shape (n_samples,), optional
        Binary labels; adds a line at their mean.

    Returns
    -------
    matplotlib Axes
    """
    p = check_probabilities(y_prob, "y_prob")
    n_bins = check_n_bins(n_bins)
    ax = _new_axes(ax)
    ax.hist(p, bins=np.linspace(0.0, 1.0, n_bins + 1).tolist(), alpha=HIST_ALPHA, label=label or "predictions")
    ax.axvline(float(p.mean()), color="black", linestyle="--", label=f"mean predicted = {p.mean():.3f}")
    if y_true is not None:
        y = check_binary_labels(y_true, "y_true")
        check_same_length(y, p, "y_true", "y_prob")
        ax.axvline(float(y.mean()), color="tab:red", linestyle=":", label=f"positive rate = {y.mean():.3f}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("count")
    ax.legend(loc="best", fontsize="small")
    return ax


def risk_curve(result: LTTResult, ax: "Axes | None" = None, *, show_p_values: bool = True) -> "Axes":
    """Empirical risk against threshold from a Learn-then-Test result.

    Draws the empirical risk per candidate threshold, the target ``epsilon``, the certified thresholds as filled
    markers, and the chosen threshold as a vertical line; with ``show_p_values`` the p-values go on a second
    y axis (0 to 1) with the level ``delta``.

    Parameters
    ----------
    result : LTTResult
        Output of :func:`~thinkctl.calibration.learn_then_test` (or ``RiskControlledThreshold.result_``).
    ax : matplotlib Axes, optional
        Where to draw; a new figure when ``None``.
    show_p_values : bool, default=True
        Also plot the p-values on a twin axis.

    Returns
    -------
    matplotlib Axes
        The risk axes (the p-value axes is its twin).
    """
    if not isinstance(result, LTTResult):
        raise ValueError(f"risk_curve needs an LTTResult from learn_then_test, got {type(result).__name__}")
    ax = _new_axes(ax)
    order = np.argsort(result.thresholds)
    lam, risk = result.thresholds[order], result.risks[order]
    ax.plot(lam, risk, color="tab:blue", label="empirical risk")
    valid = np.isin(lam, result.valid_thresholds)
    ax.plot(lam[valid], risk[valid], linestyle="none", marker="o", color="tab:green",
            label=f"certified ({int(valid.sum())})")
    ax.axhline(result.epsilon, color="tab:red", linestyle="--", label=f"epsilon = {result.epsilon:g}")
    if result.chosen is not None:
        ax.axvline(result.chosen, color="tab:green", linestyle=":", label=f"chosen = {result.chosen:g}")
    ax.set_xlabel("threshold")
    ax.set_ylabel("risk")
    ax.set_title(f"Learn then Test ({result.method}, n={result.n}, delta={result.delta:g})"
                 + ("" if result.chosen is not None else ": no threshold certified"))
    if show_p_values:
        twin = ax.twinx()
        twin.plot(lam, result.p_values[order], color="tab:purple", alpha=HIST_ALPHA, label="p-value")
        twin.set_ylim(0, 1)
        twin.axhline(result.delta, color="tab:purple", linestyle=":", alpha=HIST_ALPHA,
                     label=f"delta = {result.delta:g}")
        twin.set_ylabel("p-value")
        handles, labels = ax.get_legend_handles_labels()
        h2, l2 = twin.get_legend_handles_labels()
        ax.legend(handles + h2, labels + l2, loc="best", fontsize="small")
    else:
        ax.legend(loc="best", fontsize="small")
    return ax
