"""The adaptive controller: route by difficulty, think in doubling budgets from the KV cache, or sample and vote.

Token accounting (``ControllerResult.tokens``) follows the evaluation contract: prompt tokens once per prefill plus
every token generated, forced or re-fed to read a hidden state. Concretely:

* a prefill counts the prompt once; reading the prompt's hidden state (for routing) re-feeds its last token (+1);
* every generated token counts once, including one the controller then discards (an EOS inside the thinking);
* reading the confidence after a budget step re-feeds the newest token (+1 per read, "probe tokens");
* the forced ``</think>\\nFinal Answer:`` tokens and the answer tokens count;
* a parallel sample branches off the shared prefill by re-feeding the prompt's last token (+1 per sample);
  a sample's tokens stop at its EOS (the padding a finished row carries in its batch is not counted).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from thinkctl.controller.config import ControllerConfig
from thinkctl.controller.predictors import (HiddenStatePredictor, load_bundle_predictors, model_hidden_size,
                                            model_num_layers)
from thinkctl.eval.voting import MajorityStabilityStopping, VoteTally
from thinkctl.generation import ReasoningFormat, chat_prefix, reasoning_format
from thinkctl.tasks.base import answer_section

__all__ = ["AdaptiveController", "ControllerResult", "StopRuleLike"]

logger = logging.getLogger(__name__)

#: A vote stopping rule: ``should_stop(tally, budget) -> bool`` (see :mod:`thinkctl.eval.voting`).
StopRuleLike = Any


@dataclass
class ControllerResult:
    """What the controller returns for one prompt.

    Attributes
    ----------
    answer : str
        The final answer: the task's extracted answer when a task is given and it parses, otherwise the first line
        after the forced answer marker. Always a string: when nothing else produced one, an answer was forced
        (at least one non-EOS answer token is generated; it is the empty string only when the model answers
        with whitespace alone).
    text : str
        The generated text that produced the answer (thinking, forced marker, answer).
    confidence : float
        In [0, 1]. Serial routes: the calibrated confidence predictor at the last read (0.0 when the
        controller has no confidence predictor or never read it). Parallel: the winner's share of the votes (an
        agreement frequency, not calibrated; with ``config.weighted_vote`` its share of the confidence-weighted
        votes).
    tokens : int
        Tokens the model processed for this prompt (see the module docstring).
    samples : int
        Generations drawn (1 for serial routes).
    strategy : str
        The route or baseline that produced the answer (``"serial"``, ``"easy"``, ``"parallel"``, ``"fixed@256"``, ...).
    trace : list of dict
        Decision records in order: ``{"event": "route" | "think" | "confidence" | "stop" | "sample_wave" |
        "vote" | "answer", ...}``.
    """

    answer: str
    text: str
    confidence: float
    tokens: int
    samples: int
    strategy: str
    trace: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Prefill:
    """A prompt's KV cache over all but its last token, and the tokens already counted for it."""

    prefix: list[int]
    cache: Any
    tokens: int
    hidden: dict[int, torch.Tensor]


