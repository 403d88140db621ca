"""``python benchmarks/replay_target.py``: does thinkctl's ``adaptive`` policy meet its design target on replay files?

The target: on recorded samples, ``adaptive`` keeps the accuracy of self-consistency over all ``N`` samples (``sc``)
within a tolerance (0.005 = half a point by default) while consuming fewer samples than ESC and ASC. This script
reads the results JSON files written by ``thinkctl replay`` (run with the policies ``sc``, ``adaptive`` and
optionally ``esc``, ``asc``), checks the target on each, prints one line per file and writes the checks as JSON.
A benchmark, not a test: ``thinkctl replay`` itself reports figures only.

    thinkctl replay --data FILE.jsonl --policy all --json results/replay/NAME.json
    python benchmarks/replay_target.py results/replay/*.json --json replay_target.json
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from thinkctl.commands._common import write_json

#: Accuracy loss against ``sc`` that counts as keeping its accuracy (0.005 = 0.5 points).
ACCURACY_TOLERANCE = 0.005


def target_check(strategies: dict[str, Any], tolerance: float = ACCURACY_TOLERANCE) -> dict[str, Any] | None:
    """The target check of one replay result's ``strategies``; None when ``adaptive`` or ``sc`` was not run.

    Returns ``accuracy_within_tolerance_of_sc`` (adaptive's accuracy minus sc's is at least ``-tolerance``),
    ``tolerance``, and ``fewer_samples_than_esc`` / ``fewer_samples_than_asc`` for the baselines that were run.
    """
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance={tolerance!r} must lie in [0, 1)")
    if "adaptive" not in strategies or "sc" not in strategies:
        return None
    ad = strategies["adaptive"]
    check: dict[str, Any] = {
        "accuracy_within_tolerance_of_sc": bool(ad["accuracy_delta_vs_sc"] >= -tolerance), "tolerance": tolerance}
    for base in ("esc", "asc"):
        if base in strategies:
            check[f"fewer_samples_than_{base}"] = bool(ad["samples_mean"] < strategies[base]["samples_mean"])
    return check


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", metavar="RESULT", help="results JSON files of `thinkctl replay`")
    parser.add_argument("--tolerance", type=float, default=ACCURACY_TOLERANCE,
                        help="accuracy loss against sc that still meets the target")
    parser.add_argument("--json", default=None, metavar="OUT", help="write the checks here")


def run(args: argparse.Namespace) -> int:
    checks: dict[str, Any] = {}
    for name in args.results:
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; pass results files written by `thinkctl replay --json`")
        check = target_check(json.loads(path.read_text())["strategies"], args.tolerance)
        checks[str(path)] = check
        if check is None:
            print(f"{path}: no target check (run replay with the policies sc and adaptive)")
        else:
            print(f"{path}: " + ", ".join(f"{k}={v}" for k, v in check.items()))
    if args.json:
        print(f"wrote {write_json(args.json, checks)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The script's options (``--help`` lists them with their defaults)."""
    parser = argparse.ArgumentParser(prog="replay_target.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Check the target; 0 on success, 2 (with the advice on stderr) on a user error."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"replay_target.py: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
