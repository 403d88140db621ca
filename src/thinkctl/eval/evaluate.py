"""Strategies compared on the same problems at matched compute: accuracy against tokens, with intervals.

:func:`evaluate` runs every strategy (the adaptive controller and the baselines of
:mod:`thinkctl.controller.strategies`) over the same problems, in blocks of prompts, appending one JSONL row per
(problem, strategy) to a results file as each block finishes -- a killed run resumes where it stopped. The summary
has the layout of every thinkctl results file::

    {"strategies": {NAME: {"accuracy", "tokens_mean", "samples_mean", "n", "ci95"}}, "config": {...}}

with, in addition, bootstrap intervals of the mean tokens, accuracy by level, and the matched-compute comparison:
each baseline family's accuracy interpolated at the adaptive controller's mean tokens.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from thinkctl.eval.rowsfile import append_rows, load_rows
from thinkctl.stats import bootstrap_interval

__all__ = ["evaluate", "summarize", "matched_compute", "pareto_plot", "oracle_rows", "paired_comparison"]

logger = logging.getLogger(__name__)


def _row_means(x: np.ndarray) -> np.ndarray:
    return x.mean(axis=1)


def _bootstrap(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the mean, drawn from ``rng`` (NaN bounds for no values)."""
    lo, hi, _ = bootstrap_interval(_row_means, [values], n_resamples=n_boot, rng=rng, vectorized=True)
    return (lo, hi)


