"""Test-time strategies behind one interface: ``strategy(controller, prompts) -> list[ControllerResult]``.

Names are ``base`` or ``base@param``: ``fixed@B`` (think greedily up to B tokens, then force the answer; s1's budget
forcing without early stop), ``sc@N`` (self-consistency: N samples, majority vote), ``best_of@N`` (N samples, the
best by the controller's scorer -- a reward model ``scorer(prompt, text)``, or by default the calibrated confidence
probe at each sample's end of thinking), ``esc`` / ``asc`` (samples with the ESC / ASC stopping rules, up to
``config.max_samples``, or ``esc@N`` / ``asc@N``), ``dynasor`` (greedy thinking to the cap, stopped when the answers
forced every 32 tokens agree 3 times in a row -- Dynasor's probe-in-the-middle, Fu et al. 2024, arXiv:2412.20993;
the probes' tokens count), ``serial`` (the controller's serial route alone: greedy thinking to the token cap, stopped
by the bundle's certified stop rule), ``deepconf`` / ``deepconf@N`` (DeepConf online: warm-up samples set a
group-confidence threshold, later samples below it end early and do not vote, sampling stops at 95 % consensus),
``adaptive`` (the controller's own routing), and the process-guided searches ``beam@N`` and ``dvts@N``
(:mod:`thinkctl.controller.search`, guided by the controller's step scorer). All share the controller's model,
tokenizer, task, token cap and deadline, and count tokens the same way, so that they compare at matched compute.

Examples
--------
>>> run = get_strategy("fixed@256")  # doctest: +SKIP
>>> results = run(controller, prompts)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from thinkctl.controller.core import AdaptiveController
from thinkctl.controller.parallel import DeepConfOnline
from thinkctl.controller.result import ControllerResult
from thinkctl.voting import BetaStopping, WindowUnanimityStopping
from thinkctl.registry import Registry, split_name

__all__ = ["STRATEGIES", "get_strategy", "Strategy"]

#: A ready strategy: ``run(controller, prompts) -> list[ControllerResult]``.
Strategy = Callable[[AdaptiveController, Sequence[str]], list[ControllerResult]]

#: ``base name -> factory(param: int | None, name: str) -> Strategy``; ``param`` is the part after ``@``.
STRATEGIES: Registry[Callable[[int | None, str], Strategy]] = Registry("strategy")


def _need(param: int | None, name: str, what: str) -> int:
    if param is None:
        raise ValueError(f"strategy {name!r} needs a {what}, e.g. {name}@256")
    return param


@STRATEGIES.register("fixed")
def _fixed(param: int | None, name: str) -> Strategy:
    budget = _need(param, name, "thinking budget")

    def run(controller: AdaptiveController, prompts: Sequence[str]) -> list[ControllerResult]:
        return controller.run_serial(prompts, budgets=[budget], use_confidence=False, name=name)

    return run


@STRATEGIES.register("serial")
def _serial(param: int | None, name: str) -> Strategy:
    if param is not None:
        raise ValueError(f"strategy {name!r} takes no parameter; the token cap is ControllerConfig.token_cap")

    def run(controller: AdaptiveController, prompts: Sequence[str]) -> list[ControllerResult]:
        return controller.run_serial(prompts, use_confidence=True, name=name)

    return run


@STRATEGIES.register("sc")
def _sc(param: int | None, name: str) -> Strategy:
    n = _need(param, name, "number of samples")

    def run(controller: AdaptiveController, prompts: Sequence[str]) -> list[ControllerResult]:
        return controller.run_parallel(prompts, stop_rule=False, max_samples=n, name=name)

    return run


@STRATEGIES.register("best_of")
def _best_of(param: int | None, name: str) -> Strategy:
    n = _need(param, name, "number of samples")

    def run(controller: AdaptiveController, prompts: Sequence[str]) -> list[ControllerResult]:
        scorer = controller.scorer if controller.scorer is not None else "confidence"
        return controller.run_parallel(prompts, stop_rule=False, max_samples=n, name=name, scorer=scorer)

    return run


@STRATEGIES.register("dynasor")
def _dynasor(param: int | None, name: str) -> Strategy:
    from thinkctl.stopping import AnswerConsistencyStopping, ForcedAnswerProber

    every = 32 if param is None else param

    def run(controller: AdaptiveController, prompts: Sequence[str]) -> list[ControllerResult]:
        task = controller.task

        def extract(text: str) -> str | None:
            return task.extract_answer("Final Answer: " + text) if task is not None else (text.strip() or None)

        def rules() -> list:
            prober = ForcedAnswerProber(controller.model, controller.tokenizer, think_end=controller.think_end,
                                        max_answer_tokens=controller.config.max_answer_tokens, extract=extract)
            return [AnswerConsistencyStopping(prober, controller.tokenizer, every=every, k=3,
                                              think_start=controller.think_start, think_end=controller.think_end)]

        return controller.run_serial(prompts, use_confidence=False, name=name, stop_rules=rules)

    return run


@STRATEGIES.register("deepconf")
def _deepconf(param: int | None, name: str) -> Strategy:
    def run(controller: AdaptiveController, prompts: Sequence[str]) -> list[ControllerResult]:
        return controller.run_parallel(prompts, max_samples=param, name=name, deepconf=DeepConfOnline())

    return run


def _rule_strategy(rule: Any) -> Callable[[int | None, str], Strategy]:
    def factory(param: int | None, name: str) -> Strategy:
        def run(controller: AdaptiveController, prompts: Sequence[str]) -> list[ControllerResult]:
            return controller.run_parallel(prompts, stop_rule=rule, max_samples=param, name=name)

        return run

    return factory


STRATEGIES.add("esc", _rule_strategy(WindowUnanimityStopping()))
STRATEGIES.add("asc", _rule_strategy(BetaStopping()))


@STRATEGIES.register("adaptive")
def _adaptive(param: int | None, name: str) -> Strategy:
    if param is not None:
        raise ValueError(f"strategy {name!r} takes no parameter; use 'adaptive' and set budgets in ControllerConfig")

    def run(controller: AdaptiveController, prompts: Sequence[str]) -> list[ControllerResult]:
        return controller.generate(prompts)

    return run


def get_strategy(name: str) -> Strategy:
    """The strategy called ``name`` (``"fixed@256"``, ``"serial"``, ``"sc@8"``, ``"best_of@8"``, ``"esc"``,
    ``"asc@20"``, ``"dynasor"``, ``"deepconf"``, ``"adaptive"``, ``"beam@8"``, ``"dvts@8"``)."""
    base, param = split_name(name, "strategy")
    factory = STRATEGIES.get(base)
    return factory(param, name)
