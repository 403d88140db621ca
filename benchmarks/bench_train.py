"""``python benchmarks/bench_train.py``: seconds per training step of the embedded model, eager against
``torch.compile``.

Takes the same recipe options as ``thinkctl train-embedded`` and times that recipe's step both ways in one run, on the
same batches, in alternating blocks (:func:`thinkctl.embedded.train.bench_compile`). A benchmark, not a test: the
figures (``ratio`` = compiled / eager seconds per step, compile time, break-even steps, loss agreement) go to the JSON
file given with ``--json``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from thinkctl.commands._common import add_progress_argument, write_json, run_script, script_parser
from thinkctl.commands.train_embedded import add_recipe_arguments, config_from_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", required=True, help="result file to write")
    p.add_argument("--bench-steps", type=int, default=60, help="timed steps per variant (default 60)")
    p.add_argument("--block", type=int, default=10, help="steps per block; the variants alternate blocks")
    p.add_argument("--bench-warmup", type=int, default=4,
                   help="untimed steps per variant first (compiling happens in them; default 4)")
    p.add_argument("--bench-problems", type=int, default=20_000,
                   help="problems to build the batches from (default 20000; lengths as in the full recipe)")
    add_recipe_arguments(p)
    add_progress_argument(p)


def run(args: argparse.Namespace) -> int:
    from thinkctl.embedded.train import bench_compile

    if args.device != "cpu":
        raise ValueError(f"--device {args.device}: bench-train times CPU steps (the one-hour training budget is a "
                         "CPU figure); drop --device")
    result = bench_compile(config_from_args(args), steps=args.bench_steps, block=args.block, warmup=args.bench_warmup,
                           n_problems=args.bench_problems, progress=not args.no_progress)
    write_json(args.json, result)
    even = result["break_even_steps"]
    print(f"eager {result['eager_s_per_step']:.3f} s/step, compiled {result['compiled_s_per_step']:.3f} s/step: "
          f"ratio {result['ratio']:.3f} (median block {result['median_block_ratio']:.3f}, blocks "
          f"{min(result['block_ratios']):.3f}-{max(result['block_ratios']):.3f}); "
          f"compiling {result['compile_s']:.0f} s, "
          + (f"repaid after {even:.0f} steps" if even is not None else "never repaid") + f"; wrote {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The script's options (``--help`` lists them with their defaults)."""
    return script_parser("bench_train.py", __doc__, add_arguments)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 on success, 2 (with the advice on stderr) on a user error."""
    return run_script(build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
