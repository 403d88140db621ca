"""``thinkctl steps-report``: how well each step evaluator (a process reward model, a checker) finds the first error.

On step-labelled solutions (``steps/*.jsonl``: steps, the human-labelled first wrong step, and optionally each
evaluator's score for every step), reports per evaluator: the step AUROC (steps before the first error against the
first wrong step), first-error localization as in ProcessBench (accuracy on solutions with an error, on solutions
without, and their harmonic mean F1; the threshold fixed by --threshold or cross-fitted over problems), and how
well each aggregation of step scores (last, min, prod, mean) ranks right solutions above wrong ones. A "random"
evaluator is the chance reference. See ``thinkctl.process.localization`` for the exact definitions.
"""

from __future__ import annotations

import argparse
from typing import Any

from thinkctl.commands._common import check_output_file, write_json

NAME = "steps-report"
HELP = "step evaluators (PRMs, checkers) against human first-error labels: step AUROC, localization, selection"
DESCRIPTION = __doc__


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", nargs="+", metavar="FILE",
                   help="steps JSONL files; default: every steps/*.jsonl of the directory named by $THINKCTL_DATA")
    p.add_argument("--json", required=True, metavar="OUT", help="report JSON to write")
    p.add_argument("--threshold", type=float, default=None,
                   help="flag a step scored below this; default: cross-fitted (maximum F1 on one half of the "
                        "problems, measured on the other)")
    p.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap resamples of the AUROC intervals")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the bootstrap and the random reference")


def _fmt(v: Any) -> str:
    return "  n/a" if v is None else f"{v:5.3f}"


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from thinkctl.process import LocalizationConfig, evaluate_step_scorers, labelled_solutions
    from thinkctl.traces import read_steps
    from thinkctl.traces.readers import recorded_files

    cfg = LocalizationConfig(threshold=args.threshold, n_bootstrap=args.n_bootstrap, seed=args.seed)
    out_path = check_output_file(args.json, "--json")
    files = [Path(f) for f in args.data] if args.data else recorded_files("steps")
    if not files:
        raise FileNotFoundError("no steps files found; pass --data FILE.jsonl")
    report: dict[str, Any] = {"files": {}}
    for f in files:
        sols = labelled_solutions(read_steps(f).rows)
        r = evaluate_step_scorers(sols, cfg=cfg)
        report["files"][f.name] = r
        print(f"{f.name}: {r['n_solutions']} solutions of {r['n_problems']} problems, {r['n_with_error']} with an "
              "error")
        print(f"  {'evaluator':<42} {'stepAUROC':>9} {'95% CI':>14} {'F1':>5} {'acc_err':>7} {'acc_ok':>6} "
              f"{'sel min':>7} {'sel last':>8}")
        for name, e in r["evaluators"].items():
            sa, loc, sel = e["step_auroc"], e["localization"], e["selection"]
            ci = "" if sa["ci95"] is None else f"[{sa['ci95'][0]:.2f}, {sa['ci95'][1]:.2f}]"
            sel_min = sel["min"]["auroc_process_correct"]["value"]
            sel_last = sel["last"]["auroc_process_correct"]["value"]
            print(f"  {name:<42} {_fmt(sa['value']):>9} {ci:>14} {_fmt(loc['f1'])} "
                  f"{_fmt(loc['accuracy_erroneous']):>7} {_fmt(loc['accuracy_correct']):>6} {_fmt(sel_min):>7} "
                  f"{_fmt(sel_last):>8}")
    print(f"wrote {write_json(out_path, report)}")
    return 0
