"""Arguments and output helpers shared by subcommands."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["add_model_argument", "add_progress_argument", "write_json"]


def add_model_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="embedded", metavar="SPEC",
                        help="'embedded', 'smollm2', a local transformers directory, or a .gguf file")


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
