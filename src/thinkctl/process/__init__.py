"""Process-level verification: step scorers, their aggregations, and how well they locate the first error.

* :class:`StepScorer` - the interface: one score per reasoning step; :class:`CallableStepScorer` wraps any
  ``fn(prompt, steps)`` (a process reward model served anywhere).
* :class:`ExactStepChecker` - exact verification of the built-in tasks' thinking lines (1 right, 0 an error).
* :class:`~thinkctl.process.probe.ProcessProbeScorer` - a hidden-state probe (the bundle's outlook probe) read at
  the end of every step.
* :func:`~thinkctl.process.search.step_search` - beam search and DVTS over steps, guided by any scorer.
* :data:`AGGREGATIONS` / :func:`aggregate` - ``last``, ``min``, ``prod`` (search-and-learn) and ``mean``.
* :func:`evaluate_step_scorers` - step AUROC, first-error localization (ProcessBench's F1) and outcome selection
  per evaluator on step-labelled solutions (``thinkctl steps-report``).
"""

from thinkctl.process.checker import ExactStepChecker, arithmetic_claims_hold
from thinkctl.process.localization import (LocalizationConfig, StepLabelled, evaluate_step_scorers,
                                           first_flagged_step, labelled_solutions, localization_figures)
from thinkctl.process.scoring import AGGREGATIONS, CallableStepScorer, StepScorer, aggregate, split_steps

__all__ = ["StepScorer", "CallableStepScorer", "ExactStepChecker", "arithmetic_claims_hold", "AGGREGATIONS",
           "aggregate", "split_steps", "LocalizationConfig", "StepLabelled", "labelled_solutions",
           "first_flagged_step", "localization_figures", "evaluate_step_scorers"]
