"""Arguments and output helpers shared by subcommands."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["add_model_argument", "add_progress_argument", "write_json", "script_parser", "run_script"]


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="embedded", metavar="SPEC",
                        help="'embedded', 'smollm2', a local transformers directory, or a .gguf file")


def add_device_argument(parser: argparse.ArgumentParser, note: str = "") -> None:
    parser.add_argument("--device", default="cpu", help="torch device of the model, e.g. cpu or cuda" + note)


def add_ray_arguments(parser: argparse.ArgumentParser, unit: str) -> None:
    """``--ray ADDRESS`` and ``--ray-workers N``; ``unit`` names what is sharded over the actors."""
    parser.add_argument("--ray", default=None, metavar="ADDRESS",
                        help=f"shard {unit} over Ray actors: 'local' (start a local instance), 'auto' (join the "
                             "running cluster) or a cluster address; needs pip install 'thinkctl[distributed]'")
    parser.add_argument("--ray-workers", type=int, default=None, metavar="N",
                        help="Ray actors (model replicas); default: one per GPU, else one per CPU")


def ray_config(args: argparse.Namespace) -> Any:
    """The :class:`~thinkctl.distributed.RayConfig` of ``--ray`` / ``--ray-workers``, or None without ``--ray``.
    Checked before any work: ``--ray-workers`` alone, or ``--ray`` without ray installed, is a one-line error."""
    if args.ray is None:
        if args.ray_workers is not None:
            raise ValueError(f"--ray-workers={args.ray_workers} needs --ray ADDRESS ('local', 'auto' or an address)")
        return None
    from thinkctl.distributed import RayConfig, require_ray

    require_ray()
    return RayConfig(address=args.ray, num_workers=args.ray_workers, quiet=not getattr(args, "verbose", False))


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (temp file + rename), creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def script_parser(prog: str, description: str | None,
                  add_arguments: Callable[[argparse.ArgumentParser], None]) -> argparse.ArgumentParser:
    """The parser of a stand-alone script (the benchmarks): its options, ``-v``, defaults shown by ``--help``."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    add_arguments(parser)
    return parser


def run_script(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int],
               argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run; 0 on success, 2 (with the advice on stderr, no traceback) on a user error."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
