"""The adaptive controller: route by difficulty, think with probed confidence, or sample in waves and vote -- batched.

Every strategy runs as a few batched ``model.generate`` calls steered by :mod:`thinkctl.stopping` hooks:

* the prompts of a call are prefilled once, left-padded, into one KV cache (its last position cropped off so that
  generation continues from it); the difficulty predictor reads the prompt's last hidden state from that pass;
* serial thinking is one greedy generation per row under :class:`~thinkctl.stopping.BudgetForcing` (the token cap),
  with :class:`~thinkctl.stopping.ProbeStopping` reading the calibrated confidence at the budget schedule
  ``B0, 2 B0, 4 B0, ...`` from a :class:`~thinkctl.stopping.HiddenStateTap` -- budget doubling inside one
  generation, so no token is ever computed twice and a probe costs no token;
* parallel samples branch off the shared prefill in waves (the cache rows repeated), until the vote is settled.

The routes live in their own modules, each built on the one before: :mod:`~thinkctl.controller.engine` (prefill,
row caches, one batched generation, token accounting), :mod:`~thinkctl.controller.serial` and
:mod:`~thinkctl.controller.parallel`; this module routes between them and holds the public entry points.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import torch

from thinkctl.controller.bundle import Bundle
from thinkctl.controller.config import ControllerConfig
from thinkctl.controller.doubling import Doubling
from thinkctl.controller.engine import Clock, Prefill
from thinkctl.controller.parallel import DeepConfOnline, ParallelRoute, Scorer, StopRuleLike
from thinkctl.controller.predictors import HiddenStatePredictor, Outlook, model_hidden_size, model_num_layers
from thinkctl.controller.result import ControllerResult
from thinkctl.controller.routing import Route, RoutingTable
from thinkctl.generation import ReasoningFormat, check_context, reasoning_format
from thinkctl.stopping import think_markers
from thinkctl.stopping.rules import StopRule
from thinkctl.voting import MajorityStabilityStopping

__all__ = ["AdaptiveController", "ControllerResult", "DeepConfOnline", "Scorer", "StopRuleLike"]

logger = logging.getLogger(__name__)


class AdaptiveController(ParallelRoute):
    """Decide per query how much a reasoning LM thinks, while it generates; batched over prompts.

    Routing: the difficulty predictor's calibrated P(one sample solves the query) picks a route from the
    :class:`~thinkctl.controller.routing.RoutingTable` fitted on traces (``thinkctl calibrate`` writes it into the
    bundle): ``"easy"`` (one short answer under ``config.easy_cap``), ``"serial"`` (think to the token cap with
    confidence probes) or ``"parallel"`` (samples in waves, stopped by the vote, at most the route's samples).
    Without a routing table the thresholds ``config.easy_above`` / ``config.hard_below`` apply; without a difficulty
    predictor every prompt goes serial.

    Serial: greedy thinking; the stop score is read at the thinking budgets its threshold was certified at (the
    bundle's checkpoint grid, e.g. every 8 thinking tokens; ``config.check_points`` or the doubling schedule
    ``B0, 2*B0, ...`` of ``config.budgets`` when the bundle records none) inside the same generation, and the
    answer is forced once it reaches the Learn-then-Test threshold, at the cap, or at the deadline. The stop score
    is the calibrated confidence, or with an ``outlook`` ``1 - P(final right)`` or ``max(confidence, 1 - kappa *
    P(final right))``: high when the answer is already there or when thinking on cannot help (a final answer that
    will be wrong anyway), as the bundle certified it.

    Parallel: waves of ``config.wave_size`` samples per prompt branch off the shared prefill until ``stop_rule``
    (default :class:`~thinkctl.voting.MajorityStabilityStopping`) says the vote is settled or the sample budget
    is spent; the answer is the (optionally confidence-weighted, ``config.weighted_vote``) majority. The ``scorer``
    picks the best sample in ``best_of@N`` (:meth:`run_parallel` with ``scorer=``); the adaptive route votes.

    Parameters
    ----------
    model, tokenizer
        A transformers causal LM and its tokenizer (with a chat template).
    confidence : HiddenStatePredictor, optional
        Calibrated P(the answer forced now is right), with the stop threshold of the stop score.
    outlook : Outlook, optional
        Calibrated P(the run's own final answer will be right), read at the confidence predictor's layer, with the
        stop score that uses it (see :func:`thinkctl.calibration.risk_control.stop_score`).
    difficulty : HiddenStatePredictor, optional
        Calibrated P(one sample solves the query), read at the prompt's last token.
    config : ControllerConfig
    task : object with ``extract_answer(text)``, optional
        Extracts answers for voting and for ``ControllerResult.answer``.
    stop_rule : vote stopping rule, optional
        Of the parallel route; default ``MajorityStabilityStopping()``.
    routing : RoutingTable, optional
        Difficulty -> route; default: the thresholds of ``config``.
    scorer : callable, optional
        An outcome or process reward model ``scorer(prompt, text) -> float`` (full or partial solution) for best-of-N;
        default: the calibrated confidence predictor at each sample's end of thinking.
    step_scorer : str, StepScorer or callable, optional
        What guides ``beam@N`` and ``dvts@N`` (:mod:`thinkctl.controller.search`): ``"check"`` (the exact checker
        of the built-in tasks, the default), ``"process-probe"``, a :class:`~thinkctl.process.StepScorer` or a
        callable ``fn(prompt, steps) -> scores``.
    process : HiddenStatePredictor, optional
        The calibrated outlook probe read per step by the ``process-probe`` step scorer (a bundle's
        :attr:`~thinkctl.controller.bundle.Bundle.process`).
    doubling : Doubling, optional
        Budget doubling of the serial route (:mod:`thinkctl.controller.doubling`): a serial answer whose model ended
        its thinking itself with calibrated confidence below ``doubling.below`` thinks again after "Wait"; a bundle's
        routing table carries the one its calibration problems supported, if any.
    prune_rule : PruneRule, optional
        The certified threshold at which ``prune@N`` abandons a sample (:mod:`thinkctl.process.pruning`;
        ``thinkctl calibrate-pruning`` writes it), for the step scorer it was certified with.

    Examples
    --------
    >>> controller = AdaptiveController.load("bundle/", model, tokenizer)  # doctest: +SKIP
    >>> r = controller.generate(["What is 2 + 3?"])[0]  # doctest: +SKIP
    >>> r.answer, r.confidence, r.tokens, r.strategy  # doctest: +SKIP
    """

    def __init__(self, model: Any, tokenizer: Any, *, confidence: HiddenStatePredictor | None = None,
                 difficulty: HiddenStatePredictor | None = None, config: ControllerConfig = ControllerConfig(),
                 task: Any = None, stop_rule: StopRuleLike | None = None,
                 routing: RoutingTable | None = None, scorer: Scorer | None = None,
                 outlook: Outlook | None = None, step_scorer: Any = None,
                 process: HiddenStatePredictor | None = None, prune_rule: Any = None,
                 doubling: Doubling | None = None) -> None:
        if not isinstance(config, ControllerConfig):
            raise ValueError(f"config must be a ControllerConfig, got {type(config).__name__}")
        if routing is not None and not isinstance(routing, RoutingTable):
            raise ValueError(f"routing must be a RoutingTable, got {type(routing).__name__}")
        self.model = model
        self.tokenizer = tokenizer
        self.confidence = confidence
        self.difficulty = difficulty
        self.outlook = outlook
        self.config = config
        self.task = task
        self.routing = routing
        self.scorer = scorer
        self.step_scorer = step_scorer
        self.process = process
        self.prune_rule = prune_rule
        if doubling is not None and not isinstance(doubling, Doubling):
            raise ValueError(f"doubling must be a Doubling, got {type(doubling).__name__}")
        self.doubling = doubling
        self.stop_rule = stop_rule if stop_rule is not None else MajorityStabilityStopping()
        self.fmt: ReasoningFormat = reasoning_format(tokenizer)
        self.think_start, self.think_end = think_markers(tokenizer)
        self.n_layers = model_num_layers(model)
        if outlook is not None and not isinstance(outlook, Outlook):
            raise ValueError(f"outlook must be an Outlook (predictor and kappa), got {type(outlook).__name__}")
        for pred in (confidence, difficulty, outlook.predictor if outlook is not None else None):
            if pred is not None:
                pred.hidden_index(self.n_layers)  # raises on a layer the model does not have
        if outlook is not None and (confidence is None or outlook.predictor.hidden_index(self.n_layers)
                                    != confidence.hidden_index(self.n_layers)):
            raise ValueError("an outlook predictor needs a confidence predictor at the same layer (the stop score "
                             "reads both from one hidden state)")
        for name, cap in (("token_cap", config.token_cap), ("easy_cap", config.easy_cap)):
            if self._thinking_cap(cap) < 1:
                raise ValueError(f"{name}={cap} leaves no room for thinking after the forced answer "
                                 f"({len(self.fmt.force_answer_ids)} marker tokens + max_answer_tokens="
                                 f"{config.max_answer_tokens} + EOS); raise {name}")
        check_context(model, 0, config.token_cap, cap_name="token_cap")  # a cap beyond the context: refused now
        self.hidden_size = model_hidden_size(model)
        self._static_ok = True
        self._warned_schedule = False

    @classmethod
    def load(cls, bundle_dir: Any, model: Any, tokenizer: Any, config: ControllerConfig | None = None,
             **kwargs: Any) -> "AdaptiveController":
        """A controller with the predictors, calibrators, stop threshold and routing table of a bundle folder
        (see :class:`~thinkctl.controller.bundle.Bundle`); ``outlook=`` or ``routing=`` override the bundle's.

        Raises
        ------
        ValueError
            When the bundle's probes were trained on another model (hidden size mismatch), or a calibration part was
            made for another probe than the one in the folder (retrained without recalibrating).
        """
        bundle = Bundle.load(bundle_dir, model)
        kwargs.setdefault("outlook", bundle.outlook)
        kwargs.setdefault("process", bundle.process)
        if bundle.routing is not None:
            kwargs.setdefault("routing", bundle.routing)
            kwargs.setdefault("doubling", bundle.routing.doubling)
        return cls(model, tokenizer, confidence=bundle.confidence, difficulty=bundle.difficulty,
                   config=config if config is not None else ControllerConfig(), **kwargs)

    # -- public -------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, prompts: Sequence[str]) -> list[ControllerResult]:
        """Answer each prompt adaptively; one result per prompt, in order.

        ``config.deadline_s`` bounds the thinking of the whole call: a running generation is stopped at the deadline
        and its answer forced; prompts reached after it get an answer forced without thinking. The forced answers
        themselves (marker + at most ``max_answer_tokens``) still run after the deadline, so the wall time can exceed
        it by that much.
        """
        clock = Clock(self.config.deadline_s)
        return self._chunked(prompts, lambda pre, c: self._adaptive(pre, clock, c))

    @torch.no_grad()
    def run_serial(self, prompts: Sequence[str], *, budgets: Sequence[int] | None = None, use_confidence: bool = True,
                   cap: int | None = None, name: str = "serial", stop_rules: Callable[[], list[StopRule]] | None = None
                   ) -> list[ControllerResult]:
        """The serial strategy alone (no routing): e.g. ``budgets=[B], use_confidence=False`` is fixed budget B.

        ``stop_rules`` makes extra :class:`~thinkctl.stopping.rules.StopRule` s per generation (e.g. Dynasor's
        answer consistency); a row stops at whichever fires first.
        """
        clock = Clock(self.config.deadline_s)

        def run(pre: Prefill, chunk: int) -> list[ControllerResult]:
            rows = list(range(len(pre.prompts)))
            traces: list[list[dict[str, Any]]] = [[] for _ in rows]
            return self._serial(pre, rows, clock, budgets=budgets, use_confidence=use_confidence,
                                cap=cap or self.config.token_cap, name=name, traces=traces, extra_rules=stop_rules,
                                double=use_confidence and budgets is None and stop_rules is None)

        return self._chunked(prompts, run, read=False)

    @torch.no_grad()
    def run_parallel(self, prompts: Sequence[str], *, stop_rule: StopRuleLike | None = None,
                     max_samples: int | None = None, name: str = "parallel", scorer: Scorer | str | None = None,
                     weighted: bool | None = None, deepconf: "DeepConfOnline | None" = None,
                     wave_size: int | None = None) -> list[ControllerResult]:
        """The parallel strategy alone.

        ``stop_rule=None`` uses the controller's rule, ``False`` draws all ``max_samples`` (self-consistency).
        ``scorer`` picks the best-scored sample instead of voting (best-of-N): a callable ``(prompt, text) ->
        float`` or ``"confidence"`` (the calibrated confidence predictor at each sample's end of thinking).
        ``deepconf`` runs DeepConf online (:class:`DeepConfOnline`): warm-up samples set a per-prompt group-confidence
        threshold, later samples below it are ended early and do not vote, and sampling stops at consensus.
        """
        clock = Clock(self.config.deadline_s)
        rule = (deepconf if deepconf is not None else self.stop_rule) if stop_rule is None else (stop_rule or None)
        n = self.config.max_samples if max_samples is None else int(max_samples)
        if n < 1:
            raise ValueError(f"max_samples={n} must be >= 1")
        if scorer == "confidence" and self.confidence is None:
            raise ValueError("scorer='confidence' needs a confidence predictor (load the controller from a bundle)")

        def run(pre: Prefill, chunk: int) -> list[ControllerResult]:
            rows = list(range(len(pre.prompts)))
            return self._parallel(pre, rows, clock, rule=rule, budgets=[n] * len(rows), name=name,
                                  traces=[[] for _ in rows], chunk=chunk, scorer=scorer, weighted=weighted,
                                  deepconf=deepconf, wave_size=wave_size)

        return self._chunked(prompts, run, read=False)

    # -- batching -------------------------------------------------------------------------------------------------

    def _chunked(self, prompts: Sequence[str], run: Callable[[Prefill, int], list[ControllerResult]], *,
                 read: bool = True) -> list[ControllerResult]:
        if isinstance(prompts, str):
            raise ValueError("prompts must be a list of strings; wrap a single prompt as [prompt]")
        prompts = list(prompts)
        for p in prompts:
            if not isinstance(p, str):
                raise ValueError(f"prompts must be strings, got {type(p).__name__}")
        out: list[ControllerResult] = []
        size = self.config.prompt_batch
        for c, start in enumerate(range(0, len(prompts), size)):
            pre = self._prefill(prompts[start:start + size], read=read and self.difficulty is not None)
            out.extend(run(pre, c))
        return out

    # -- routing --------------------------------------------------------------------------------------------------

    def _route(self, p_solve: float | None) -> Route:
        cfg = self.config
        if p_solve is None:
            want = Route("serial")
        elif self.routing is not None:
            want = self.routing.route(p_solve)
        elif p_solve >= cfg.easy_above:
            want = Route("easy")
        elif p_solve < cfg.hard_below:
            want = Route("parallel", cfg.max_samples)
        else:
            want = Route("serial")
        if want.kind in cfg.strategies:
            return want
        return Route("serial") if "serial" in cfg.strategies else Route(cfg.strategies[0], cfg.max_samples)

    def _adaptive(self, pre: Prefill, clock: Clock, chunk: int) -> list[ControllerResult]:
        n = len(pre.prompts)
        traces: list[list[dict[str, Any]]] = [[] for _ in range(n)]
        p_solve: list[float | None] = [None] * n
        if self.difficulty is not None:
            h = pre.hidden[self.difficulty.hidden_index(self.n_layers)]
            p_solve = [float(x) for x in self.difficulty(h)]
        routes = [self._route(p) for p in p_solve]
        for i, (p, r) in enumerate(zip(p_solve, routes)):
            traces[i].append({"event": "route", "p_solve": p, "route": r.kind, "samples": r.samples,
                              "table": self.routing is not None})
        results: list[ControllerResult | None] = [None] * n
        for kind in ("easy", "serial"):
            rows = [i for i, r in enumerate(routes) if r.kind == kind]
            if rows:
                cap = self.config.easy_cap if kind == "easy" else self.config.token_cap
                res = self._serial(pre, rows, clock, budgets=None, use_confidence=True, cap=cap, name=kind,
                                   traces=[traces[i] for i in rows], double=kind == "serial")
                for i, x in zip(rows, res):
                    results[i] = x
        self._escalate(pre, clock, chunk, results, [i for i, r in enumerate(routes) if r.kind == "serial"])
        rows = [i for i, r in enumerate(routes) if r.kind == "parallel"]
        if rows:
            res = self._parallel(pre, rows, clock, rule=self.stop_rule,
                                 budgets=[routes[i].samples or self.config.max_samples for i in rows],
                                 name="parallel", traces=[traces[i] for i in rows], chunk=chunk)
            for i, x in zip(rows, res):
                results[i] = x
        done = [r for r in results if r is not None]
        assert len(done) == n
        for res_i, p in zip(done, p_solve):
            res_i.trace[0]["p_solve"] = p
        return done

    def _escalate(self, pre: Prefill, clock: Clock, chunk: int, results: list[ControllerResult | None],
                  rows: list[int]) -> None:
        """Send the serial answers of ``rows`` whose calibrated confidence is below the routing table's escalation
        threshold on to a vote (the serial answer voting first); replaces their results in place."""
        esc = self.routing.escalation if self.routing is not None else None
        if esc is None or "parallel" not in self.config.strategies or clock.expired():
            return
        serial = {i: r for i in rows if (r := results[i]) is not None and esc.escalates(r.confidence)}
        if not serial:
            return
        for s in serial.values():
            s.trace.append({"event": "escalate", "confidence": s.confidence, "below": esc.below,
                            "samples": esc.samples})
        low = list(serial)
        res = self._parallel(pre, low, clock, rule=self.stop_rule, budgets=[1 + esc.samples] * len(low),
                             name="serial+parallel", traces=[s.trace for s in serial.values()], chunk=chunk,
                             seeds=list(serial.values()))
        for i, s, r in zip(low, serial.values(), res):
            r.tokens += s.tokens - (len(pre.prefixes[i]) - 1)  # the prompt is counted once
            r.thinking_tokens += s.thinking_tokens
            results[i] = r
