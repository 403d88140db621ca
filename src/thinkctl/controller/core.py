"""The adaptive controller: route by difficulty, think with probed confidence, or sample in waves and vote -- batched.

Every strategy runs as a few batched ``model.generate`` calls steered by :mod:`thinkctl.stopping` hooks:

* the prompts of a call are prefilled once, left-padded, into one KV cache (its last position cropped off so that
  generation continues from it); the difficulty predictor reads the prompt's last hidden state from that pass;
* serial thinking is one greedy generation per row under :class:`~thinkctl.stopping.BudgetForcing` (the token cap),
  with :class:`~thinkctl.stopping.ProbeStopping` reading the calibrated confidence at the budget schedule
  ``B0, 2 B0, 4 B0, ...`` from a :class:`~thinkctl.stopping.HiddenStateTap` -- budget doubling inside one
  generation, so no token is ever computed twice and a probe costs no token;
* parallel samples branch off the shared prefill in waves (the cache rows repeated), until the vote is settled.

Token accounting (``ControllerResult.tokens``) follows the evaluation contract: prompt tokens once per prefill plus
every token generated. Concretely: the prompt once (its last token is fed again by each row that continues from the
cropped cache: +1 per row), every generated token including the forced ``</think>\\nFinal Answer:`` and answer
tokens, up to and including the row's EOS (the padding a finished row carries in its batch is not counted).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from transformers import LogitsProcessorList, StoppingCriteriaList

from thinkctl.controller.config import ControllerConfig
from thinkctl.calibration.risk_control import stop_score
from thinkctl.controller.predictors import (HiddenStatePredictor, Outlook, load_bundle_outlook,
                                            load_bundle_predictors, model_hidden_size, model_num_layers)
from thinkctl.controller.routing import Route, RoutingTable
from thinkctl.voting import MajorityStabilityStopping, VoteTally
from thinkctl.generation import NO_AUTO_COMPILE, ReasoningFormat, chat_prefix, reasoning_format
from thinkctl.stopping import BudgetForcing, DeadlineStopping, HiddenStateTap, ProbeStopping, think_markers
from thinkctl.stopping.rules import StopRule
from thinkctl.stopping.tap import FINAL_NORM
from thinkctl.tasks.base import ANSWER_PREFIX

__all__ = ["AdaptiveController", "ControllerResult", "DeepConfOnline", "Scorer", "StopRuleLike"]

logger = logging.getLogger(__name__)

#: A vote stopping rule: ``should_stop(tally, budget) -> bool`` (see :mod:`thinkctl.voting`).
StopRuleLike = Any
#: A scorer (ORM / PRM): ``scorer(prompt, text) -> float``, higher is better; scores a full or partial solution.
Scorer = Callable[[str, str], float]


@dataclass
class ControllerResult:
    """What the controller returns for one prompt.

    Attributes
    ----------
    answer : str
        The final answer: the task's extracted answer when a task is given and it parses, otherwise the first line
        after ``Final Answer:``. Always a string (a forced stop always writes an answer).
    text : str
        The generated text that produced the answer (thinking, answer marker, answer).
    confidence : float
        In [0, 1]. Serial routes: the calibrated confidence predictor at the last thinking token (where thinking
        stopped or ended; 0.0 without a confidence predictor). Parallel: the
        winner's share of the (possibly confidence-weighted) votes -- an agreement frequency.
    tokens : int
        Tokens the model processed for this prompt (see the module docstring).
    samples : int
        Generations drawn (1 for serial routes).
    strategy : str
        The route or baseline that produced the answer (``"serial"``, ``"easy"``, ``"parallel"``, ``"fixed@256"``...).
    trace : list of dict
        Decision records in order: ``{"event": "route" | "probe" | "stop" | "sample_wave" | "vote" | "answer", ...}``.
    thinking_tokens : int
        The part of ``tokens`` spent thinking, over every sample: generated tokens before the end of thinking
        (tokens forced into the thinking, such as "Wait", included) plus the tokens of forced-answer probes.
    """

    answer: str
    text: str
    confidence: float
    tokens: int
    samples: int
    strategy: str
    trace: list[dict[str, Any]] = field(default_factory=list)
    thinking_tokens: int = 0


@dataclass(frozen=True)
class DeepConfOnline:
    """DeepConf online (Fu et al. 2025, "Deep Think with Confidence", arXiv:2508.15260) as a parallel policy.

    ``warmup`` samples per prompt run to the end; the stop threshold is the ``100 - keep_percent`` percentile of
    their lowest group confidence (DeepConf-high keeps the top 90 %, DeepConf-low the top 10 %); later samples whose
    group confidence falls below it are ended at once and cast no vote (warm-up samples below it are filtered out
    too), and sampling stops once the leader holds ``consensus`` of the votes (the paper's tau = 0.95). The paper's
    warm-up is 16 traces of a 512 budget; ``warmup=4`` keeps the same 1:32 ratio's spirit at the budgets of a CPU.
    """

    warmup: int = 4
    keep_percent: float = 90.0
    consensus: float = 0.95

    def __post_init__(self) -> None:
        if not isinstance(self.warmup, int) or self.warmup < 1:
            raise ValueError(f"warmup={self.warmup!r} must be a positive int")
        if not 0 < self.keep_percent <= 100:
            raise ValueError(f"keep_percent={self.keep_percent!r} must be in (0, 100]")
        if not 0.5 < self.consensus <= 1:
            raise ValueError(f"consensus={self.consensus!r} must be in (0.5, 1]")

    def threshold(self, lowest: Sequence[float]) -> float:
        """The group-confidence threshold from the warm-up traces' lowest group confidences (finite ones; a trace
        shorter than one window has none): their ``100 - keep_percent`` percentile, ``-inf`` without any."""
        finite = [x for x in lowest if math.isfinite(x)]
        return float(np.percentile(finite, 100 - self.keep_percent)) if finite else -math.inf

    def should_stop(self, tally: VoteTally, budget: int) -> bool:
        """Stop once the leading answer holds ``consensus`` of the votes cast."""
        ranked = tally.ranked()
        total = sum(v for _, v in ranked)
        return bool(ranked) and total > 0 and ranked[0][1] / total >= self.consensus


@dataclass
class _Prefill:
    """Left-padded prompts and their shared KV cache over all but the last position."""

    prompts: list[str]
    prefixes: list[list[int]]
    ids: torch.Tensor  # (P, W)
    mask: torch.Tensor  # (P, W)
    cache: Any  # W - 1 positions
    hidden: dict[int, torch.Tensor]  # output_hidden_states index -> (P, hidden) at the last prompt token


@dataclass
class _Rows:
    """One batched generation: per row, what it generated and why its thinking ended."""

    gen: list[list[int]]
    thinking: list[int]
    reasons: list[str]
    probes: list[list[tuple[int, float]]]
    end_confidence: list[float]
    low_confidence: list[bool]
    extra_tokens: list[int]
    lowest_group_confidence: list[float]


def _cache_kwarg() -> str:
    """The keyword under which this transformers passes a KV cache."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in getattr(CausalLMOutputWithPast, "__dataclass_fields__", {}) else "past_key_values"