def _cache_kwarg() -> str:
    """The keyword under which this transformers passes a KV cache (``cache`` from v5.x, ``past_key_values``
    before)."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in getattr(CausalLMOutputWithPast, "__dataclass_fields__", {}) else "past_key_values"


_CACHE_KW = _cache_kwarg()


def _cache_of(out: Any) -> Any:
    return getattr(out, _CACHE_KW)


def _crop_to(cache: Any, length: int) -> None:
    """Drop the newest positions of ``cache`` so that it holds ``length`` (negative crop: both cache APIs)."""
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


class AdaptiveController:
    """Decide per query how much a reasoning LM thinks, while it generates.

    Each prompt is routed by the difficulty predictor's P(one sample solves it): ``>= config.easy_above`` ->
    ``"easy"`` (serial thinking under the small ``config.easy_cap``), ``< config.hard_below`` -> ``"parallel"``
    (samples in waves, stopped by the vote), otherwise ``"serial"``. Without a difficulty predictor every prompt
    goes serial. The two thresholds are configuration placeholders: the routing table fitted from traces (which
    route is most accurate per token at each difficulty) is the next step and will replace them.

    Serial: greedy thinking in budget steps ``B0, 2*B0, 4*B0, ...`` up to the cap, each step continuing from the
    previous step's KV cache (no token is computed twice except the one re-fed to read a hidden state). After each
    step the calibrated confidence is read at the predictor's layer; the answer is forced as soon as it reaches the
    confidence predictor's threshold, when the model closes its thinking, at the cap, or at the deadline.

    Parallel: samples drawn in waves of ``config.wave_size`` that all branch off one prefill of the prompt, until
    ``stop_rule`` (default: :class:`~thinkctl.eval.voting.MajorityStabilityStopping`) says the vote is settled or
    ``config.max_samples`` are in; the answer is the majority.

    Parameters
    ----------
    model : transformers causal LM
    tokenizer : its tokenizer (with a chat template)
    confidence : HiddenStatePredictor, optional
        Calibrated P(the answer forced now is right) with its stop threshold.
    difficulty : HiddenStatePredictor, optional
        Calibrated P(one sample solves the query), read at the prompt's last token.
    config : ControllerConfig
    task : object with ``extract_answer(text)``, optional
        Extracts answers for voting and for ``ControllerResult.answer``.
    stop_rule : vote stopping rule, optional
        For the parallel route; default ``MajorityStabilityStopping()`` (the "adaptive" rule).

    Examples
    --------
    >>> controller = AdaptiveController.load("bundle/", model, tokenizer)  # doctest: +SKIP
    >>> r = controller.generate(["What is 2 + 3?"])[0]  # doctest: +SKIP
    >>> r.answer, r.confidence, r.tokens, r.strategy  # doctest: +SKIP
    """

    def __init__(self, model: Any, tokenizer: Any, *, confidence: HiddenStatePredictor | None = None,
                 difficulty: HiddenStatePredictor | None = None, config: ControllerConfig = ControllerConfig(),
                 task: Any = None, stop_rule: StopRuleLike | None = None) -> None:
        if not isinstance(config, ControllerConfig):
            raise ValueError(f"config must be a ControllerConfig, got {type(config).__name__}")
        self.model = model
        self.tokenizer = tokenizer
        self.confidence = confidence
        self.difficulty = difficulty
        self.config = config
        self.task = task
        self.stop_rule = stop_rule if stop_rule is not None else MajorityStabilityStopping()
        self.fmt: ReasoningFormat = reasoning_format(tokenizer)
        self.n_layers = model_num_layers(model)
        for name, pred in (("confidence", confidence), ("difficulty", difficulty)):
            if pred is not None:
                pred.hidden_index(self.n_layers)  # raises on a layer the model does not have
        for name, cap in (("token_cap", config.token_cap), ("easy_cap", config.easy_cap)):
            if self._thinking_cap(cap) < 1:
                raise ValueError(f"{name}={cap} leaves no room for thinking after the forced answer "
                                 f"({len(self.fmt.force_answer_ids)} marker tokens + max_answer_tokens="
                                 f"{config.max_answer_tokens}); raise {name}")
        self.hidden_size = model_hidden_size(model)

    @classmethod
    def load(cls, bundle_dir: Any, model: Any, tokenizer: Any, config: ControllerConfig | None = None,
             **kwargs: Any) -> "AdaptiveController":
        """A controller with the predictors, calibrators and stop threshold of a bundle folder.

        Raises ValueError when the bundle's probes were trained on another model (hidden size mismatch).
        """
        confidence, difficulty, _ = load_bundle_predictors(bundle_dir, model)
        return cls(model, tokenizer, confidence=confidence, difficulty=difficulty,
                   config=config if config is not None else ControllerConfig(), **kwargs)

    # -- public -------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(self, prompts: Sequence[str]) -> list[ControllerResult]:
        """Answer each prompt adaptively; one result per prompt, in order.

        ``config.deadline_s`` bounds the whole call: prompts reached after the deadline get an answer forced
        without thinking, and a running generation stops at the deadline and forces its answer.
        """
        clock = _Clock(self.config.deadline_s)
        out = []
        for i, prompt in enumerate(self._check_prompts(prompts)):
            out.append(self._adaptive_one(prompt, clock, i))
        return out

    @torch.no_grad()
    def run_serial(self, prompts: Sequence[str], *, budgets: Sequence[int] | None = None, use_confidence: bool = True,
                   cap: int | None = None, name: str = "serial") -> list[ControllerResult]:
        """The serial strategy alone (no routing): e.g. ``budgets=[B], use_confidence=False`` is fixed budget B."""
        clock = _Clock(self.config.deadline_s)
        return [self._serial(self._prefill(p, read=False), clock, budgets=budgets, use_confidence=use_confidence,
                             cap=cap, name=name, trace=[])
                for p in self._check_prompts(prompts)]

    @torch.no_grad()
    def run_parallel(self, prompts: Sequence[str], *, stop_rule: StopRuleLike | None = None,
                     max_samples: int | None = None, name: str = "parallel") -> list[ControllerResult]:
        """The parallel strategy alone; ``stop_rule=None`` uses the controller's rule, ``False`` draws all N."""
        clock = _Clock(self.config.deadline_s)
        rule = self.stop_rule if stop_rule is None else stop_rule
        n = self.config.max_samples if max_samples is None else int(max_samples)
        if n < 1:
            raise ValueError(f"max_samples={n} must be >= 1")
        return [self._parallel(self._prefill(p, read=False), clock, rule=rule or None, n=n, name=name, trace=[],
                               index=i)
                for i, p in enumerate(self._check_prompts(prompts))]

    # -- routing --------------------------------------------------------------------------------------------------

    def _check_prompts(self, prompts: Sequence[str]) -> list[str]:
        if isinstance(prompts, str):
            raise ValueError("prompts must be a list of strings; wrap a single prompt as [prompt]")
        return list(prompts)

    def _route(self, p_solve: float | None) -> str:
        cfg = self.config
        if p_solve is None:
            want = "serial"
        elif p_solve >= cfg.easy_above:
            want = "easy"
        elif p_solve < cfg.hard_below:
            want = "parallel"
        else:
            want = "serial"
        if want in cfg.strategies:
            return want
        return "serial" if "serial" in cfg.strategies else cfg.strategies[0]

    def _adaptive_one(self, prompt: str, clock: _Clock, index: int) -> ControllerResult:
        trace: list[dict[str, Any]] = []
        pre = self._prefill(prompt, read=self.difficulty is not None)
        if clock.expired():
            trace.append({"event": "stop", "reason": "deadline", "thinking_tokens": 0})
            return self._force_answer(pre, list(pre.prefix), pre.cache, pre.tokens, 0.0, trace, "serial",
                                      thinking=[])
        p_solve = None
        if self.difficulty is not None:
            p_solve = float(self.difficulty(pre.hidden[self.difficulty.hidden_index(self.n_layers)])[0])
        route = self._route(p_solve)
        trace.append({"event": "route", "p_solve": p_solve, "route": route,
                      "thresholds": {"easy_above": self.config.easy_above, "hard_below": self.config.hard_below}})
        if route == "parallel":
            return self._parallel(pre, clock, rule=self.stop_rule, n=self.config.max_samples, name=route,
                                  trace=trace, index=index)
        cap = self.config.easy_cap if route == "easy" else self.config.token_cap
        return self._serial(pre, clock, budgets=None, use_confidence=True, cap=cap, name=route, trace=trace)

    # -- model steps ----------------------------------------------------------------------------------------------

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def _prefill(self, prompt: str, *, read: bool) -> _Prefill:
        """One forward pass over the prompt; the cache is cropped to all but the last token so that generation
        (which must feed at least one token) continues from it."""
        prefix = chat_prefix(self.tokenizer, prompt)
        ids = torch.tensor([prefix], dtype=torch.long, device=self._device())
        out = self.model(input_ids=ids, use_cache=True, output_hidden_states=read)
        cache = _cache_of(out)
        hidden = {}
        if read:
            hidden = {i: h[:, -1, :] for i, h in enumerate(out.hidden_states)}  # each (1, hidden)
        _crop_to(cache, len(prefix) - 1)
        # the prompt once; its last token is fed again by whatever continues from the cropped cache
        return _Prefill(prefix=prefix, cache=cache, tokens=len(prefix) + 1, hidden=hidden)

    def _generate(self, ids: list[int] | list[list[int]], cache: Any, max_new_tokens: int, *, stop_ids: Sequence[int],
                  sample: bool = False, min_new_tokens: int = 0, max_time: float | None = None,
                  hidden: bool = False) -> tuple[list[list[int]], Any, Any]:
        rows = ids if ids and isinstance(ids[0], list) else [ids]
        x = torch.tensor(rows, dtype=torch.long, device=self._device())
        kw: dict[str, Any] = dict(max_new_tokens=max_new_tokens, eos_token_id=list(stop_ids) or None,
                                  pad_token_id=self.fmt.pad_id, do_sample=sample, return_dict_in_generate=True,
                                  use_cache=True)
        if sample:
            kw.update(temperature=float(self.config.temperature), top_k=0, top_p=1.0)
        else:
            kw.update(temperature=None, top_k=None, top_p=None)
        if min_new_tokens:
            kw["min_new_tokens"] = min_new_tokens
        if max_time is not None:
            kw["max_time"] = max(max_time, 1e-6)
        if hidden:
            kw["output_hidden_states"] = True
        kw[_CACHE_KW] = cache
        out = self.model.generate(input_ids=x, attention_mask=torch.ones_like(x), **kw)
        return out.sequences[:, x.shape[1]:].tolist(), _cache_of(out), (out.hidden_states if hidden else None)

    @torch.no_grad()
    def _read_confidence(self, ids: list[int], cache: Any) -> float:
        """Feed the newest token over the cache, read the predictor, and crop the cache back."""
        assert self.confidence is not None
        x = torch.tensor([ids[-1:]], dtype=torch.long, device=self._device())
        n = cache.get_seq_length()
        out = self.model(input_ids=x, use_cache=True, output_hidden_states=True, **{_CACHE_KW: cache})
        h = out.hidden_states[self.confidence.hidden_index(self.n_layers)][:, -1, :]  # (1, hidden)
        _crop_to(cache, n)
        return float(self.confidence(h)[0])

    def _thinking_cap(self, cap: int) -> int:
        return cap - len(self.fmt.force_answer_ids) - self.config.max_answer_tokens

    # -- serial ---------------------------------------------------------------------------------------------------

    def _serial(self, pre: _Prefill, clock: _Clock, *, budgets: Sequence[int] | None, use_confidence: bool,
                cap: int | None, name: str, trace: list[dict[str, Any]]) -> ControllerResult:
        cfg = self.config
        cap = cfg.token_cap if cap is None else cap
        tcap = self._thinking_cap(cap)
        plan = cfg.budgets(tcap) if budgets is None else sorted({min(int(b), tcap) for b in budgets})
        stop_ids = list(self.fmt.eos_ids) + ([self.fmt.think_close_id] if self.fmt.think_close_id is not None else [])
        conf_pred = self.confidence if use_confidence else None
        ids, cache, tokens = list(pre.prefix), pre.cache, pre.tokens
        thinking: list[int] = []
        confidence, reason = 0.0, "cap"
        for k, budget in enumerate(plan):
            if clock.expired():
                reason = "deadline"
                break
            new, cache, _ = self._generate(ids, cache, budget - len(thinking), stop_ids=stop_ids,
                                        max_time=clock.remaining())
            new = new[0]
            tokens += len(new)
            ids += new
            thinking += new
            trace.append({"event": "think", "budget": budget, "new_tokens": len(new),
                          "thinking_tokens": len(thinking), "cache_tokens": cache.get_seq_length()})
            if new and new[-1] in stop_ids:
                reason = "closed" if new[-1] == self.fmt.think_close_id else "eos"
                break
            if clock.expired():
                reason = "deadline"
                break
            if k == len(plan) - 1:
                reason = "cap"
                break
            if conf_pred is not None:
                confidence = self._read_confidence(ids, cache)
                tokens += 1
                trace.append({"event": "confidence", "thinking_tokens": len(thinking), "confidence": confidence,
                              "threshold": conf_pred.threshold})
                if conf_pred.threshold is not None and confidence >= conf_pred.threshold:
                    reason = "confident"
                    break
        trace.append({"event": "stop", "reason": reason, "thinking_tokens": len(thinking)})
        return self._force_answer(pre, ids, cache, tokens, confidence, trace, name, thinking=thinking)

    def _force_answer(self, pre: _Prefill, ids: list[int], cache: Any, tokens: int, confidence: float,
                      trace: list[dict[str, Any]], name: str, *, thinking: list[int]) -> ControllerResult:
        """Append the answer marker (completing a natural ``</think>``) and generate a greedy answer."""
        force = list(self.fmt.force_answer_ids)
        if thinking and thinking[-1] in self.fmt.eos_ids:
            ids = ids[:-1]  # an EOS inside the thinking is replaced by the forced answer (it was never fed)
            thinking = thinking[:-1]
        if (thinking and self.fmt.think_close_id is not None and thinking[-1] == self.fmt.think_close_id
                and force and force[0] == self.fmt.think_close_id):
            force = force[1:]
        answer, _, _ = self._generate(ids + force, cache, self.config.max_answer_tokens, stop_ids=self.fmt.eos_ids,
                                   min_new_tokens=1)
        answer = answer[0]
        tokens += len(force) + len(answer)
        gen = thinking + force + answer
        text, ans = self._extract(gen, answer)
        trace.append({"event": "answer", "forced_tokens": len(force), "answer_tokens": len(answer), "answer": ans})
        return ControllerResult(answer=ans, text=text, confidence=float(confidence), tokens=int(tokens), samples=1,
                                strategy=name, trace=trace)

    def _decode(self, ids: list[int]) -> str:
        eos = set(self.fmt.eos_ids) | {self.fmt.pad_id}
        return self.tokenizer.decode([t for t in ids if t not in eos], skip_special_tokens=False)

    def _extract(self, gen: list[int], answer_ids: list[int]) -> tuple[str, str]:
        text = self._decode(gen)
        ans = self.task.extract_answer(text) if self.task is not None else None
        if ans is None:
            raw = self.tokenizer.decode([t for t in answer_ids if t not in self.fmt.eos_ids], skip_special_tokens=True)
            lines = [ln.strip() for ln in raw.strip().splitlines() if ln.strip()]
            ans = lines[0] if lines else raw.strip()
        return text, str(ans)

    def _sample_answer(self, gen: list[int]) -> str | None:
        """A parallel sample's vote: the task's extraction, else the first line after ``Final Answer:``."""
        text = self._decode(gen)
        if self.task is not None:
            return self.task.extract_answer(text)
        from thinkctl.tasks.base import ANSWER_PREFIX

        section = answer_section(text)
        if section is None or ANSWER_PREFIX not in section:
            return None
        rest = section.split(ANSWER_PREFIX, 1)[1].strip()
        return rest.splitlines()[0].strip() if rest else None

    # -- parallel -------------------------------------------------------------------------------------------------

    def _parallel(self, pre: _Prefill, clock: _Clock, *, rule: StopRuleLike | None, n: int, name: str,
                  trace: list[dict[str, Any]], index: int) -> ControllerResult:
        cfg = self.config
        tokens = pre.tokens - 1  # the prompt once; each sample re-feeds its last token below
        tally = VoteTally()  # unweighted: what the stopping rules read
        weighted = cfg.weighted_vote and self.confidence is not None
        wtally = VoteTally()  # confidence-weighted, when weighted
        gens: list[list[int]] = []
        eos = set(self.fmt.eos_ids)
        wave = 0
        stopped = "budget"
        while tally.n_seen < n:
            if clock.expired():
                stopped = "deadline"
                break
            w = min(cfg.wave_size, n - tally.n_seen)
            cache = copy.deepcopy(pre.cache)
            cache.batch_repeat_interleave(w)
            torch.manual_seed(cfg.seed * 1_000_003 + index * 1009 + wave)
            rows, _, states = self._generate([list(pre.prefix)] * w, cache, cfg.token_cap,
                                             stop_ids=self.fmt.eos_ids, sample=True, max_time=clock.remaining(),
                                             hidden=weighted)
            answers = []
            for r, row in enumerate(rows):
                for j, t in enumerate(row):
                    if t in eos:
                        row = row[:j + 1]
                        break
                rows[r] = row
                gens.append(row)
                tokens += 1 + len(row)
                a = self._sample_answer(row)
                answers.append(a)
                tally.add(a)
            record: dict[str, Any] = {"event": "sample_wave", "wave": wave, "size": w, "answers": answers}
            if weighted:
                weights = self._end_of_thinking_confidence(rows, states)
                for a, wgt in zip(answers, weights):
                    wtally.add(a, float(wgt))
                record["weights"] = [float(x) for x in weights]
            record["tokens_so_far"] = tokens
            trace.append(record)
            wave += 1
            if rule is not None and rule.should_stop(tally, n):
                stopped = "settled" if tally.n_seen < n else "budget"
                break
        final = wtally if weighted and wtally.ranked() and sum(v for _, v in wtally.ranked()) > 0 else tally
        leader = final.leader()
        trace.append({"event": "vote", "samples": tally.n_seen, "votes": [[a, v] for a, v in final.ranked()],
                      "weighted": final is wtally, "leader": leader, "stop": stopped})
        if leader is None:
            # nobody voted: force an answer after the first sample's thinking (or none), recomputed from the prefill
            thinking = self._thinking_of(gens[0]) if gens else []
            thinking = thinking[:self._thinking_cap(cfg.token_cap)]
            trace.append({"event": "stop", "reason": "no_votes" if gens else "deadline",
                          "thinking_tokens": len(thinking)})
            res = self._force_answer(pre, list(pre.prefix) + thinking, copy.deepcopy(pre.cache),
                                     tokens + 1 + len(thinking), 0.0, trace, name, thinking=thinking)
            res.samples = max(1, len(gens))
            return res
        k = next(i for i, a in enumerate(tally.history) if a == leader)
        share = final.votes(leader) / max(1e-12, sum(v for _, v in final.ranked()))
        return ControllerResult(answer=str(leader), text=self._decode(gens[k]), confidence=float(share),
                                tokens=int(tokens), samples=tally.n_seen, strategy=name, trace=trace)

    def _end_of_thinking_confidence(self, rows: list[list[int]], states: Any) -> Any:
        """Calibrated confidence at the last thinking token of each row of a wave, from ``generate``'s hidden states.

        Step ``t`` of ``states`` holds the state of the token fed at that step: the prompt's last token at step 0,
        generated token ``t - 1`` after. A row whose thinking ends at ``</think>`` (or EOS) at index ``k`` uses step
        ``k`` (its last thinking token); a row cut by the cap uses the newest state computed.
        """
        assert self.confidence is not None
        idx = self.confidence.hidden_index(self.n_layers)
        picked = []
        for r, row in enumerate(rows):
            k = len(self._thinking_of(row))
            step = min(k, len(states) - 1)
            picked.append(states[step][idx][r, -1, :])
        return self.confidence(torch.stack(picked))  # (w,)

    def _thinking_of(self, gen: list[int]) -> list[int]:
        """The thinking of a generation: up to ``</think>`` (excluded) or its EOS."""
        out = []
        for t in gen:
            if t == self.fmt.think_close_id or t in self.fmt.eos_ids:
                break
            out.append(t)
        return out

