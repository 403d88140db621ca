"""``thinkctl replay``: parallel-sampling stopping policies on recorded samples (replay JSONL) -> results JSON.

Policies: sc (self-consistency over all N), esc (Early-Stopping Self-Consistency, window 5), asc
(Adaptive-Consistency, Beta criterion 0.95), adaptive (thinkctl: stop when the remaining budget is unlikely to
change the majority), weighted (score-weighted vote), best_of (best-of-N by recorded score). Every figure is
averaged over random orders of each problem's samples (--permutations, seeded); the 95 % interval is a bootstrap
over problems. See ``thinkctl.eval.replay`` for the exact rules and sources.
"""

from __future__ import annotations

import argparse
from typing import Any

from thinkctl.commands._common import add_progress_argument, check_output_file, write_json

NAME = "replay"
HELP = "parallel-sampling stopping policies (sc, esc, asc, adaptive, weighted, best_of) on recorded samples"
DESCRIPTION = __doc__


def add_arguments(p: argparse.ArgumentParser) -> None:
    from thinkctl import voting

    p.add_argument("--data", required=True, metavar="FILE", help="replay JSONL file (one problem per line)")
    p.add_argument("--policy", default="all", metavar="NAME[,NAME...]",
                   help="comma-separated policies: sc, esc, asc, adaptive, weighted, best_of, or all")
    p.add_argument("--json", required=True, metavar="OUT", help="results JSON to write")
    p.add_argument("--permutations", type=int, default=100, help="random sample orders averaged per problem")
    p.add_argument("--seed", type=int, default=0, help="seed of the permutations and the bootstrap")
    g = p.add_argument_group("policy options")
    g.add_argument("--esc-window", type=int, default=voting.ESC_WINDOW, help="ESC window size (published: 5)")
    g.add_argument("--asc-threshold", type=float, default=voting.ASC_THRESHOLD,
                   help="ASC Beta-criterion threshold (published: 0.95)")
    g.add_argument("--alpha", type=float, default=voting.ADAPTIVE_ALPHA,
                   help="adaptive: stop when P(remaining samples change the majority) < alpha")
    g.add_argument("--prior-count", type=float, default=voting.ADAPTIVE_PRIOR_COUNT,
                   help="adaptive: Dirichlet pseudo-count per answer (1 = uniform)")
    g.add_argument("--min-samples", type=int, default=voting.ADAPTIVE_MIN_SAMPLES,
                   help="adaptive: never stop before this many samples")
    g.add_argument("--score-transform", choices=["auto", "identity", "sigmoid"], default="auto",
                   help="weighted: map from score to vote weight (auto: identity for scores in [0,1], else sigmoid)")
    g.add_argument("--n-bootstrap", type=int, default=2000, help="bootstrap resamples for the intervals")
    add_progress_argument(p)


def _fmt(v: Any, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def run(args: argparse.Namespace) -> int:
    check_output_file(args.json, "--json")
    from thinkctl.eval.replay import ReplayConfig, load_replay, run_replay

    cfg = ReplayConfig(permutations=args.permutations, seed=args.seed, esc_window=args.esc_window,
                       asc_threshold=args.asc_threshold, adaptive_alpha=args.alpha,
                       adaptive_prior_count=args.prior_count, adaptive_min_samples=args.min_samples,
                       score_transform=args.score_transform, n_bootstrap=args.n_bootstrap)
    data = load_replay(args.data)
    result = run_replay(data, args.policy, cfg, progress=not args.no_progress)
    out = write_json(args.json, result)

    print(f"{args.data}: {len(data.problems)} problems, {args.permutations} permutations, seed {args.seed}")
    print(f"{'policy':<10} {'accuracy':>8} {'95% CI':>17} {'d vs sc':>8} {'samples':>8} {'tokens':>9}")
    for name, e in result["strategies"].items():
        lo, hi = e["ci95"]
        delta = e.get("accuracy_delta_vs_sc")
        print(f"{name:<10} {e['accuracy']:>8.4f} [{lo:.3f}, {hi:.3f}] {_fmt(delta, '+8.4f'):>8} "
              f"{e['samples_mean']:>8.2f} {_fmt(e['tokens_mean'], '9.1f'):>9}")
    for name, why in result["config"]["skipped"].items():
        print(f"skipped {name}: {why}")
    if result["strategies"] and next(iter(result["strategies"].values()))["tokens_mean"] is None:
        print(f"tokens: {result['config']['tokens']['note']}")
    print(f"wrote {out}")
    return 0
