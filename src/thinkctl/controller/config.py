"""The controller's configuration: budgets, sampling, routing thresholds and the latency bound."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["ControllerConfig", "STRATEGY_KINDS",
           "TOKEN_CAP", "INITIAL_BUDGET", "BUDGET_FACTOR", "MAX_ANSWER_TOKENS", "MAX_SAMPLES", "WAVE_SIZE",
           "TEMPERATURE", "EASY_CAP", "EASY_ABOVE", "HARD_BELOW", "PROMPT_BATCH", "MAX_ROWS", "CONFIDENCE_WINDOW",
           "CONFIDENCE_TOP_K"]

#: Strategies the router may choose between.
STRATEGY_KINDS = ("easy", "serial", "parallel")

#: Generated tokens per query (thinking + forced answer marker + answer), per sample. 1024 is the largest budget of
#: the s1 budget-forcing sweeps that fits a 2-core CPU evaluation (Muennighoff et al. 2025, arXiv:2501.19393, Fig. 3,
#: budgets 512..8192 on 32B models; scaled down to the embedded model's traces, which close thinking well below it).
TOKEN_CAP = 1024
#: First thinking budget B0; the schedule is B0 * factor**k (search-and-learn's powers-of-two budget sweeps,
#: github.com/huggingface/search-and-learn; and the doubling "thinking budget" schedule of s1's budget sweeps).
INITIAL_BUDGET = 64
#: Budget growth per step: doubling, so that the total work is at most twice that of the final budget.
BUDGET_FACTOR = 2
#: Greedy answer tokens after the forced ``</think>\nFinal Answer:`` (the trace collector's default answer length).
MAX_ANSWER_TOKENS = 16
#: Parallel samples at most: ESC's and ASC's published budget (``sc_num = 40``, ``AC(max_gens=40)``; see
#: :mod:`thinkctl.voting`).
MAX_SAMPLES = 40
#: Samples per wave: ESC's published window (``slice_ in [5]``), so that a wave is one ESC window.
WAVE_SIZE = 5
#: Sampling temperature of parallel samples (self-consistency's setting, Wang et al. 2023, arXiv:2203.11171, T=0.7).
TEMPERATURE = 0.7
#: Token cap of the "easy" route (one short answer): two initial budgets (thinking B0, then a forced answer).
EASY_CAP = 2 * INITIAL_BUDGET + MAX_ANSWER_TOKENS + 16
#: Prompts prefilled and routed together (one shared KV cache per batch of prompts).
PROMPT_BATCH = 32
#: Most rows (prompts x samples) per ``model.generate`` call.
MAX_ROWS = 256
#: DeepConf's sliding window of token confidences, scaled to short traces (the paper uses 2048 tokens on traces of
#: 10k+; Fu et al. 2025, arXiv:2508.15260).
CONFIDENCE_WINDOW = 32
#: Log-probabilities averaged per token in DeepConf's token confidence (the paper's k = 20).
CONFIDENCE_TOP_K = 20
#: Routing thresholds on the calibrated P(one sample solves the query). Placeholders chosen symmetric around 1/2
#: (an even split of the probability scale into three routes); they are config fields precisely because the fitted
#: routing table (from traces: which strategy has the best accuracy per token at each difficulty) replaces them.
EASY_ABOVE = 0.8
HARD_BELOW = 0.2


@dataclass(frozen=True)
class ControllerConfig:
    """How much an :class:`~thinkctl.controller.AdaptiveController` may think, sample and wait.

    Parameters
    ----------
    token_cap : int
        Most generated tokens per query and per sample: thinking + forced answer marker + answer.
    initial_budget : int
        First thinking budget ``B0``.
    budget_factor : int
        Growth of the thinking budget per step (``B0, f*B0, f**2*B0, ...``).
    max_budget : int or None
        Largest thinking budget; None: as much as ``token_cap`` leaves after the forced answer.
    check_points : tuple of int
        Explicit thinking budgets at which confidence is read (strictly increasing); empty: the geometric schedule.
    max_answer_tokens : int
        Greedy answer tokens after the forced answer marker.
    max_samples : int
        ``N``, the most parallel samples per query.
    wave_size : int
        Samples drawn per wave (one shared prefill per query, each wave branches off it).
    temperature : float
        Sampling temperature of parallel samples; serial thinking is greedy.
    deadline_s : float or None
        Wall-clock bound of one ``generate`` call, all prompts together; None: no deadline.
    strategies : tuple of str
        Routes the router may take, among ``"easy"``, ``"serial"``, ``"parallel"``.
    easy_above, hard_below : float
        Routing thresholds on the difficulty predictor's P(solve): ``>= easy_above`` -> easy, ``< hard_below`` ->
        parallel, otherwise serial. These are placeholders until the routing table is fitted from traces.
    easy_cap : int
        ``token_cap`` of the easy route.
    prompt_batch : int
        Prompts prefilled, routed and generated together.
    max_rows : int
        Most rows (prompts x samples) in one ``model.generate`` call.
    confidence_window : int
        Sliding window (tokens) of DeepConf's group confidence.
    confidence_top_k : int
        Top log-probabilities averaged in DeepConf's token confidence.
    weighted_vote : bool
        Weight each parallel sample's vote by the calibrated confidence predictor at the end of its thinking
        (needs a confidence predictor; costs no extra tokens, but keeps every layer's hidden states of a wave
        in memory while it is generated).
    seed : int
        Seed of parallel sampling (per prompt and wave).
    """

    token_cap: int = TOKEN_CAP
    initial_budget: int = INITIAL_BUDGET
    budget_factor: int = BUDGET_FACTOR
    max_budget: int | None = None
    check_points: tuple[int, ...] = ()
    max_answer_tokens: int = MAX_ANSWER_TOKENS
    max_samples: int = MAX_SAMPLES
    wave_size: int = WAVE_SIZE
    temperature: float = TEMPERATURE
    deadline_s: float | None = None
    strategies: tuple[str, ...] = STRATEGY_KINDS
    easy_above: float = EASY_ABOVE
    hard_below: float = HARD_BELOW
    easy_cap: int = EASY_CAP
    prompt_batch: int = PROMPT_BATCH
    max_rows: int = MAX_ROWS
    confidence_window: int = CONFIDENCE_WINDOW
    confidence_top_k: int = CONFIDENCE_TOP_K
    weighted_vote: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("token_cap", "initial_budget", "budget_factor", "max_answer_tokens", "max_samples",
                     "wave_size", "easy_cap", "prompt_batch", "max_rows", "confidence_window",
                     "confidence_top_k"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}={v!r} must be an integer >= 1")
        if self.budget_factor < 2:
            raise ValueError(f"budget_factor={self.budget_factor} must be >= 2 so that budgets grow; use "
                             "check_points=(B,) for a single fixed budget")
        if self.max_answer_tokens >= self.token_cap:
            raise ValueError(f"max_answer_tokens={self.max_answer_tokens} must be < token_cap={self.token_cap}: the "
                             "cap must leave room for thinking; raise token_cap or lower max_answer_tokens")
        if self.initial_budget >= self.token_cap:
            raise ValueError(f"initial_budget={self.initial_budget} must be < token_cap={self.token_cap}; the "
                             "forced answer needs room inside the cap")
        if self.max_budget is not None and not (isinstance(self.max_budget, int) and
                                                self.initial_budget <= self.max_budget < self.token_cap):
            raise ValueError(f"max_budget={self.max_budget!r} must be an integer in [initial_budget="
                             f"{self.initial_budget}, token_cap={self.token_cap}) or None")
        cps = tuple(self.check_points)
        if cps and (any(not isinstance(c, int) or c < 1 for c in cps) or any(b <= a for a, b in zip(cps, cps[1:]))):
            raise ValueError(f"check_points={cps!r} must be strictly increasing positive integers, e.g. (64, 128, 256)")
        if cps and cps[-1] >= self.token_cap:
            raise ValueError(f"check_points end at {cps[-1]} >= token_cap={self.token_cap}; the forced answer needs "
                             "room inside the cap")
        if self.wave_size > self.max_samples:
            raise ValueError(f"wave_size={self.wave_size} exceeds max_samples={self.max_samples}; a wave cannot be "
                             "larger than the sample budget")
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
                and self.temperature > 0):
            raise ValueError(f"temperature={self.temperature!r} must be a finite number > 0 (parallel samples are "
                             "sampled; serial thinking is greedy)")
        if self.deadline_s is not None and not (math.isfinite(self.deadline_s) and self.deadline_s > 0):
            raise ValueError(f"deadline_s={self.deadline_s!r} must be a positive number of seconds or None")
        unknown = [s for s in self.strategies if s not in STRATEGY_KINDS]
        if unknown or not self.strategies:
            raise ValueError(f"strategies={self.strategies!r} must be a non-empty subset of {STRATEGY_KINDS}")
        if not 0 <= self.hard_below <= self.easy_above <= 1:
            raise ValueError(f"hard_below={self.hard_below} and easy_above={self.easy_above} must satisfy "
                             "0 <= hard_below <= easy_above <= 1")
        if self.easy_cap > self.token_cap or self.easy_cap <= self.max_answer_tokens:
            raise ValueError(f"easy_cap={self.easy_cap} must lie in (max_answer_tokens={self.max_answer_tokens}, "
                             f"token_cap={self.token_cap}]")

    def thinking_cap(self, cap: int, marker_tokens: int) -> int:
        """Thinking tokens a per-sample ``cap`` leaves once the forced answer marker (``marker_tokens`` long),
        ``max_answer_tokens`` answer tokens and the forced EOS are set aside."""
        return cap - marker_tokens - self.max_answer_tokens - 1

    def budgets(self, thinking_cap: int) -> list[int]:
        """Thinking budgets at which the controller reads its confidence, ending exactly at the usable cap.

        ``thinking_cap`` is what the token cap leaves for thinking after the forced answer.
        """
        limit = thinking_cap if self.max_budget is None else min(thinking_cap, self.max_budget)
        if limit < 1:
            return []
        if self.check_points:
            out = [c for c in self.check_points if c < limit]
        else:
            out, b = [], self.initial_budget
            while b < limit:
                out.append(b)
                b *= self.budget_factor
        return out + [limit]
