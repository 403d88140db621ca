"""Pool ``thinkctl evaluate`` runs of process-guided search and compare it with votes, paired by problem.

Each run is an evaluation JSON written by ``thinkctl evaluate`` (one task level, one step scorer); its rows file
holds one row per (problem, strategy). This script pools the rows of several runs (e.g. arith levels 3, 4 and 5),
summarises every strategy (accuracy with a bootstrap 95 % interval, tokens) and compares each pair ``target:baseline``
on the problems both answered (the same task, level, seed and problem, in any run; a search guided by another
scorer than the exact checker is named with it, e.g. ``beam@8[process-probe]``): accuracy difference and tokens
saved, each with a paired bootstrap 95 % interval. A pair is "at matched tokens or fewer" when the target spends at
most the baseline's tokens.

Example::

    python benchmarks/process_search.py --runs out/search/arith_l3.json out/search/arith_l4.json \\
        --pairs beam@8:sc@8,beam@8:best_of@8 --json results/process/search_arith.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from thinkctl.eval.evaluate import paired_comparison, summarize
from thinkctl.jsonl import iter_jsonl


def _rows(run: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    if not run.is_file():
        raise FileNotFoundError(f"{run} not found; pass evaluation JSONs written by `thinkctl evaluate`")
    result = json.loads(run.read_text())
    cfg = result.get("config") or {}
    rows_path = Path(cfg.get("rows", ""))
    if not rows_path.is_file():
        rows_path = run.with_suffix(".rows.jsonl")
    if not rows_path.is_file():
        raise FileNotFoundError(f"the rows of {run} ({cfg.get('rows')}) are missing; rerun the evaluation")
    strategies = set(cfg.get("strategies") or [])
    rows = [row for _, row in iter_jsonl(rows_path) if not strategies or row["strategy"] in strategies]
    return rows, cfg


def _keyed(row: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    """The row with a problem key that is the same for the same problem in any run (problem ids repeat across
    levels), and, for searches guided by another scorer than the exact checker, the scorer in the strategy's name."""
    key = f"{cfg.get('task')}/{cfg.get('level')}/{cfg.get('seed')}/{row['problem_id']}"
    name = row["strategy"]
    scorer = cfg.get("scorer") or "check"
    if scorer != "check" and name.partition("@")[0] in ("beam", "dvts", "prune"):
        name = f"{name}[{scorer}]"
    return {**row, "problem_id": key, "strategy": name}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="process_search.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, metavar="EVAL.json", help="evaluation JSONs to pool")
    p.add_argument("--pairs", required=True, metavar="T:B[,T:B...]", help="target:baseline strategy pairs")
    p.add_argument("--json", required=True, metavar="OUT", help="pooled summary JSON to write")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    args = p.parse_args(argv)
    try:
        pairs = [tuple(x.split(":")) for x in args.pairs.split(",") if x]
        if not pairs or any(len(x) != 2 or not all(x) for x in pairs):
            raise ValueError(f"--pairs {args.pairs!r}: give target:baseline pairs, e.g. beam@8:sc@8")
        rows: list[dict[str, Any]] = []
        runs = []
        for run in args.runs:
            r, cfg = _rows(Path(run))
            rows += [_keyed(row, cfg) for row in r]
            runs.append({"file": run, "task": cfg.get("task"), "level": cfg.get("level"), "seed": cfg.get("seed"),
                         "n": cfg.get("n"), "scorer": cfg.get("scorer"), "bundle": cfg.get("bundle")})
    except (ValueError, FileNotFoundError) as exc:
        print(f"process_search: error: {exc}", file=sys.stderr)
        return 2
    summary = summarize(rows, seed=args.seed)
    compared = {}
    for target, baseline in pairs:
        pc = paired_comparison(rows, target, baseline, seed=args.seed)
        if pc is None:
            print(f"process_search: {target} and {baseline} share no problem; skipped", file=sys.stderr)
            continue
        pc["at_matched_tokens_or_fewer"] = pc["tokens_saved_fraction"] >= 0
        compared[f"{target}_vs_{baseline}"] = pc
    out = {"runs": runs, "strategies": summary, "paired": compared}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(out, indent=2) + "\n")
    tmp.replace(path)
    for name, s in sorted(summary.items(), key=lambda kv: kv[1]["tokens_mean"]):
        lo, hi = s["ci95"]
        print(f"{name:<12} {s['accuracy']:.3f} [{lo:.3f}, {hi:.3f}] {s['tokens_mean']:8.1f} tokens  n={s['n']}")
    for name, pc in compared.items():
        lo, hi = pc["accuracy_diff_ci95"]
        print(f"{name}: accuracy {pc['accuracy_diff']:+.3f} [{lo:+.3f}, {hi:+.3f}], tokens saved "
              f"{100 * pc['tokens_saved_fraction']:.1f} % ({pc['n']} problems)")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
