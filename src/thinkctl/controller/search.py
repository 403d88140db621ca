"""Process-guided strategies: ``beam@N``, ``dvts@N`` and ``prune@N`` through the same interface as the others.

Both run :func:`thinkctl.process.search.step_search` with the controller's model, tokenizer, task, token cap and
seed, guided by the controller's step scorer (``AdaptiveController(step_scorer=...)``; ``thinkctl evaluate --scorer``):
the exact checker of the built-in tasks (``check``), the bundle's outlook probe read at each step
(``process-probe``), or any :class:`~thinkctl.process.StepScorer`. Token accounting is the controller's: every
generated token of every candidate, forced tokens and answers; thinking tokens are those before the end of thinking.

With the exact checker a solution whose every step is verified is final (the search stops there:
``SearchConfig.stop_score = 1.0``); with a learned scorer the search runs until N solutions are finished.

``prune@N`` samples N independent solutions step by step and abandons a sample once its score falls below the
controller's certified pruning threshold (``AdaptiveController(prune_rule=...)``, written by ``thinkctl
calibrate-pruning``; :mod:`thinkctl.process.pruning`); the survivors vote, weighted by their scores.
"""

from __future__ import annotations

from typing import Callable, Sequence

from thinkctl.controller.core import AdaptiveController
from thinkctl.controller.result import ControllerResult
from thinkctl.controller.strategies import STRATEGIES, Strategy
from thinkctl.generation import chat_prefix, reasoning_format
from thinkctl.process import CallableStepScorer, ExactStepChecker, StepScorer
from thinkctl.models import check_stamp
from thinkctl.process.probe import ProcessProbeScorer
from thinkctl.process.pruning import PruneRule
from thinkctl.process.search import SearchConfig, step_search
from thinkctl.registry import Registry
from thinkctl.tasks.base import Problem

__all__ = ["STEP_SCORERS", "make_step_scorer"]

#: Step scorers by name: ``factory(controller) -> StepScorer``.
STEP_SCORERS: Registry[Callable[[AdaptiveController], StepScorer]] = Registry("step scorer")


@STEP_SCORERS.register("check")
def _check(controller: AdaptiveController) -> StepScorer:
    return ExactStepChecker()


@STEP_SCORERS.register("process-probe")
def _process_probe(controller: AdaptiveController) -> StepScorer:
    predictor = controller.process
    if predictor is None:
        raise ValueError("the process-probe scorer reads the bundle's outlook probe; load the controller from a "
                         "bundle trained by `thinkctl train` (it trains the outlook probe) and calibrated by "
                         "`thinkctl calibrate`")
    return ProcessProbeScorer(controller.model, controller.tokenizer, predictor)


def make_step_scorer(spec: str | StepScorer | Callable[[str, list[str]], Sequence[float]],
                     controller: AdaptiveController) -> StepScorer:
    """A step scorer from a name in :data:`STEP_SCORERS`, a StepScorer, or a callable ``fn(prompt, steps)``."""
    if isinstance(spec, str):
        return STEP_SCORERS.get(spec)(controller)
    if isinstance(spec, StepScorer):
        return spec
    if callable(spec):
        return CallableStepScorer(spec)
    raise ValueError(f"step scorer {spec!r} is neither a name ({STEP_SCORERS.names()}), a StepScorer nor a callable")


def _search_strategy(method: str) -> Callable[[int | None, str], Strategy]:
    def factory(param: int | None, name: str) -> Strategy:
        if param is None:
            raise ValueError(f"strategy {name!r} needs a number of candidates, e.g. {name}@8")

        def run(controller: AdaptiveController, prompts: Sequence[str]) -> list[ControllerResult]:
            if controller.task is None:
                raise ValueError(f"strategy {name!r} extracts answers with the controller's task; pass task=")
            scorer = make_step_scorer(controller.step_scorer or "check", controller)
            if method == "prune":
                rule = _prune_rule(controller, scorer, name)
                cfg = SearchConfig(n=param, beam_width=1, max_thinking_tokens=controller.config.token_cap,
                                   max_answer_tokens=controller.config.max_answer_tokens,
                                   seed=controller.config.seed, aggregation=rule.aggregation,
                                   prune_below=rule.threshold)
            else:
                cfg = SearchConfig(n=param, max_thinking_tokens=controller.config.token_cap,
                                   max_answer_tokens=controller.config.max_answer_tokens,
                                   seed=controller.config.seed,
                                   stop_score=1.0 if isinstance(scorer, ExactStepChecker) else None)
            tok = controller.tokenizer
            problems = [Problem(id=f"prompt-{i}", prompt=p, answer="") for i, p in enumerate(prompts)]
            found = step_search(controller.model, tok, reasoning_format(tok), controller.task, problems,
                                [chat_prefix(tok, p) for p in prompts], scorer, cfg, method=method)
            return [ControllerResult(answer=r.answer, text=r.text, confidence=r.confidence, tokens=r.tokens,
                                     samples=r.samples, strategy=name,
                                     trace=[{**r.trace[0], "scorer": scorer.name}, *r.trace[1:]],
                                     thinking_tokens=r.thinking_tokens) for r in found]

        return run

    return factory


def _prune_rule(controller: AdaptiveController, scorer: StepScorer, name: str) -> PruneRule:
    """The controller's pruning rule, checked against the scorer and the model it is used with."""
    rule = controller.prune_rule
    if rule is None:
        raise ValueError(f"strategy {name!r} prunes at a certified threshold: certify one with `thinkctl "
                         "calibrate-pruning` and pass it (AdaptiveController(prune_rule=PruneRule.load(PATH)); "
                         "`thinkctl evaluate --prune-rule PATH`)")
    if not isinstance(rule, PruneRule):
        raise ValueError(f"prune_rule must be a PruneRule, got {type(rule).__name__}")
    if rule.scorer != scorer.name:
        raise ValueError(f"the pruning rule was certified for step scorer {rule.scorer!r}, but the controller's step "
                         f"scorer is {scorer.name!r}: its threshold means nothing for another scorer; certify one "
                         f"for {scorer.name!r} or use --scorer {rule.scorer}")
    if rule.model:
        check_stamp(rule.model, controller.model, "the pruning rule")
    return rule


STRATEGIES.add("beam", _search_strategy("beam"))
STRATEGIES.add("dvts", _search_strategy("dvts"))
STRATEGIES.add("prune", _search_strategy("prune"))
