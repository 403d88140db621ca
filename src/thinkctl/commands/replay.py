"""``thinkctl replay``: stopping rules evaluated offline on recorded outputs -> results JSON.

Two inputs, one of them:

``--data FILE`` (replay JSONL): parallel-sampling policies. sc (self-consistency over all N), esc (Early-Stopping
Self-Consistency, window 5), asc (Adaptive-Consistency, Beta criterion 0.95), adaptive (thinkctl: stop when the
remaining budget is unlikely to change the majority), weighted (score-weighted vote), best_of (best-of-N by recorded
score). Every figure is averaged over random orders of each problem's samples (--permutations, seeded); the 95 %
interval is a bootstrap over problems. See ``thinkctl.eval.replay`` for the exact rules and sources.

``--traces STORE`` (a trace store from ``thinkctl collect``): serial stopping rules on each problem's greedy sample,
read at the store's checkpoints. full (greedy to the end), oracle, fixed@B (budget forcing), dynasor[@E] (forced
answers every E thinking tokens agreeing k times; every probe paid), deepconf (windowed token confidence below a
threshold), probe (the certified stop rule of --bundle; alias serial). Accuracy with Wilson intervals, tokens and
thinking tokens with bootstrap intervals, paired savings against full and the loss rate (right answers lost) set
against the certified epsilon. See ``thinkctl.eval.serial_replay`` for each rule's definition and token accounting.
"""

from __future__ import annotations

import argparse
from typing import Any

from thinkctl.commands._common import add_progress_argument, check_output_file, write_json

NAME = "replay"
HELP = ("stopping rules on recorded outputs: parallel policies (sc, esc, asc, adaptive, weighted, best_of) on a "
        "replay file, or serial rules (full, oracle, fixed@B, dynasor, deepconf, probe) on a trace store")
DESCRIPTION = __doc__

#: Options of the serial replay only (--traces); all default to None so that giving one with --data is caught.
_SERIAL_ONLY = ("bundle", "rules", "dynasor_k", "probe_cost", "deepconf_threshold")
#: Options of the parallel replay only (--data), with their defaults.
_PARALLEL_ONLY = {"policy": "all"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from thinkctl import voting
    from thinkctl.eval.serial_replay import DEFAULT_RULES, DYNASOR_K, PROBE_COSTS

    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="FILE", help="replay JSONL file (one problem per line): parallel policies")
    src.add_argument("--traces", metavar="STORE", help="trace store (thinkctl collect): serial rules on its greedy "
                                                       "samples")
    p.add_argument("--json", required=True, metavar="OUT", help="results JSON to write")
    p.add_argument("--seed", type=int, default=0, help="seed of the permutations and the bootstrap")
    p.add_argument("--n-bootstrap", type=int, default=2000, help="bootstrap resamples for the intervals")

    g = p.add_argument_group("parallel policies (--data)")
    g.add_argument("--policy", default="all", metavar="NAME[,NAME...]",
                   help="comma-separated policies: sc, esc, asc, adaptive, weighted, best_of, or all")
    g.add_argument("--permutations", type=int, default=100, help="random sample orders averaged per problem")
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

    s = p.add_argument_group("serial rules (--traces)")
    s.add_argument("--bundle", default=None, metavar="BUNDLE",
                   help="calibrated bundle of the store's model (thinkctl train + calibrate): replays its certified "
                        "stop rule ('probe') and can set deepconf's threshold")
    s.add_argument("--rules", default=None, metavar="NAME[,NAME...]",
                   help=f"comma-separated rules: full, oracle, fixed@B, dynasor, dynasor@E, deepconf, probe (alias "
                        f"serial). Default: {','.join(DEFAULT_RULES)}, less those the inputs do not allow (listed "
                        "as skipped); full is always included")
    s.add_argument("--dynasor-k", type=int, default=None,
                   help=f"dynasor: agreeing forced answers in a row that stop it (default {DYNASOR_K}, Dynasor-CoT's)")
    s.add_argument("--probe-cost", choices=PROBE_COSTS, default=None,
                   help="dynasor: tokens each forced-answer probe costs: 'prefill' (default; the prompt and thinking "
                        "so far read again, plus the answer, as thinkctl's live prober pays) or 'answer' (the answer "
                        "tokens only, a server that reuses the prefix's KV cache)")
    s.add_argument("--deepconf-threshold", type=float, default=None, metavar="NATS",
                   help="deepconf: group-confidence threshold (default: DeepConf's warm-up percentile, from the "
                        "store's sampled traces or the bundle's trace store)")
    add_progress_argument(p)


