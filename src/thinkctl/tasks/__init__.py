"""Verifiable task families and the task registry.

>>> import thinkctl
>>> {"arith", "modeq", "mix"} <= set(thinkctl.tasks.names())
True
"""

from thinkctl.tasks.base import (ANSWER_PREFIX, TASKS, THINK_CLOSE, THINK_OPEN, Problem, Task, answer_section,
                                 get, names, register)

__all__ = ["Problem", "Task", "TASKS", "get", "names", "register", "answer_section",
           "THINK_OPEN", "THINK_CLOSE", "ANSWER_PREFIX"]

# Built-in families register themselves on import.
from thinkctl.tasks import arith as _arith  # noqa: E402,F401
from thinkctl.tasks import modeq as _modeq  # noqa: E402,F401
from thinkctl.tasks import mix as _mix  # noqa: E402,F401
from thinkctl.tasks.benchmarks import BENCHMARK_TASKS as _BENCHMARKS  # noqa: E402

for _name, _factory in _BENCHMARKS.items():
    TASKS.add(_name, _factory)
