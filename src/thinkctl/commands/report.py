"""``thinkctl report``: one self-contained HTML page (plots embedded) + JSON on a bundle's predictors.

For every predictor in the bundle: uncalibrated and calibrated reliability diagrams side by side, with ECE, MCE,
Brier, NLL and AUROC and their bootstrap intervals, fitted on the bundle's calib problems and measured on its test
problems.
"""

from __future__ import annotations

import argparse

from thinkctl.commands._common import check_output_dir

NAME = "report"
HELP = "HTML + JSON calibration report of a bundle's predictors (held-out test problems)"
DESCRIPTION = __doc__


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", required=True, help="bundle folder (after `thinkctl train`, ideally `calibrate`)")
    p.add_argument("--out", required=True, help="folder for report.html and report.json")
    p.add_argument("--n-bootstrap", type=int, default=1000)


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.out, "--out")
    from thinkctl.calibration.bundle import bundle_report_entries
    from thinkctl.calibration.report import calibration_report

    entries = bundle_report_entries(args.bundle)
    calibration_report(entries, args.out, n_boot=args.n_bootstrap, title=f"thinkctl report: {args.bundle}")
    print(f"wrote {args.out}/report.html and {args.out}/report.json ({', '.join(entries)})")
    return 0
