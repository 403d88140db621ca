"""Layers import downward only: every import in src/thinkctl (inside functions too) points to the same or a lower layer.

The layer order, lowest first. Within the bottom, the shared building blocks come first, then the task families,
generation helpers, the embedded model and the model loaders (which load the embedded model). The package root
(``thinkctl/__init__.py``) re-exports the tasks and the loaders, so it sits with the loaders; its ``__version__``
is metadata that every layer may read.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "thinkctl"

LAYERS: list[tuple[str, ...]] = [
    ("jsonl", "registry", "persistence", "voting", "stats", "devices", "bundle", "seeds"),
    ("tasks",),
    ("generation",),
    ("embedded",),
    ("models", ""),  # "": the package root
    ("stopping",),
    ("traces",),
    ("predictors",),
    ("calibration",),
    ("process",),
    ("controller",),
    ("eval",),
    ("distributed",),
    ("commands",),
    ("cli",),
]
LAYER_OF = {name: rank for rank, names in enumerate(LAYERS) for name in names}



def _part(module: str) -> str:
    """The layer key of a dotted module name under thinkctl: its subpackage or top-level module ("" for the root)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _module_name(path: Path, src: Path = SRC) -> tuple[str, str]:
    """(dotted module name, dotted package that relative imports start from) of a file under ``src``."""
    rel = path.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
        return ".".join(parts), ".".join(parts)
    return ".".join(parts), ".".join(parts[:-1])


def imports_of(path: Path, src: Path = SRC) -> list[tuple[str, int]]:
    """Every thinkctl module imported by the file at ``path`` (module level and inside functions), with its line."""
    _, package = _module_name(path, src)
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module == "thinkctl":
                # `from thinkctl import x`: a subpackage or module of the root, or a name the root defines
                for alias in node.names:
                    if alias.name == "__version__":
                        continue
                    target = f"thinkctl.{alias.name}" if alias.name in LAYER_OF else "thinkctl"
                    found.append((target, node.lineno))
            else:
                found.append((module, node.lineno))
    return [(m, line) for m, line in found if m == "thinkctl" or m.startswith("thinkctl.")]


def upward_imports(src: Path = SRC) -> list[str]:
    """``file:line: a (layer) imports b (layer)`` for every import of a higher layer."""
    problems = []
    for path in sorted((src / "thinkctl").rglob("*.py")):
        module, _ = _module_name(path, src)
        source = _part(module)
        if module == "thinkctl":
            continue  # the root re-exports lazily; what it loads is checked where it is defined
        if source not in LAYER_OF:
            problems.append(f"{path}: module thinkctl.{source} has no layer; add it to LAYERS in {__file__}")
            continue
        for target, line in imports_of(path, src):
            dest = _part(target)
            if dest not in LAYER_OF:
                problems.append(f"{path}:{line}: imports {target}, which has no layer; add it to LAYERS")
            elif LAYER_OF[dest] > LAYER_OF[source]:
                problems.append(f"{path}:{line}: {source or 'thinkctl'} (layer {LAYER_OF[source]}) imports {target} "
                                f"(layer {LAYER_OF[dest]}); move what it needs to a lower layer or pass it in")
    return problems


def test_layers_import_downward_only() -> None:
    problems = upward_imports()
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("code, found", [
    ("def f():\n    from thinkctl.eval.replay import run_replay\n", True),  # inside a function
    ("from ..eval import replay\n", True),  # relative
    ("import thinkctl.controller.core\n", True),
    ("from thinkctl import eval\n", True),
    ("from thinkctl import __version__\nfrom thinkctl.stats import wilson_interval\n", False),
    ("from thinkctl.traces.store import TraceStore\n", False),  # the same layer
])
def test_an_upward_import_in_a_low_layer_is_found(tmp_path: Path, code: str, found: bool) -> None:
    pkg = tmp_path / "thinkctl" / "traces"
    pkg.mkdir(parents=True)
    (pkg / "probe_module.py").write_text(code)
    problems = upward_imports(tmp_path)
    assert bool(problems) is found, problems