_CACHE_KW = _cache_kwarg()


def _crop_to(cache: Any, length: int) -> None:
    extra = cache.get_seq_length() - length
    if extra < 0:
        raise RuntimeError(f"cache holds {cache.get_seq_length()} positions, fewer than {length}")
    if extra:
        cache.crop(-extra)


class _Clock:
    def __init__(self, deadline_s: float | None) -> None:
        self.start = time.monotonic()
        self.deadline_s = deadline_s

    def remaining(self) -> float | None:
        if self.deadline_s is None:
            return None
        return self.deadline_s - (time.monotonic() - self.start)

    def expired(self) -> bool:
        r = self.remaining()
        return r is not None and r <= 0


class _ThinkingEndState(StopRule):
    """Never fires: keeps each row's tapped state at its newest thinking token (the end of its thinking, once it
    closes), so that a confidence can be read where no probe ran, at no token cost."""

    def __init__(self, tap: HiddenStateTap, layer: int | str) -> None:
        super().__init__()
        self.tap = tap
        self.layer = layer
        self.state: torch.Tensor | None = None

    def _begin(self, input_ids: torch.Tensor) -> None:
        self.state = None

    def _decide(self, input_ids: torch.Tensor, scores: torch.Tensor | None, thinking: Sequence[bool],
                n_tokens: Sequence[int]) -> list[bool]:
        h = self.tap.get(self.layer)
        if self.state is None:
            self.state = h.detach().clone()
        else:
            rows = torch.tensor(thinking, dtype=torch.bool, device=h.device)
            self.state[rows] = h[rows]
        return [False] * input_ids.shape[0]


