"""Loading an artefact or a model never runs code from it: no pickle, torch.load only with weights_only=True, no
trust_remote_code, no eval/exec. Checked on the syntax tree of every source file (comments and strings do not
count), and the checker itself is checked on snippets that break each rule."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = [ROOT / "src", ROOT / "benchmarks"]
#: Modules that deserialise by running code.
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def violations(source: str, filename: str = "<snippet>") -> list[str]:
    """Each breach of the rules in ``source``, as ``FILE:LINE: what``."""
    found = []
    for node in ast.walk(ast.parse(source, filename=filename)):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in UNSAFE_MODULES:
                    found.append(f"{where}: imports {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in UNSAFE_MODULES:
            found.append(f"{where}: imports from {node.module}")
        elif isinstance(node, ast.ImportFrom) and node.module == "torch" and any(a.name == "load" for a in node.names):
            found.append(f"{where}: imports torch.load by name (call torch.load(..., weights_only=True))")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            kw = {k.arg: k.value for k in node.keywords}
            if name in ("eval", "exec", "builtins.eval", "builtins.exec"):
                found.append(f"{where}: calls {name}()")
            if name.endswith("torch.load") or (name == "load" and "weights_only" in kw):
                if not _is_true(kw.get("weights_only")):
                    found.append(f"{where}: torch.load without weights_only=True")
            if _is_true(kw.get("trust_remote_code")):
                found.append(f"{where}: trust_remote_code=True")
            if name.endswith(("np.load", "numpy.load")) and _is_true(kw.get("allow_pickle")):
                found.append(f"{where}: numpy.load with allow_pickle=True")
            if None in kw and name:  # **kwargs: a dict literal passed through may carry trust_remote_code
                spread = kw[None]
                if isinstance(spread, ast.Dict):
                    for k, v in zip(spread.keys, spread.values):
                        if isinstance(k, ast.Constant) and k.value == "trust_remote_code" and _is_true(v):
                            found.append(f"{where}: trust_remote_code=True")
    return found


def _sources() -> list[Path]:
    return sorted(p for root in SCANNED if root.is_dir() for p in root.rglob("*.py"))


def test_there_are_sources_to_scan():
    files = _sources()
    assert len(files) > 50 and any(p.name == "models.py" for p in files)


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_source_runs_no_code_from_data(path):
    assert violations(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT))) == []


@pytest.mark.parametrize("snippet", [
    "import pickle",
    "import cloudpickle as cp",
    "from torch import load",
    "from joblib import load",
    "import torch\ntorch.load('w.pt')",
    "import torch\ntorch.load('w.pt', weights_only=False)",
    "from transformers import AutoModel\nAutoModel.from_pretrained('x', trust_remote_code=True)",
    "f(**{'trust_remote_code': True})",
    "eval(text)",
    "exec(compile(src, 'f', 'exec'))",
    "import numpy as np\nnp.load('a.npy', allow_pickle=True)",
])
def test_the_checker_catches_each_rule(snippet):
    assert violations(snippet)


@pytest.mark.parametrize("snippet", [
    "model.eval()",
    "import torch\ntorch.load('w.pt', weights_only=True, map_location='cpu')",
    "AutoModel.from_pretrained('x', local_files_only=True)",
    "s = 'import pickle; eval(x)'  # only text",
])
def test_the_checker_passes_safe_code(snippet):
    assert violations(snippet) == []