def summarize(rows: Sequence[dict[str, Any]], *, n_boot: int = 2000, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Per strategy: accuracy, mean tokens and samples, n, bootstrap 95 % intervals (over problems), by level."""
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by[r["strategy"]].append(r)
    out: dict[str, dict[str, Any]] = {}
    for name, rs in by.items():
        rng = np.random.default_rng(seed)
        ok = np.array([float(r["correct"]) for r in rs])
        tok = np.array([float(r["tokens"]) for r in rs])
        think = np.array([float(r.get("thinking_tokens", np.nan)) for r in rs])
        samples: list[Any] = [r.get("samples") for r in rs]
        levels: dict[str, list[float]] = defaultdict(list)
        for r in rs:
            levels[str(r.get("level"))].append(float(r["correct"]))
        routes: dict[str, int] = defaultdict(int)
        for r in rs:
            routes[str(r.get("route"))] += 1
        doubled = sum(bool(r.get("doubled")) for r in rs)
        out[name] = {
            "accuracy": float(ok.mean()),
            "tokens_mean": float(tok.mean()),
            "samples_mean": float(np.mean(samples)) if all(s is not None for s in samples) else None,
            "n": len(rs),
            "ci95": list(_bootstrap(ok, n_boot, rng)),
            "tokens_ci95": list(_bootstrap(tok, n_boot, rng)),
            # None for rows written before thinking tokens were recorded
            "thinking_tokens_mean": None if np.isnan(think).any() else float(think.mean()),
            "thinking_tokens_ci95": None if np.isnan(think).any() else list(_bootstrap(think, n_boot, rng)),
            "accuracy_by_level": {k: float(np.mean(v)) for k, v in sorted(levels.items())},
            "routes": dict(routes),
            "doubled": doubled,  # answers whose thinking went on after "Wait" (budget doubling)
        }
    return out


def paired_comparison(rows: Sequence[dict[str, Any]], target: str, baseline: str, *, n_boot: int = 2000,
                      seed: int = 0, problems: Sequence[str] | None = None) -> dict[str, Any] | None:
    """``target`` against ``baseline`` on the problems both answered (or on ``problems``): accuracy difference,
    thinking tokens saved (``1 - sum target / sum baseline``) and tokens ratio, each with a paired bootstrap 95 %
    interval over problems. None when they share no problem."""
    by: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in rows:
        if r["strategy"] in (target, baseline):
            by[r["problem_id"]][r["strategy"]] = r
    keep = set(problems) if problems is not None else None
    pairs = [(d[target], d[baseline]) for pid, d in sorted(by.items())
             if target in d and baseline in d and (keep is None or pid in keep)]
    if not pairs:
        return None
    ok = np.array([[float(a["correct"]), float(b["correct"])] for a, b in pairs])
    tok = np.array([[float(a["tokens"]), float(b["tokens"])] for a, b in pairs])
    think = np.array([[float(a.get("thinking_tokens", np.nan)), float(b.get("thinking_tokens", np.nan))]
                      for a, b in pairs])
    def ci(stat: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> list[float]:
        # the same seed for every statistic: all are computed on one set of resampled problems
        lo, hi, _ = bootstrap_interval(stat, [x], n_resamples=n_boot, rng=seed, vectorized=True, drop="nan")
        return [lo, hi]

    def diff(x: np.ndarray) -> np.ndarray:
        return x[..., 0].mean(-1) - x[..., 1].mean(-1)

    def saved(x: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return 1.0 - x[..., 0].sum(-1) / x[..., 1].sum(-1)

    out: dict[str, Any] = {"target": target, "baseline": baseline, "n": len(pairs),
                           "accuracy_target": float(ok[:, 0].mean()), "accuracy_baseline": float(ok[:, 1].mean()),
                           "accuracy_diff": float(diff(ok)), "accuracy_diff_ci95": ci(diff, ok),
                           "tokens_saved_fraction": float(saved(tok)), "tokens_saved_ci95": ci(saved, tok)}
    if not np.isnan(think).any():
        out.update({"thinking_tokens_target": float(think[:, 0].mean()),
                    "thinking_tokens_baseline": float(think[:, 1].mean()),
                    "thinking_saved_fraction": float(saved(think)), "thinking_saved_ci95": ci(saved, think)})
    return out


def _family(name: str) -> str:
    return name.partition("@")[0]


def matched_compute(summary: dict[str, dict[str, Any]], target: str = "adaptive") -> dict[str, Any]:
    """Each baseline family's accuracy at ``target``'s mean tokens (linear interpolation between its budgets; a
    family whose cheapest point already costs more is compared at that point, one whose dearest costs less at
    that one) and whether ``target`` is at least as accurate."""
    if target not in summary:
        return {}
    t = summary[target]["tokens_mean"]
    a = summary[target]["accuracy"]
    fams: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for name, s in summary.items():
        if name != target and _family(name) != "oracle":
            fams[_family(name)].append((s["tokens_mean"], s["accuracy"], name))
    out = {}
    for fam, pts in fams.items():
        pts.sort()
        xs = np.array([p[0] for p in pts])
        ys = np.array([p[1] for p in pts])
        if t <= xs[0]:
            acc, how = float(ys[0]), f"cheapest point {pts[0][2]} ({xs[0]:.0f} tokens)"
        elif t >= xs[-1]:
            acc, how = float(ys[-1]), f"dearest point {pts[-1][2]} ({xs[-1]:.0f} tokens)"
        else:
            acc, how = float(np.interp(t, xs, ys)), "interpolated"
        out[fam] = {"accuracy_at_matched_tokens": acc, "how": how, "target_accuracy": a,
                    "target_at_least_as_accurate": bool(a >= acc - 1e-12)}
    return out


def evaluate(controller: Any, task: Any, problems: Sequence[Any], strategies: Sequence[str], *,
             rows_path: str | os.PathLike[str] | None = None, block: int = 64,
             progress: Callable[[int], None] | None = None, record_trace: bool = False) -> list[dict[str, Any]]:
    """Run ``strategies`` on ``problems``; return one row per (problem, strategy).

    With ``rows_path``, rows are appended (JSONL) after every block of ``block`` problems and rows already there are
    kept: a killed run resumes with nothing lost and nothing computed twice. A row: ``problem_id``, ``level``,
    ``strategy``, ``budget`` (the ``@`` parameter, or None), ``answer``, ``gold``, ``correct``, ``tokens``,
    ``thinking_tokens`` (see :class:`~thinkctl.controller.ControllerResult`),
    ``samples``, ``confidence``, ``route`` (the route or baseline that answered), ``stop`` (why thinking or sampling
    ended), and with ``record_trace`` the controller's decision trace.
    """
    from thinkctl.controller.strategies import get_strategy

    runners = {name: get_strategy(name) for name in strategies}  # fail early on a bad name
    path = Path(rows_path) if rows_path is not None else None
    done = load_rows(path) if path is not None else []
    have = {(r["problem_id"], r["strategy"]) for r in done}
    rows = list(done)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    for name, run in runners.items():
        chunks = _todo_blocks(problems, name, have, block)
        if progress is not None:
            progress(len(problems) - sum(len(c) for c in chunks))
        for chunk in chunks:
            results = run(controller, [p.prompt for p in chunk])
            new = [_row(p, name, r, task, record_trace) for p, r in zip(chunk, results)]
            if path is not None:
                append_rows(path, new)
            rows.extend(new)
            if progress is not None:
                progress(len(chunk))
    keep = {p.id for p in problems}
    return [r for r in rows if r["problem_id"] in keep and r["strategy"] in runners]


def _todo_blocks(problems: Sequence[Any], name: str, have: set[tuple[str, str]], block: int) -> list[list[Any]]:
    """The blocks of ``block`` problems that :func:`evaluate` runs for strategy ``name``: the problems without a row
    in ``have`` (``(problem_id, strategy)`` pairs), in order. Each block is one call of the strategy, whose sampling
    seeds depend only on the block's prompts, so a run sharded by these blocks gives the same rows."""
    todo = [p for p in problems if (p.id, name) not in have]
    return [todo[start:start + block] for start in range(0, len(todo), block)]


def _stop_of(trace: list[dict[str, Any]]) -> str | None:
    for e in reversed(trace):
        if e["event"] == "stop":
            return e.get("reason")
        if e["event"] in ("vote", "best_of"):
            return e.get("stop")
    return None


def _row(problem: Any, name: str, r: Any, task: Any, record_trace: bool) -> dict[str, Any]:
    _, _, b = name.partition("@")
    correct = bool(task.is_correct(problem, r.text))  # the text of the sample that gave the answer
    row = {"problem_id": problem.id, "level": problem.level, "strategy": name, "budget": int(b) if b else None,
           "answer": r.answer, "gold": problem.answer, "correct": correct, "tokens": int(r.tokens),
           "thinking_tokens": int(r.thinking_tokens),
           "samples": int(r.samples), "confidence": float(r.confidence), "route": r.strategy,
           "stop": _stop_of(r.trace), "doubled": any(e["event"] == "double" for e in r.trace)}
    if record_trace:
        row["trace"] = r.trace
    return row


def oracle_rows(store: Any) -> list[dict[str, Any]]:
    """The oracle frontier from greedy traces: per problem, the tokens up to the earliest checkpoint whose forced
    answer is right (or the whole trace when only its final answer is), and whether any is right -- the limit of
    any early-stopping rule on that trace."""
    rows = []
    for s in store.samples():
        if not s.get("greedy"):
            continue
        overhead = s["n_generated"] - s["n_thinking"]
        right = [c["position"] for c in s["checkpoints"] if c["forced_correct"]]
        if right:
            tokens, ok, think = s["n_prompt_tokens"] + min(right) + overhead, True, min(right)
        else:
            tokens, ok, think = s["n_prompt_tokens"] + s["n_generated"], bool(s["correct"]), s["n_thinking"]
        rows.append({"problem_id": s["problem_id"], "level": s["level"], "strategy": "oracle", "budget": None,
                     "answer": None, "gold": s["gold"], "correct": ok, "tokens": int(tokens),
                     "thinking_tokens": int(think), "samples": 1,
                     "confidence": 1.0, "route": "oracle", "stop": "oracle"})
    return rows


def pareto_plot(summary: dict[str, dict[str, Any]], ax: Any = None, title: str | None = None) -> Any:
    """Accuracy against mean tokens per query, with 95 % intervals; baseline families joined, the adaptive
    controller highlighted, the oracle frontier (when present) drawn as the limit. Returns the axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    fams: dict[str, list[tuple[float, float, float, float, str]]] = defaultdict(list)
    for name, s in summary.items():
        lo, hi = s["ci95"]
        fams[_family(name)].append((s["tokens_mean"], s["accuracy"], lo, hi, name))
    markers = iter("osD^v<>ph*")
    for fam in sorted(fams):
        pts = sorted(fams[fam])
        xs = [p[0] for p in pts]
        ys = [p[1] for p in pts]
        err = [[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]]
        if fam == "adaptive":
            ax.errorbar(xs, ys, yerr=err, fmt="*", ms=16, color="crimson", capsize=3, label="adaptive (thinkctl)",
                        zorder=5)
        elif fam == "oracle":
            ax.errorbar(xs, ys, yerr=err, fmt="P", ms=10, color="black", capsize=3, label="oracle frontier")
            ax.axhline(ys[0], color="black", lw=0.6, ls=":")
        else:
            ax.errorbar(xs, ys, yerr=err, fmt=next(markers, "o") + "-", capsize=2, label=fam, alpha=0.85)
            if len(pts) > 1:
                for x, y, *_, name in pts:
                    ax.annotate(name.partition("@")[2], (x, y), textcoords="offset points", xytext=(3, 3),
                                fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("mean tokens per query (prompt + generated, log scale)")
    ax.set_ylabel("accuracy")
    ax.set_title(title or "accuracy against compute")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    return ax
