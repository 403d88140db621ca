"""Batched generation under the controller's hooks: the shared prefill, row caches, and one ``model.generate`` call
per sub-batch with :mod:`thinkctl.stopping` rules; the base of the serial and parallel routes.

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
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from transformers import LogitsProcessorList, StoppingCriteriaList

from thinkctl.calibration.risk_control import stop_score
from thinkctl.controller.config import ControllerConfig
from thinkctl.controller.predictors import HiddenStatePredictor, Outlook
from thinkctl.controller.reasons import thinking_stop_reason
from thinkctl.controller.result import ControllerResult
from thinkctl.controller.seeding import batch_index, sample_seed
from thinkctl.generation import NO_AUTO_COMPILE, ReasoningFormat, chat_prefix, check_context
from thinkctl.stopping import BudgetForcing, DeadlineStopping, HiddenStateTap, ProbeStopping
from thinkctl.stopping.rules import StopRule
from thinkctl.stopping.tap import FINAL_NORM
from thinkctl.tasks.base import ANSWER_PREFIX

__all__ = ["GenerationEngine", "Prefill", "Rows", "Clock"]

logger = logging.getLogger(__name__)


@dataclass
class Prefill:
    """Left-padded prompts and their shared KV cache over all but the last position."""

    prompts: list[str]
    prefixes: list[list[int]]
    ids: torch.Tensor  # (P, W)
    mask: torch.Tensor  # (P, W)
    cache: Any  # W - 1 positions
    hidden: dict[int, torch.Tensor]  # output_hidden_states index -> (P, hidden) at the last prompt token


@dataclass
class Rows:
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


class Clock:
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


class GenerationEngine:
    """The controller's batched generation: what both routes build on. :class:`~thinkctl.controller.AdaptiveController`
    sets the attributes declared here."""

    model: Any
    tokenizer: Any
    config: ControllerConfig
    confidence: HiddenStatePredictor | None
    outlook: Outlook | None
    task: Any
    fmt: ReasoningFormat
    think_start: str | None
    think_end: str | None
    n_layers: int
    _static_ok: bool

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _prefill(self, prompts: list[str], *, read: bool) -> Prefill:
        """One forward pass over the left-padded prompts; the cache is cropped to all but the last position so that
        generation (which feeds at least one token) continues from it."""
        return self._prefill_ids(prompts, [chat_prefix(self.tokenizer, p) for p in prompts], read=read)

    def _prefill_ids(self, prompts: list[str], prefixes: list[list[int]], *, read: bool,
                     cap: int | None = None) -> Prefill:
        """:meth:`_prefill` of token prefixes (a chat prefix, or one that already holds some thinking), to be
        continued by at most ``cap`` tokens (default: the token cap)."""
        longest = max(range(len(prefixes)), key=lambda i: len(prefixes[i]))
        # every prompt must leave room for the token cap, checked before the prefill allocates anything
        check_context(self.model, len(prefixes[longest]), cap or self.config.token_cap, cap_name="token_cap",
                      what=f"prompt {longest} of this batch ({prompts[longest][:40]!r}...)")
        width = len(prefixes[longest])
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
        return Prefill(prompts=prompts, prefixes=prefixes, ids=ids, mask=mask, cache=cache, hidden=hidden)

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
                    layers: list[Any] = list(out.layers)  # StaticLayer, checked above
                    for dst, src in zip(layers, cache.layers):
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

    def _run_rows(self, pre: Prefill, rows: list[int], *, sample: bool, cap: int, clock: Clock, seed: int = 0,
                  probe_at: Sequence[int] = (), threshold: float | None = None, read_end: bool = False,
                  extra_rules: Callable[[], list[StopRule]] | None = None,
                  low_confidence: Sequence[float] | None = None) -> Rows:
        """Generate for ``rows`` (indices into the prefill, repeats allowed), in sub-batches of
        ``config.max_rows``; each row thinks at most ``_thinking_cap(cap)`` tokens and then answers.

        ``low_confidence`` (one threshold per row) tracks DeepConf's group confidence and ends a row whose group
        confidence falls below its threshold (``-inf``: track only)."""
        out = Rows([], [], [], [], [], [], [], [])
        for s, start in enumerate(range(0, len(rows), self.config.max_rows)):
            sub = rows[start:start + self.config.max_rows]
            self._run_batch(pre, sub, out, sample=sample, cap=cap, clock=clock, seed=batch_index(seed, s),
                            probe_at=probe_at, threshold=threshold, read_end=read_end, extra_rules=extra_rules,
                            low_confidence=None if low_confidence is None else
                            low_confidence[start:start + self.config.max_rows])
        return out

    def _run_batch(self, pre: Prefill, sub: list[int], out: Rows, *, sample: bool, cap: int, clock: Clock,
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
            h_index = conf.hidden_index(self.n_layers)
            last = h_index == self.n_layers
            tap = HiddenStateTap(self.model, layers=(h_index - 1,), final_norm=last)
            layer: int | str = FINAL_NORM if last else h_index - 1
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
            drop_rule.threshold = torch.tensor(  # type: ignore[assignment]  # per-row thresholds broadcast
                [max(t, -1e30) for t in low_confidence], device=dev)
            stopping.append(drop_rule)
        kw: dict[str, Any] = dict(max_new_tokens=cap, do_sample=sample, pad_token_id=self.fmt.pad_id,
                                  eos_token_id=list(self.fmt.eos_ids), logits_processor=LogitsProcessorList([bf]),
                                  stopping_criteria=stopping, return_dict_in_generate=True, use_cache=True)
        if sample:
            kw.update(temperature=float(cfg.temperature), top_k=0, top_p=1.0)
            torch.manual_seed(sample_seed(cfg.seed, seed))
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
            reason = thinking_stop_reason(reasons[r], rules, no_thinking=tcap == 0,
                                          has_think_end=self.think_end is not None, dropped=bool(dropped[r]))
            out.reasons.append(reason.value)
            out.probes.append(list(probe.history[r]) if probe is not None else [])
            out.end_confidence.append(end_conf[r])
            out.low_confidence.append(bool(dropped[r]))
            out.lowest_group_confidence.append(float(lowest[r]))
            out.extra_tokens.append(sum(int(rule.probe_tokens[r]) for rule in extra if hasattr(rule, "probe_tokens")))

    def _stop_score(self, hidden: torch.Tensor) -> np.ndarray:
        """What the serial stop rule compares with its threshold, for states ``(B, hidden)``: the calibrated
        confidence, or the outlook's score (``1 - outlook`` or ``max(confidence, 1 - kappa * outlook)``)."""
        conf = self.confidence(hidden)  # type: ignore[misc]
        if self.outlook is None:
            return conf
        return stop_score(conf, self.outlook(hidden), self.outlook.score, self.outlook.kappa)

    def _result(self, pre: Prefill, i: int, gen: list[int], generated: int, confidence: float,
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
