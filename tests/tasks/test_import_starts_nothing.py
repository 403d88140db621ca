"""Importing thinkctl starts nothing: no thread, no process, no exit hook; the verifier pool starts on first use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import thinkctl

# Run in a fresh interpreter: atexit.register is wrapped before anything is imported, so that every exit hook
# registered from a thinkctl module is recorded with the module that registered it.
RECORDER = r"""
import atexit, importlib, json, multiprocessing, os, pkgutil, sys, threading

hooks = []
_register = atexit.register


def register(fn, *args, **kwargs):
    module = sys._getframe(1).f_globals.get("__name__", "")
    if module.split(".")[0] == "thinkctl":
        hooks.append([module, getattr(fn, "__qualname__", repr(fn))])
    return _register(fn, *args, **kwargs)


atexit.register = register


def children():
    if os.path.isdir(f"/proc/{os.getpid()}/task"):
        out = []
        for tid in os.listdir(f"/proc/{os.getpid()}/task"):
            with open(f"/proc/{os.getpid()}/task/{tid}/children") as f:
                out += f.read().split()
        return sorted(out)
    try:
        import psutil
    except ImportError:
        return None  # neither /proc nor psutil: child processes cannot be listed here
    return sorted(str(p.pid) for p in psutil.Process().children())


def state():
    return {"threads": [t.name for t in threading.enumerate()], "mp_children": len(multiprocessing.active_children()),
            "children": children(), "hooks": list(hooks)}


import thinkctl
modules = [m.name for m in pkgutil.walk_packages(thinkctl.__path__, "thinkctl.")]
for name in modules:
    importlib.import_module(name)
report = {"modules": modules, "after_import": state()}
if sys.argv[1:] == ["use"]:
    from thinkctl.tasks.verify import answers_equivalent

    verdicts = []
    for _ in range(2):  # two checks from worker threads: the second reuses the first one's helper process
        worker = threading.Thread(target=lambda: verdicts.append(answers_equivalent("x+1", "1+x")))
        worker.start()
        worker.join()
    report["verdicts"] = verdicts
    report["after_use"] = state()
print(json.dumps(report))
"""


def _run(*args: str) -> dict:
    env = dict(os.environ)
    src = str(Path(thinkctl.__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    done = subprocess.run([sys.executable, "-c", RECORDER, *args], capture_output=True, text=True, env=env,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_every_module_starts_nothing() -> None:
    report = _run()
    assert {"thinkctl.tasks", "thinkctl.tasks.benchmarks", "thinkctl.tasks.verify", "thinkctl.stopping",
            "thinkctl.controller", "thinkctl.eval", "thinkctl.cli"} <= set(report["modules"])
    after = report["after_import"]
    assert after["children"] in ([], None)  # None: this platform cannot list child processes
    assert after | {"children": []} == {"threads": ["MainThread"], "mp_children": 0, "children": [], "hooks": []}


def test_the_verifier_pool_starts_on_first_use_and_registers_its_exit_hook_once() -> None:
    report = _run("use")
    assert report["after_import"]["hooks"] == [] and report["after_import"]["children"] in ([], None)
    assert report["verdicts"] == [True, True]
    after = report["after_use"]
    assert after["hooks"] == [["thinkctl.tasks.verify", "_VerifierPool.close"]]
    if after["children"] is not None:
        assert len(after["children"]) == 1  # one idle helper process, kept for the next check and closed at exit