class AdaptiveController:
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
                 outlook: Outlook | None = None) -> None:
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
        self.hidden_size = model_hidden_size(model)
        self._static_ok = True
        self._warned_schedule = False

    @classmethod
    def load(cls, bundle_dir: Any, model: Any, tokenizer: Any, config: ControllerConfig | None = None,
             **kwargs: Any) -> "AdaptiveController":
        """A controller with the predictors, calibrators, stop threshold and routing table of a bundle folder.

        Raises ValueError when the bundle's probes were trained on another model (hidden size mismatch).
        """
        from pathlib import Path

        confidence, difficulty, _ = load_bundle_predictors(bundle_dir, model)
        if "outlook" not in kwargs:
            kwargs["outlook"] = load_bundle_outlook(bundle_dir, model)
        path = Path(bundle_dir) / "routing.json"
        if "routing" not in kwargs and path.is_file():
            kwargs["routing"] = RoutingTable.load(path)
        return cls(model, tokenizer, confidence=confidence, difficulty=difficulty,
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
        clock = _Clock(self.config.deadline_s)
        return self._chunked(prompts, lambda pre, c: self._adaptive(pre, clock, c))

    @torch.no_grad()
    def run_serial(self, prompts: Sequence[str], *, budgets: Sequence[int] | None = None, use_confidence: bool = True,
                   cap: int | None = None, name: str = "serial", stop_rules: Callable[[], list[StopRule]] | None = None
                   ) -> list[ControllerResult]:
        """The serial strategy alone (no routing): e.g. ``budgets=[B], use_confidence=False`` is fixed budget B.

        ``stop_rules`` makes extra :class:`~thinkctl.stopping.rules.StopRule` s per generation (e.g. Dynasor's
        answer consistency); a row stops at whichever fires first.
        """
        clock = _Clock(self.config.deadline_s)

        def run(pre: _Prefill, chunk: int) -> list[ControllerResult]:
            rows = list(range(len(pre.prompts)))
            traces: list[list[dict[str, Any]]] = [[] for _ in rows]
            return self._serial(pre, rows, clock, budgets=budgets, use_confidence=use_confidence,
                                cap=cap or self.config.token_cap, name=name, traces=traces, extra_rules=stop_rules)

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
        clock = _Clock(self.config.deadline_s)
        rule = (deepconf if deepconf is not None else self.stop_rule) if stop_rule is None else (stop_rule or None)
        n = self.config.max_samples if max_samples is None else int(max_samples)
        if n < 1:
            raise ValueError(f"max_samples={n} must be >= 1")
        if scorer == "confidence" and self.confidence is None:
            raise ValueError("scorer='confidence' needs a confidence predictor (load the controller from a bundle)")

        def run(pre: _Prefill, chunk: int) -> list[ControllerResult]:
            rows = list(range(len(pre.prompts)))
            return self._parallel(pre, rows, clock, rule=rule, budgets=[n] * len(rows), name=name,
                                  traces=[[] for _ in rows], chunk=chunk, scorer=scorer, weighted=weighted,
                                  deepconf=deepconf, wave_size=wave_size)

        return self._chunked(prompts, run, read=False)

    # -- batching -------------------------------------------------------------------------------------------------

    def _chunked(self, prompts: Sequence[str], run: Callable[[_Prefill, int], list[ControllerResult]], *,
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

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _prefill(self, prompts: list[str], *, read: bool) -> _Prefill:
        """One forward pass over the left-padded prompts; the cache is cropped to all but the last position so that
        generation (which feeds at least one token) continues from it."""
        prefixes = [chat_prefix(self.tokenizer, p) for p in prompts]
        width = max(len(p) for p in prefixes)
        ids = torch.full((len(prefixes), width), self.fmt.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, p in enumerate(prefixes):
            ids[r, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[r, width - len(p):] = 1
        dev = self._device()
        ids, mask = ids.to(dev), mask.to(dev)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=True,
                         output_hidden_states=read)
        cache = getattr(out, _CACHE_KW)
        hidden = {i: h[:, -1, :] for i, h in enumerate(out.hidden_states)} if read else {}
        _crop_to(cache, width - 1)
        return _Prefill(prompts=prompts, prefixes=prefixes, ids=ids, mask=mask, cache=cache, hidden=hidden)

    def _row_cache(self, cache: Any, index: torch.Tensor, max_len: int) -> Any:
        """The prefill cache's rows ``index`` (repeats allowed) as a preallocated static cache of ``max_len``
        positions (on CPU 2-5x faster than growing a dynamic cache by concatenation), or as a dynamic cache for
        models whose layers a static cache does not cover (e.g. sliding-window attention)."""
        if self._static_ok:
            try:
                from transformers import StaticCache
                from transformers.cache_utils import StaticLayer

                out = StaticCache(config=self.model.config, max_cache_len=max_len)
                if all(type(layer) is StaticLayer for layer in out.layers) and len(out.layers) == len(cache.layers):
                    for dst, src in zip(out.layers, cache.layers):
                        k, v = src.keys[index], src.values[index]
                        dst.lazy_initialization(k, v)
                        dst.keys[:, :, :k.shape[2]] = k
                        dst.values[:, :, :v.shape[2]] = v
                        dst.cumulative_length.fill_(k.shape[2])
                    return out
            except (ImportError, AttributeError, TypeError, ValueError) as exc:
                logger.info("static cache unavailable for %s (%s); using a dynamic cache", type(self.model).__name__,
                            exc)
            self._static_ok = False
        rows = copy.deepcopy(cache)
        rows.batch_select_indices(index)
        return rows

    def _thinking_cap(self, cap: int) -> int:
        """Thinking tokens a cap leaves after the forced marker, the answer tokens and the forced EOS."""
        return self.config.thinking_cap(cap, len(self.fmt.force_answer_ids))

    def _run_rows(self, pre: _Prefill, rows: list[int], *, sample: bool, cap: int, clock: _Clock, seed: int = 0,
                  probe_at: Sequence[int] = (), threshold: float | None = None, read_end: bool = False,
                  extra_rules: Callable[[], list[StopRule]] | None = None,
                  low_confidence: Sequence[float] | None = None) -> _Rows:
        """Generate for ``rows`` (indices into the prefill, repeats allowed), in sub-batches of
        ``config.max_rows``; each row thinks at most ``_thinking_cap(cap)`` tokens and then answers.

        ``low_confidence`` (one threshold per row) tracks DeepConf's group confidence and ends a row whose group
        confidence falls below its threshold (``-inf``: track only)."""
        out = _Rows([], [], [], [], [], [], [], [])
        for s, start in enumerate(range(0, len(rows), self.config.max_rows)):
            sub = rows[start:start + self.config.max_rows]
            self._run_batch(pre, sub, out, sample=sample, cap=cap, clock=clock, seed=seed * 7919 + s,
                            probe_at=probe_at, threshold=threshold, read_end=read_end, extra_rules=extra_rules,
                            low_confidence=None if low_confidence is None else
                            low_confidence[start:start + self.config.max_rows])
        return out

    def _run_batch(self, pre: _Prefill, sub: list[int], out: _Rows, *, sample: bool, cap: int, clock: _Clock,
                   seed: int, probe_at: Sequence[int], threshold: float | None, read_end: bool,
                   extra_rules: Callable[[], list[StopRule]] | None, low_confidence: Sequence[float] | None) -> None:
        cfg = self.config
        dev = self._device()
        index = torch.tensor(sub, dtype=torch.long, device=dev)
        cache = self._row_cache(pre.cache, index, pre.ids.shape[1] + cap)
        ids, mask = pre.ids[index], pre.mask[index]
        remaining = clock.remaining()
        tcap = 0 if remaining is not None and remaining <= 0 else self._thinking_cap(cap)

        rules: list[StopRule] = []
        tap = None
        probe = end_state = None
        conf = self.confidence
        if conf is not None and (probe_at or read_end) and tcap > 0:
            # hidden_states[i] of a forward pass is decoder layer i-1's output, except the last entry, which
            # transformers returns after the final norm: tap the same thing the predictor was trained on
            index = conf.hidden_index(self.n_layers)
            last = index == self.n_layers
            tap = HiddenStateTap(self.model, layers=(index - 1,), final_norm=last)
            layer: int | str = FINAL_NORM if last else index - 1
            if probe_at:
                probe = ProbeStopping(tap, lambda h: torch.as_tensor(self._stop_score(h)), threshold, every=None,
                                      at=tuple(probe_at), layer=layer, think_start=self.think_start,
                                      think_end=self.think_end)
                rules.append(probe)
            if read_end:
                end_state = _ThinkingEndState(tap, layer)
                rules.append(end_state)
        if remaining is not None and tcap > 0:
            rules.append(DeadlineStopping(max(remaining, 1e-6)))
        extra: list[StopRule] = extra_rules() if extra_rules is not None and tcap > 0 else []
        rules.extend(extra)
        bf = BudgetForcing(self.tokenizer, max_tokens=tcap, think_start=self.think_start, think_end=self.think_end,
                           answer_text=ANSWER_PREFIX, max_answer_tokens=cfg.max_answer_tokens, stop_rules=rules,
                           eos_token_id=list(self.fmt.eos_ids))
        stopping = StoppingCriteriaList()
        drop_rule = None
        if low_confidence is not None:
            from thinkctl.stopping import TokenConfidenceStopping

            drop_rule = TokenConfidenceStopping(0.0, window=cfg.confidence_window, top_k=cfg.confidence_top_k,
                                                tokenizer=self.tokenizer, think_start=self.think_start,
                                                think_end=self.think_end)
            # one threshold per row (the rule compares ``group < threshold`` elementwise)
            drop_rule.threshold = torch.tensor([max(t, -1e30) for t in low_confidence], device=dev)
            stopping.append(drop_rule)
        kw: dict[str, Any] = dict(max_new_tokens=cap, do_sample=sample, pad_token_id=self.fmt.pad_id,
                                  eos_token_id=list(self.fmt.eos_ids), logits_processor=LogitsProcessorList([bf]),
                                  stopping_criteria=stopping, return_dict_in_generate=True, use_cache=True)
        if sample:
            kw.update(temperature=float(cfg.temperature), top_k=0, top_p=1.0)
            torch.manual_seed(cfg.seed * 1_000_003 + seed)
        else:
            kw.update(temperature=None, top_k=None, top_p=None)
        if drop_rule is not None:
            kw["output_scores"] = True
        kw[_CACHE_KW] = cache
        kw.update(NO_AUTO_COMPILE)
        try:
            if tap is not None:
                tap.attach()
            gen = self.model.generate(input_ids=ids, attention_mask=mask, **kw)
        finally:
            if tap is not None:
                tap.remove()
        new = gen.sequences[:, ids.shape[1]:].tolist()
        eos = set(self.fmt.eos_ids)
        think = bf.think_tokens.tolist()
        reasons = bf.stop_reasons
        dropped = drop_rule.stop.tolist() if drop_rule is not None else [False] * len(sub)
        lowest = drop_rule.lowest_group_confidence.tolist() if drop_rule is not None else [math.inf] * len(sub)
        end_conf = [math.nan] * len(sub)
        if end_state is not None and end_state.state is not None:
            end_conf = [float(x) for x in conf(end_state.state)]  # type: ignore[misc]
        pad = self.fmt.pad_id if self.fmt.pad_id not in eos else None
        for r, row in enumerate(new):
            for j, t in enumerate(row):
                if t in eos:
                    row = row[:j + 1]
                    break
                if t == pad:  # BudgetForcing bans padding, so a pad means a stopping rule ended the row
                    row = row[:j]
                    break
            out.gen.append(row)
            out.thinking.append(int(think[r]))
            reason = reasons[r]
            if dropped[r]:
                reason = "low_confidence"
            elif reason is None:
                reason = "closed" if self.think_end is not None else "eos"
            elif reason == "max_tokens":
                reason = "deadline" if tcap == 0 else "cap"
            elif reason == "ProbeStopping":
                reason = "confident"
            elif reason == "DeadlineStopping":
                reason = "deadline"
            elif reason == "AnswerConsistencyStopping":
                reason = "consistent"
            out.reasons.append(reason)
            out.probes.append(list(probe.history[r]) if probe is not None else [])
            out.end_confidence.append(end_conf[r])
            out.low_confidence.append(bool(dropped[r]))
            out.lowest_group_confidence.append(float(lowest[r]))
            out.extra_tokens.append(sum(int(rule.probe_tokens[r]) for rule in extra if hasattr(rule, "probe_tokens")))

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

    def _adaptive(self, pre: _Prefill, clock: _Clock, chunk: int) -> list[ControllerResult]:
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
                                   traces=[traces[i] for i in rows])
                for i, x in zip(rows, res):
                    results[i] = x
        rows = [i for i, r in enumerate(routes) if r.kind == "parallel"]
        if rows:
            res = self._parallel(pre, rows, clock, rule=self.stop_rule,
                                 budgets=[routes[i].samples or self.config.max_samples for i in rows],
                                 name="parallel", traces=[traces[i] for i in rows], chunk=chunk)
            for i, x in zip(rows, res):
                results[i] = x
        done = [r for r in results if r is not None]
        assert len(done) == n
        for r, p in zip(done, p_solve):
            r.trace[0]["p_solve"] = p
        return done

    # -- serial ---------------------------------------------------------------------------------------------------

    def _serial(self, pre: _Prefill, rows: list[int], clock: _Clock, *, budgets: Sequence[int] | None,
                use_confidence: bool, cap: int, name: str, traces: list[list[dict[str, Any]]],
                extra_rules: Callable[[], list[StopRule]] | None = None) -> list[ControllerResult]:
        cfg = self.config
        tcap = self._thinking_cap(cap)
        conf_pred = self.confidence if use_confidence else None
        if budgets is not None:
            plan = sorted({min(int(b), tcap) for b in budgets})
            cap = min(cap, plan[-1] + (cap - tcap))
        elif conf_pred is not None and conf_pred.certified_at and not cfg.check_points and cfg.max_budget is None:
            # read where the threshold was certified (reading is free: a probe on the tapped state)
            plan = [c for c in conf_pred.certified_at if c < tcap] + [tcap] if tcap >= 1 else []
        else:
            plan = cfg.budgets(tcap)
            cap = min(cap, plan[-1] + (cap - tcap)) if plan else cap
        probe_at = plan[:-1] if conf_pred is not None else []  # the last budget is the cap: thinking ends there
        threshold = conf_pred.threshold if conf_pred is not None else None
        if threshold is not None and conf_pred.certified_at is not None and not self._warned_schedule:
            outside = sorted(set(probe_at) - set(conf_pred.certified_at))
            if outside:
                self._warned_schedule = True
                logger.warning("the stop threshold %.3f was certified at thinking budgets %s, but this controller also "
                               "reads its confidence at %s: the Learn-then-Test guarantee does not cover those "
                               "(recalibrate with `thinkctl calibrate --check-points`)", threshold,
                               list(conf_pred.certified_at[:6]), outside)
        out = self._run_rows(pre, rows, sample=False, cap=cap, clock=clock, probe_at=probe_at, threshold=threshold,
                             read_end=conf_pred is not None, extra_rules=extra_rules)
        results = []
        for k, i in enumerate(rows):
            trace = traces[k]
            for t, c in out.probes[k]:
                trace.append({"event": "probe", "thinking_tokens": t, "score": c, "threshold": threshold})
            if self.outlook is None and out.reasons[k] == "confident" and out.probes[k]:
                confidence = out.probes[k][-1][1]  # the probe that fired read this very state
            else:
                confidence = out.end_confidence[k]  # the last thinking token's state (where thinking ended)
            if math.isnan(confidence):
                confidence = 0.0
            stop = {"event": "stop", "reason": out.reasons[k], "thinking_tokens": out.thinking[k], "budgets": plan}
            if out.extra_tokens[k]:
                stop["probe_tokens"] = out.extra_tokens[k]
            trace.append(stop)
            results.append(self._result(pre, i, out.gen[k], 1 + len(out.gen[k]) + out.extra_tokens[k], confidence,
                                        trace, name, 1, thinking=out.thinking[k] + out.extra_tokens[k]))
        return results

    def _stop_score(self, hidden: torch.Tensor) -> np.ndarray:
        """What the serial stop rule compares with its threshold, for states ``(B, hidden)``: the calibrated
        confidence, or the outlook's score (``1 - outlook`` or ``max(confidence, 1 - kappa * outlook)``)."""
        conf = self.confidence(hidden)  # type: ignore[misc]
        if self.outlook is None:
            return conf
        return stop_score(conf, self.outlook(hidden), self.outlook.score, self.outlook.kappa)

    def _result(self, pre: _Prefill, i: int, gen: list[int], generated: int, confidence: float,
                trace: list[dict[str, Any]], name: str, samples: int, answer: str | None = None,
                text: str | None = None, thinking: int = 0) -> ControllerResult:
        text = self._decode(gen) if text is None else text
        ans = answer if answer is not None else self._answer_of(text)
        trace.append({"event": "answer", "answer": ans, "generated_tokens": len(gen)})
        return ControllerResult(answer=ans if ans is not None else "", text=text, confidence=float(confidence),
                                tokens=int(len(pre.prefixes[i]) - 1 + generated), samples=samples,
                                strategy=name, trace=trace, thinking_tokens=int(thinking))

    def _decode(self, ids: list[int]) -> str:
        eos = set(self.fmt.eos_ids) | {self.fmt.pad_id}
        return self.tokenizer.decode([t for t in ids if t not in eos], skip_special_tokens=False)

    def _answer_of(self, text: str) -> str | None:
        """The task's extraction, else the first line after ``Final Answer:``."""
        if self.task is not None:
            ans = self.task.extract_answer(text)
            if ans is not None:
                return str(ans)
        # the answer follows the first end of thinking (a model may write the marker again inside its answer)
        section = text.split(self.think_end, 1)[1] if self.think_end is not None and self.think_end in text else text
        if ANSWER_PREFIX not in section:
            return None
        rest = section.rsplit(ANSWER_PREFIX, 1)[1].strip()
        return rest.splitlines()[0].strip() if rest else None

    # -- parallel -------------------------------------------------------------------------------------------------

    def _parallel(self, pre: _Prefill, rows: list[int], clock: _Clock, *, rule: StopRuleLike | None,
                  budgets: list[int], name: str, traces: list[list[dict[str, Any]]], chunk: int,
                  scorer: Scorer | str | None = None, weighted: bool | None = None,
                  deepconf: "DeepConfOnline | None" = None, wave_size: int | None = None) -> list[ControllerResult]:
        """Waves of samples per prompt branching off the shared prefill, until each prompt's vote is settled."""
        cfg = self.config
        weighted = (cfg.weighted_vote if weighted is None else weighted) and self.confidence is not None
        read_end = weighted or scorer == "confidence"
        size = wave_size or (cfg.wave_size if rule is not None else max(budgets))
        k_rows = len(rows)
        tallies = [VoteTally() for _ in rows]
        wtallies = [VoteTally() for _ in rows]
        gens: list[list[list[int]]] = [[] for _ in rows]
        texts: list[list[str]] = [[] for _ in rows]  # each sample decoded once
        scores: list[list[float]] = [[] for _ in rows]
        generated = [0] * k_rows
        thinking = [0] * k_rows
        status = ["budget"] * k_rows
        active = list(range(k_rows))
        low: list[float] | None = [-math.inf] * k_rows if deepconf is not None else None
        wave = 0
        while active:
            if clock.expired():
                for k in active:
                    status[k] = "deadline"
                break
            warm = deepconf is not None and wave == 0
            first = min(deepconf.warmup, size) if warm else size  # type: ignore[union-attr]
            plan = [(k, min(first, budgets[k] - tallies[k].n_seen)) for k in active]
            flat = [rows[k] for k, w in plan for _ in range(w)]
            out = self._run_rows(pre, flat, sample=True, cap=cfg.token_cap, clock=clock,
                                 seed=(chunk * 10_007 + wave) * 3 + 1, read_end=read_end,
                                 low_confidence=None if low is None else [low[k] for k, w in plan for _ in range(w)])
            if warm:  # DeepConf: the threshold is a percentile of the warm-up traces' lowest group confidence
                j = 0
                for k, w in plan:
                    low[k] = deepconf.threshold(out.lowest_group_confidence[j:j + w])  # type: ignore[union-attr,index]
                    for x in range(j, j + w):  # warm-up traces below it are filtered out of the vote
                        out.low_confidence[x] = out.lowest_group_confidence[x] < low[k]  # type: ignore[index]
                    traces[k].append({"event": "deepconf_threshold", "threshold": low[k], "warmup": w})  # type: ignore
                    j += w
            j = 0
            for k, w in plan:
                answers, weights, kept = [], [], []
                for _ in range(w):
                    row = out.gen[j]
                    text = self._decode(row)
                    gens[k].append(row)
                    texts[k].append(text)
                    generated[k] += 1 + len(row)
                    thinking[k] += out.thinking[j]
                    a = None if out.low_confidence[j] else self._answer_of(text)
                    s = out.end_confidence[j]
                    if callable(scorer):
                        s = float(scorer(pre.prompts[rows[k]], text))
                    scores[k].append(s if not math.isnan(s) else -math.inf)
                    answers.append(a)
                    kept.append(not out.low_confidence[j])
                    tallies[k].add(a)
                    if weighted and a is not None:
                        wtallies[k].add(a, max(0.0, s if not math.isnan(s) else 0.0))
                    weights.append(None if math.isnan(s) else s)
                    j += 1
                rec: dict[str, Any] = {"event": "sample_wave", "wave": wave, "size": w, "answers": answers,
                                       "tokens_so_far": len(pre.prefixes[rows[k]]) - 1 + generated[k]}
                if read_end or callable(scorer):
                    rec["scores"] = weights
                if deepconf is not None:
                    rec["kept"] = kept
                traces[k].append(rec)
            wave += 1
            still = []
            for k in active:
                if tallies[k].n_seen >= budgets[k]:
                    continue
                if rule is not None and rule.should_stop(tallies[k], budgets[k]):
                    status[k] = "settled"
                    continue
                still.append(k)
            active = still
        results: list[ControllerResult | None] = [None] * k_rows
        forced = []
        for k in range(k_rows):
            trace = traces[k]
            final = wtallies[k] if weighted and wtallies[k].ranked() and sum(v for _, v in wtallies[k].ranked()) > 0 \
                else tallies[k]
            if scorer is not None and gens[k]:
                best = int(np.argmax(scores[k]))
                leader = self._answer_of(texts[k][best])
                trace.append({"event": "best_of", "samples": len(gens[k]), "best": best, "score": scores[k][best],
                              "leader": leader, "stop": status[k]})
                if leader is not None:
                    s = scores[k][best]
                    results[k] = self._result(pre, rows[k], gens[k][best], generated[k],
                                              _squash(s), trace, name, len(gens[k]), answer=leader,
                                              text=texts[k][best], thinking=thinking[k])
                    continue
            else:
                leader = final.leader()
                trace.append({"event": "vote", "samples": tallies[k].n_seen,
                              "votes": [[a, v] for a, v in final.ranked()], "weighted": final is wtallies[k],
                              "leader": leader, "stop": status[k]})
            if leader is None:
                forced.append(k)
                continue
            first = next(i for i, a in enumerate(tallies[k].history) if a == leader) \
                if leader in tallies[k].history else 0
            total = sum(v for _, v in final.ranked())
            share = final.votes(leader) / total if total > 0 else 0.0
            results[k] = self._result(pre, rows[k], gens[k][first], generated[k], share, trace, name,
                                      tallies[k].n_seen, answer=str(leader), text=texts[k][first],
                                      thinking=thinking[k])
        if forced:
            # nobody voted (every sample failed to answer, or the deadline came first): one greedy forced answer
            sub = [traces[k] for k in forced]
            for t in sub:
                t.append({"event": "stop", "reason": "no_votes"})
            res = self._serial(pre, [rows[k] for k in forced], clock, budgets=None, use_confidence=False,
                               cap=cfg.easy_cap, name=name, traces=sub)
            for k, r in zip(forced, res):
                r.tokens += generated[k]
                r.thinking_tokens += thinking[k]
                r.samples = max(1, len(gens[k]) + 1)
                results[k] = r
        return [r for r in results if r is not None]


def _squash(score: float) -> float:
    """A scorer's value as a confidence in [0, 1] (probabilities pass through, other scores go through a sigmoid)."""
    if math.isinf(score) or math.isnan(score):
        return 0.0
    return score if 0.0 <= score <= 1.0 else 1.0 / (1.0 + math.exp(-score))