def _fmt(v: Any, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def run(args: argparse.Namespace) -> int:
    check_output_file(args.json, "--json")
    if args.traces is not None:
        given = [f"--{k.replace('_', '-')}" for k, v in _PARALLEL_ONLY.items() if getattr(args, k) != v]
        if given:
            raise ValueError(f"{', '.join(given)} applies to --data (parallel policies); with --traces choose serial "
                             "rules with --rules")
        return _run_serial(args)
    given = [f"--{k.replace('_', '-')}" for k in _SERIAL_ONLY if getattr(args, k) is not None]
    if given:
        raise ValueError(f"{', '.join(given)} applies to --traces (serial rules on a trace store), not to --data")
    return _run_parallel(args)


def _run_parallel(args: argparse.Namespace) -> int:
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


def _run_serial(args: argparse.Namespace) -> int:
    from thinkctl.eval.serial_replay import DYNASOR_K, SerialReplayConfig, replay_serial

    cfg = SerialReplayConfig(dynasor_k=DYNASOR_K if args.dynasor_k is None else args.dynasor_k,
                             probe_cost=args.probe_cost or "prefill", deepconf_threshold=args.deepconf_threshold,
                             n_bootstrap=args.n_bootstrap, seed=args.seed)
    result = replay_serial(args.traces, bundle=args.bundle, rules=args.rules, config=cfg)
    result.pop("rows")
    out = write_json(args.json, result)

    tr = result["config"]["traces"]
    cut = (f"{tr['n_truncated']} reached the store's cap of {tr['max_new_tokens']} tokens"
           if tr["max_new_tokens"] is not None else f"{tr['n_truncated']} whose thinking never closed")
    print(f"{tr['path']}: {tr['n_problems']} greedy traces, checkpoints every {tr['every']} thinking tokens, {cut}")
    print(f"{'rule':<11} {'accuracy':>8} {'95% CI':>15} {'thinking':>9} {'tokens':>8} {'saved':>7} "
          f"{'saved 95% CI':>16} {'d acc':>7} {'lost':>6}")
    for name, e in result["strategies"].items():
        lo, hi = e["ci95"]
        vs = e.get("vs_full") or {}
        saved, sci = vs.get("thinking_saved_fraction"), vs.get("thinking_saved_ci95")
        sci_txt = f"[{sci[0]:+.2f}, {sci[1]:+.2f}]" if sci else ""
        print(f"{name:<11} {e['accuracy']:>8.3f} [{lo:.3f}, {hi:.3f}] {e['thinking_tokens_mean']:>9.1f} "
              f"{e['tokens_mean']:>8.1f} {_fmt(saved, '+7.2f'):>7} {sci_txt:>16} "
              f"{_fmt(vs.get('accuracy_diff'), '+7.3f'):>7} {e['loss_rate']:>6.3f}")
    cert = result["strategies"].get("probe", {}).get("certified")
    if cert:
        verdict = "within" if cert["loss_rate_within_epsilon"] else "ABOVE"
        print(f"probe: loss rate {result['strategies']['probe']['loss_rate']:.3f} is {verdict} the certified epsilon "
              f"{cert['epsilon']} (threshold {cert['threshold']}, delta {cert['delta']})")
    for name, info in result["config"]["rules"].items():
        if "note" in info:
            print(f"note {name}: {info['note']}")
    for name, why in result["config"]["skipped"].items():
        print(f"skipped {name}: {why}")
    print(f"wrote {out}")
    return 0
