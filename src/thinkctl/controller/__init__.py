"""thinkctl.controller: decide per query how much a reasoning LM thinks, while it generates.

:class:`AdaptiveController` routes each query by calibrated difficulty, thinks in doubling budgets continuing from
the KV cache and stops once the calibrated confidence reaches the bundle's risk-controlled threshold, or samples in
waves sharing one prefill and stops when the vote is settled; it honours a wall-clock deadline and always returns
an answer. :data:`STRATEGIES` puts the baselines (``fixed@B``, ``sc@N``, ``best_of@N``, ``esc``, ``asc``, ``deepconf``,
``dynasor``) and process-guided search (``beam@N``, ``dvts@N``) behind the same interface.

Examples
--------
>>> from thinkctl.controller import AdaptiveController, ControllerConfig  # doctest: +SKIP
>>> cfg = ControllerConfig(deadline_s=30)  # doctest: +SKIP
>>> controller = AdaptiveController.load("bundle/", model, tokenizer, cfg)  # doctest: +SKIP
>>> results = controller.generate(prompts)  # doctest: +SKIP
>>> results[0].answer, results[0].confidence, results[0].tokens, results[0].trace  # doctest: +SKIP
"""

from thinkctl.controller.bundle import Bundle, load_bundle_predictors
from thinkctl.controller.config import ControllerConfig
from thinkctl.controller.core import AdaptiveController
from thinkctl.controller.parallel import DeepConfOnline
from thinkctl.controller.predictors import HiddenStatePredictor, Outlook
from thinkctl.controller.reasons import STOP_REASONS, StopReason
from thinkctl.controller.result import ControllerResult
from thinkctl.controller.seeding import sample_seed
from thinkctl.controller.strategies import STRATEGIES, get_strategy
from thinkctl.controller.search import STEP_SCORERS, make_step_scorer  # registers beam@N and dvts@N

__all__ = ["AdaptiveController", "Bundle", "ControllerConfig", "ControllerResult", "DeepConfOnline",
           "HiddenStatePredictor", "Outlook", "load_bundle_predictors", "STRATEGIES", "get_strategy", "StopReason",
           "STOP_REASONS", "sample_seed", "STEP_SCORERS", "make_step_scorer"]
