"""Arguments and output helpers shared by subcommands."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["add_model_argument", "add_progress_argument", "write_json", "script_parser", "run_script",
           "check_output_file", "check_output_dir", "int_list"]


def int_list(text: str) -> tuple[int, ...]:
    """argparse type of a comma-separated list of integers (``--layers 0,-1``); a clear usage error otherwise."""
    try:
        values = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers (e.g. 0,2,-1)") from None
    if not values:
        raise argparse.ArgumentTypeError(f"{text!r} holds no integer; give e.g. 0,2,-1")
    return values


def _existing_ancestor(path: Path) -> Path:
    """``path`` itself or its nearest ancestor that exists (in any form: folder, file, link)."""
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _probe_writable(folder: Path) -> str | None:
    """None when a file can be created in ``folder``, else why not. Tries it (a temporary file, removed at once):
    permission bits, read-only mounts and special file systems all answer the same way."""
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".thinkctl-write-check-")
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    os.unlink(name)
    return None


def _check_parent(path: Path, option: str) -> None:
    """The folder ``path`` will be written into exists as a folder (or can be created) and is writable."""
    anchor = _existing_ancestor(path.parent)
    if not anchor.is_dir():
        raise ValueError(f"{option} {path}: {anchor} is a file, so no folder can be made there; choose another path")
    why = _probe_writable(anchor)
    if why:
        raise ValueError(f"{option} {path}: cannot write in {anchor} ({why}); choose a folder you can write to")


def check_output_file(path: str | os.PathLike[str], option: str) -> Path:
    """Check, before any work, that the output file ``path`` of ``option`` (e.g. ``"--json"``) can be written.

    Raises
    ------
    ValueError
        When ``path`` is a folder, lies under a file, or its folder (or the nearest one that exists) is not writable;
        the message names the option and the path.
    """
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{option} {p} is a directory; name the file to write, e.g. {p / 'results.json'}")
    if p.exists() and not p.is_file():
        raise ValueError(f"{option} {p} exists and is not a regular file; choose another path")
    _check_parent(p, option)
    return p


def check_output_dir(path: str | os.PathLike[str], option: str) -> Path:
    """Check, before any work, that the output folder ``path`` of ``option`` (e.g. ``"--out"``) can be created or
    written into.

    Raises
    ------
    ValueError
        When ``path`` is an existing file, lies under a file, or is (or would be created in) a folder that is not
        writable; the message names the option and the path.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"{option} {p} is a file, not a folder; give a folder (it is created if missing)")
    if p.is_dir():
        why = _probe_writable(p)
        if why:
            raise ValueError(f"{option} {p}: cannot write in it ({why}); choose a folder you can write to")
        return p
    _check_parent(p, option)
    return p


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
    from thinkctl.persistence import write_text_atomic

    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


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
