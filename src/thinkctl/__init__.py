"""thinkctl: adaptive test-time compute for reasoning language models.

Predictors estimate how hard a query is and how likely the current answer is right; calibration turns those
estimates into honest probabilities and risk-controlled thresholds; stopping hooks and a controller use them
inside ``model.generate`` to stop early, think longer, or sample in parallel.

Examples
--------
>>> import thinkctl
>>> task = thinkctl.tasks.get("arith")
>>> problems = task.sample(3, seed=7)
>>> len(problems)
3
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from thinkctl import tasks

__version__ = "0.1.0"

__all__ = ["__version__", "tasks", "load_embedded", "load_model"]

if TYPE_CHECKING:  # pragma: no cover
    from thinkctl.embedded import load_embedded
    from thinkctl.models import load_model


def __getattr__(name: str) -> Any:
    # torch and transformers load lazily so that `import thinkctl` and `thinkctl --help` stay fast.
    if name == "load_embedded":
        from thinkctl.embedded import load_embedded

        return load_embedded
    if name == "load_model":
        from thinkctl.models import load_model

        return load_model
    raise AttributeError(f"module 'thinkctl' has no attribute {name!r}")
