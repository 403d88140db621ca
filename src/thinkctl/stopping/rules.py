"""Per-row decisions to end a row's thinking: probe confidence, answer consistency, token confidence, deadlines.

Every rule is a :class:`StopRule`, usable in two ways:

* **inside** :class:`~thinkctl.stopping.BudgetForcing` (``BudgetForcing(tokenizer, stop_rules=[rule])``): when the
  rule fires for a row, BudgetForcing injects ``</think>`` + newline + answer prefix into that row, so the row ends
  with an answer. BudgetForcing drives the rule once per decoding step with its own thinking-token counts, so the
  order of hooks in the ``LogitsProcessorList`` does not matter. This is the usual way.
* **alone** as a ``transformers`` ``StoppingCriteria`` (``stopping_criteria=StoppingCriteriaList([rule])``): rows for
  which the rule fires finish at once, without a forced answer (DeepConf's early termination of low-confidence
  traces, or Dynasor's stop where the probed answer is the output).

A rule object holds the state of one generation at a time; use it in one of the two places, not both.

This module holds the base class and the rules on answers, token confidence and time; the hidden-state rule,
:class:`~thinkctl.stopping.ProbeStopping`, is in :mod:`thinkctl.stopping.probe_rule`.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch
from transformers import StoppingCriteria

from thinkctl.stopping.tracking import ThinkingTracker

__all__ = [
    "StopRule",
    "AnswerConsistencyStopping",
    "TokenConfidenceStopping",
    "DeadlineStopping",
    "RowBudgetStopping",
    "delimiter_token_ids",
]

logger = logging.getLogger(__name__)

#: Dynasor probes the model's answer every 32 generated tokens (Fu et al. 2024, "Efficiently Serving LLM Reasoning
#: Programs with Certaindex", probe-in-the-middle); thinkctl uses the same default interval for hidden-state probes.
DEFAULT_PROBE_EVERY = 32
#: Dynasor-CoT stops when the last 3 probed answers agree.
DEFAULT_CONSISTENCY_K = 3
#: DeepConf (Fu et al. 2025, "Deep Think with Confidence") averages token confidence over groups of 2048 tokens ...
DEFAULT_CONFIDENCE_WINDOW = 2048
#: ... and computes token confidence from the top-20 log-probabilities of each step.
DEFAULT_CONFIDENCE_TOP_K = 20


def delimiter_token_ids(tokenizer: Any, delimiters: Sequence[str | int]) -> list[int]:
    """Ids of every vocabulary token whose text contains one of ``delimiters`` (ints are taken as ids).

    Scans the vocabulary once (one ``batch_decode``), so ``"\\n"`` also matches ``".\\n"`` or ``"\\n\\n"`` tokens.

    Raises
    ------
    ValueError
        If a string delimiter is given without a tokenizer, or matches no token.
    """
    ids = {int(d) for d in delimiters if isinstance(d, (int, np.integer))}
    texts = [d for d in delimiters if isinstance(d, str)]
    if texts:
        if tokenizer is None:
            raise ValueError(f"delimiters={list(delimiters)!r} contains strings; pass tokenizer= to resolve them "
                             "or give token ids")
        vocab = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=False)
        for d in texts:
            if not d:
                raise ValueError("delimiters contains an empty string; use e.g. delimiters=('\\n',)")
            found = [i for i, t in enumerate(vocab) if d in t]
            if not found:
                raise ValueError(f"delimiter {d!r} appears in no token of this tokenizer; choose another delimiter")
            ids.update(found)
    return sorted(ids)


class StopRule(StoppingCriteria):
    """Base class of per-row decisions to end thinking (see the module docstring for the two ways to use one).

    Subclasses implement :meth:`_decide`, returning the rows that fire at this step; the base class keeps the
    decision sticky. Per-row bookkeeping is host-side Python (a few integers per row), as in
    :class:`~thinkctl.stopping.ThinkingTracker`.

    Parameters
    ----------
    tokenizer : PreTrainedTokenizerBase, optional
        Only needed when the rule is used alone as a ``StoppingCriteria`` and the model writes think markers: it
        lets the rule count thinking tokens (and ignore rows that are answering). Without it, every generated token
        counts.
    think_start, think_end : str or None
        Think markers (see :class:`~thinkctl.stopping.ThinkingTracker`).
    """

    def __init__(self, *, tokenizer: Any = None, think_start: str | None = "<think>",
                 think_end: str | None = "</think>") -> None:
        self._tracker = ThinkingTracker(tokenizer, think_start=think_start, think_end=think_end,
                                        includes_new_token=True)
        self._stop: list[bool] = []
        self._newest: Sequence[int] | None = None

    @property
    def stop(self) -> torch.Tensor:
        """torch.BoolTensor of shape (B,): rows for which the rule has fired in the current generation."""
        return torch.tensor(self._stop, dtype=torch.bool)

    def begin(self, input_ids: torch.Tensor) -> None:
        """Start a new generation for the batch in ``input_ids`` (shape (B, T)); resets per-row state."""
        self._stop = [False] * input_ids.shape[0]
        self._begin(input_ids)

    def _begin(self, input_ids: torch.Tensor) -> None:
        """Subclass hook: initialise per-row state."""

    def update(self, input_ids: torch.Tensor, scores: torch.Tensor | None, thinking: Sequence[bool],
               n_tokens: Sequence[int], *, newest: Sequence[int] | None = None) -> list[bool]:
        """Decide for this step.

        Parameters
        ----------
        input_ids : torch.LongTensor of shape (B, T)
        scores : torch.FloatTensor of shape (B, vocab) or None
            Next-token scores (inside BudgetForcing) or the scores of the newest token (alone, when ``generate``
            returns scores).
        thinking : sequence of bool, length B
            Rows still thinking.
        n_tokens : sequence of int, length B
            Thinking tokens produced so far per row.
        newest : sequence of int, length B, optional
            ``input_ids[:, -1]`` already on the host (BudgetForcing and the ``StoppingCriteria`` interface pass it,
            so a rule that reads the newest token does not copy it from the device again).

        Returns
        -------
        list of bool, length B
            Rows for which the rule has fired so far in this generation.
        """
        if len(self._stop) != input_ids.shape[0]:
            self.begin(input_ids)
        self._newest = newest
        fired = self._decide(input_ids, scores, thinking, n_tokens)
        if True in fired:
            stop = self._stop
            for r, f in enumerate(fired):
                if f:
                    stop[r] = True
        return list(self._stop)

    def _newest_tokens(self, input_ids: torch.Tensor) -> Sequence[int]:
        """The newest token of every row: the one given to :meth:`update`, else copied from ``input_ids``."""
        return self._newest if self._newest is not None else input_ids[:, -1].tolist()

    def _decide(self, input_ids: torch.Tensor, scores: torch.Tensor | None, thinking: Sequence[bool],
                n_tokens: Sequence[int]) -> list[bool]:
        raise NotImplementedError

    def __call__(self, input_ids: torch.Tensor, scores: Any = None, **kwargs: Any) -> torch.Tensor:
        """``StoppingCriteria`` interface: per-row "done" flags, shape (B,), bool, on the input's device."""
        tracker = self._tracker
        if tracker.update(input_ids):
            self.begin(input_ids)
        last = None
        if isinstance(scores, torch.Tensor):
            last = scores
        elif isinstance(scores, (tuple, list)) and len(scores) > 0:
            last = scores[-1]
        stop = self.update(input_ids, last, tracker.thinking, tracker.think_tokens, newest=tracker.newest_tokens)
        return torch.tensor(stop, dtype=torch.bool, device=input_ids.device)

    def reset(self) -> None:
        """Forget the current generation (the next call starts a new one)."""
        self._tracker.reset()
        self._stop = []


def _due(n_tokens: Sequence[int], thinking: Sequence[bool], stop: Sequence[bool], *, min_tokens: int,
         every: int | None = None, at: frozenset[int] = frozenset(), delimiter_ids: frozenset[int] = frozenset(),
         newest: Sequence[int] | None = None) -> list[int]:
    """Rows due for a probe: thinking, not stopped, past ``min_tokens`` (and past 0), and at a multiple of
    ``every`` thinking tokens, at a count listed in ``at``, or right after a delimiter token (``newest`` holds each
    row's newest token)."""
    lo = max(1, min_tokens)
    if False not in thinking and True not in stop and min(n_tokens, default=lo) >= lo:
        rows: list[int] = list(range(len(n_tokens)))  # the usual step: every row eligible (three C-level scans)
    else:
        rows = [r for r, (th, n, s) in enumerate(zip(thinking, n_tokens, stop)) if th and n >= lo and not s]
    if every == 1:
        return rows
    return [r for r in rows if (every is not None and n_tokens[r] % every == 0) or n_tokens[r] in at
            or (newest is not None and newest[r] in delimiter_ids)]


def _check_schedule(at: Sequence[int] | None) -> tuple[int, ...] | None:
    """``at`` as a tuple of strictly increasing positive ints (or None); a ValueError that says what is wrong."""
    if at is None:
        return None
    if isinstance(at, (str, bytes)) or not isinstance(at, (Sequence, np.ndarray)):
        raise ValueError(f"at={at!r} must be a sequence of thinking-token counts, e.g. at=(32, 64, 128, 256), "
                         "or None")
    values = list(at)
    if not values:
        raise ValueError("at=() is empty; pass thinking-token counts such as at=(32, 64, 128, 256), or at=None")
    for value in values:
        if not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_)) or value < 1:
            raise ValueError(f"at={values!r} contains {value!r}; every entry must be a positive int number of "
                             "thinking tokens")
    for prev, value in zip(values, values[1:]):
        if value <= prev:
            raise ValueError(f"at={values!r} is not strictly increasing ({prev} then {value}); "
                             "sort it and drop duplicates, e.g. at=(32, 64, 128, 256)")
    return tuple(int(v) for v in values)


class AnswerConsistencyStopping(StopRule):
    """Stop a row when the answers probed from it agree k times in a row (Dynasor's probe-in-the-middle).

    Every ``every`` thinking tokens, the row's text so far (prompt and generation, left padding removed, special
    tokens kept) goes to ``answer_fn``, which returns the answer the model would give if stopped there (e.g.
    :class:`~thinkctl.stopping.ForcedAnswerProber`, a short forced-answer generation). A row fires when its last
    ``k`` probed answers are equal and not ``None`` (Fu et al. 2024/2025, "Efficiently Serving LLM Reasoning
    Programs with Certaindex" / Dynasor-CoT).

    Parameters
    ----------
    answer_fn : callable
        ``answer_fn(text) -> answer`` or ``-> (answer, tokens_used)``; ``answer`` is a string or ``None`` (no answer
        yet). ``tokens_used`` (prefill plus generated tokens of the probe) is added to :attr:`probe_tokens`.
    tokenizer : PreTrainedTokenizerBase
        Decodes the rows.
    every : int, default=32
        Probe interval in thinking tokens.
    k : int, default=3
        Number of consecutive agreeing answers needed.
    min_tokens : int, default=0
        Never probe before this many thinking tokens.
    normalize : callable, optional
        Applied to answers before comparing; default strips whitespace.
    think_start, think_end
        See :class:`StopRule`.

    Attributes
    ----------
    history : list of list of (str or None)
        Probed answers per row.
    answers : list of (str or None)
        The agreed answer of rows that fired (``None`` otherwise).
    probe_tokens : torch.LongTensor of shape (B,)
        Tokens the probes processed per row (counts as compute).
    probes : torch.LongTensor of shape (B,)
    """

    def __init__(
        self,
        answer_fn: Callable[[str], Any],
        tokenizer: Any,
        every: int = DEFAULT_PROBE_EVERY,
        k: int = DEFAULT_CONSISTENCY_K,
        *,
        min_tokens: int = 0,
        normalize: Callable[[str], str] | None = None,
        think_start: str | None = "<think>",
        think_end: str | None = "</think>",
    ) -> None:
        if tokenizer is None:
            raise ValueError("tokenizer=None; AnswerConsistencyStopping needs the tokenizer to decode rows")
        super().__init__(tokenizer=tokenizer, think_start=think_start, think_end=think_end)
        if not callable(answer_fn):
            raise ValueError(f"answer_fn={answer_fn!r} must be callable: text -> answer or (answer, tokens)")
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every={every!r} must be a positive int (Dynasor probes every 32 tokens)")
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k={k!r} must be a positive int (Dynasor uses k=3)")
        if not isinstance(min_tokens, int) or min_tokens < 0:
            raise ValueError(f"min_tokens={min_tokens!r} must be a non-negative int")
        self.answer_fn = answer_fn
        self.tokenizer = tokenizer
        self.every = every
        self.k = k
        self.min_tokens = min_tokens
        self.normalize = normalize if normalize is not None else str.strip
        self.history: list[list[str | None]] = []
        self.answers: list[str | None] = []
        self._probe_tokens: list[int] = []
        self._probes: list[int] = []

    @property
    def probe_tokens(self) -> torch.Tensor:
        """torch.LongTensor of shape (B,): tokens the probes processed per row (counts as compute)."""
        return torch.tensor(self._probe_tokens, dtype=torch.long)

    @property
    def probes(self) -> torch.Tensor:
        """torch.LongTensor of shape (B,): number of probes per row."""
        return torch.tensor(self._probes, dtype=torch.long)

    def _begin(self, input_ids: torch.Tensor) -> None:
        b = input_ids.shape[0]
        self.history = [[] for _ in range(b)]
        self.answers = [None] * b
        self._probe_tokens = [0] * b
        self._probes = [0] * b

    def _row_text(self, row: torch.Tensor) -> str:
        pad = self.tokenizer.pad_token_id
        ids = row.tolist()
        start = 0
        if pad is not None:
            while start < len(ids) and ids[start] == pad:
                start += 1
        return self.tokenizer.decode(ids[start:], skip_special_tokens=False)

    def _decide(self, input_ids: torch.Tensor, scores: torch.Tensor | None, thinking: Sequence[bool],
                n_tokens: Sequence[int]) -> list[bool]:
        fire = [False] * input_ids.shape[0]
        for r in _due(n_tokens, thinking, self._stop, min_tokens=self.min_tokens, every=self.every):
            result = self.answer_fn(self._row_text(input_ids[r]))
            answer, used = result if isinstance(result, tuple) else (result, 0)
            answer = (self.normalize(answer) or None) if isinstance(answer, str) else None
            self.history[r].append(answer)
            self._probe_tokens[r] += int(used)
            self._probes[r] += 1
            last = self.history[r][-self.k:]
            if len(last) == self.k and last[0] is not None and all(a == last[0] for a in last):
                fire[r] = True
                self.answers[r] = last[0]
        return fire


class TokenConfidenceStopping(StopRule):
    """Stop a row when its sliding-window token confidence falls below a threshold (DeepConf online).

    Token confidence at a step is the negative mean of the top-``top_k`` log-probabilities of the next-token
    distribution (high = peaked = confident). The group confidence of a row is the mean token confidence over its
    last ``window`` thinking tokens; the row fires when the group confidence is below ``threshold`` (Fu et al.
    2025, "Deep Think with Confidence": the threshold comes from warm-up traces, e.g. a percentile of their lowest
    group confidence, see :attr:`lowest_group_confidence`).

    Needs the scores: inside BudgetForcing it gets them directly; alone as a ``StoppingCriteria``, call ``generate``
    with ``output_scores=True, return_dict_in_generate=True``. Scores are those after ``generate``'s own
    processors (temperature, top-k/top-p); filtered-out (``-inf``) entries are ignored in the mean.

    Parameters
    ----------
    threshold : float
        Group-confidence threshold (in nats; compare with :attr:`group_confidence` of warm-up runs).
    window : int, default=2048
        Group size in tokens (DeepConf).
    top_k : int, default=20
        Log-probabilities averaged per token (DeepConf).
    min_tokens : int, optional
        Do not fire before this many tokens are in the window; default ``window`` (only full groups, as DeepConf).
    tokenizer, think_start, think_end
        See :class:`StopRule`.

    Attributes
    ----------
    group_confidence : torch.FloatTensor of shape (B,)
        Current window mean per row (NaN before the first token).
    lowest_group_confidence : torch.FloatTensor of shape (B,)
        Lowest group confidence over full windows (``+inf`` until a window has ``min_tokens`` tokens).
    """

    def __init__(
        self,
        threshold: float,
        window: int = DEFAULT_CONFIDENCE_WINDOW,
        top_k: int = DEFAULT_CONFIDENCE_TOP_K,
        *,
        min_tokens: int | None = None,
        tokenizer: Any = None,
        think_start: str | None = "<think>",
        think_end: str | None = "</think>",
    ) -> None:
        super().__init__(tokenizer=tokenizer, think_start=think_start, think_end=think_end)
        if not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
            raise ValueError(f"threshold={threshold!r} must be a finite float (a group confidence in nats)")
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window={window!r} must be a positive int (DeepConf uses 2048)")
        if not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k={top_k!r} must be a positive int (DeepConf uses 20)")
        if min_tokens is None:
            min_tokens = window
        if not isinstance(min_tokens, int) or not 1 <= min_tokens <= window:
            raise ValueError(f"min_tokens={min_tokens!r} must be an int in 1..window={window}")
        self.threshold = float(threshold)
        self.window = window
        self.top_k = top_k
        self.min_tokens = min_tokens
        self._buf = torch.zeros(0, window)
        self._sum = torch.zeros(0, dtype=torch.float64)
        self._count = torch.zeros(0, dtype=torch.long)
        self.group_confidence = torch.zeros(0)
        self.lowest_group_confidence = torch.zeros(0)

    def _begin(self, input_ids: torch.Tensor) -> None:
        b, dev = input_ids.shape[0], input_ids.device
        self._buf = torch.zeros(b, self.window, device=dev)
        self._sum = torch.zeros(b, dtype=torch.float64, device=dev)
        self._count = torch.zeros(b, dtype=torch.long, device=dev)
        self.group_confidence = torch.full((b,), math.nan, device=dev)
        self.lowest_group_confidence = torch.full((b,), math.inf, device=dev)

    def token_confidence(self, scores: torch.Tensor) -> torch.Tensor:
        """Negative mean top-k log-probability of each row's distribution.

        Parameters
        ----------
        scores : torch.FloatTensor of shape (B, vocab)

        Returns
        -------
        torch.FloatTensor of shape (B,)
        """
        logp = torch.log_softmax(scores.float(), dim=-1)
        top = logp.topk(min(self.top_k, logp.shape[-1]), dim=-1).values  # (B, k)
        finite = torch.isfinite(top)
        total = torch.where(finite, top, 0.0).sum(dim=-1)
        return -total / finite.sum(dim=-1).clamp(min=1)

    def _decide(self, input_ids: torch.Tensor, scores: torch.Tensor | None, thinking: Sequence[bool],
                n_tokens: Sequence[int]) -> list[bool]:
        if scores is None:
            raise ValueError(
                "TokenConfidenceStopping needs the scores: pass it to BudgetForcing(stop_rules=[...]), or call "
                "generate(..., output_scores=True, return_dict_in_generate=True) when using it as a StoppingCriteria")
        conf = self.token_confidence(scores)  # (B,)
        upd = torch.tensor(list(thinking), dtype=torch.bool, device=conf.device)
        pos = (self._count % self.window)[:, None]  # (B, 1)
        old = self._buf.gather(1, pos).squeeze(1)
        self._sum = self._sum + torch.where(upd, conf.double() - old.double(), 0.0)
        self._buf = self._buf.scatter(1, pos, torch.where(upd, conf, old)[:, None])
        self._count = self._count + upd.long()
        filled = self._count.clamp(max=self.window)
        mean = (self._sum / filled.clamp(min=1)).float()
        self.group_confidence = torch.where(filled > 0, mean, self.group_confidence)
        full = upd & (filled >= self.min_tokens)
        self.lowest_group_confidence = torch.where(
            full, torch.minimum(self.lowest_group_confidence, mean), self.lowest_group_confidence)
        return (full & (mean < self.threshold)).tolist()


class DeadlineStopping(StopRule):
    """Stop every row once a wall-clock deadline has passed.

    The clock starts at construction and restarts at :meth:`reset`. Inside BudgetForcing every thinking row then
    gets its answer forced (a latency bound that still returns answers); alone it ends all rows.

    Parameters
    ----------
    seconds : float
        Time budget, > 0.
    clock : callable, default=time.monotonic
        Returns the current time in seconds (injectable for tests).

    Attributes
    ----------
    started_at : float
    """

    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(tokenizer=None)
        if not isinstance(seconds, (int, float)) or not seconds > 0 or not math.isfinite(seconds):
            raise ValueError(f"seconds={seconds!r} must be a positive finite number of seconds")
        self.seconds = float(seconds)
        self.clock = clock
        self.started_at = clock()

    @property
    def elapsed(self) -> float:
        """Seconds since the clock started."""
        return self.clock() - self.started_at

    def reset(self) -> None:
        """Restart the clock and forget the current generation."""
        super().reset()
        self.started_at = self.clock()

    def _decide(self, input_ids: torch.Tensor, scores: torch.Tensor | None, thinking: Sequence[bool],
                n_tokens: Sequence[int]) -> list[bool]:
        return [self.elapsed >= self.seconds] * input_ids.shape[0]


class RowBudgetStopping(StopRule):
    """Stop each row once it has thought its own budget: ``budgets[r]`` thinking tokens for row ``r`` (a per-row
    maximum inside one batch, where :class:`~thinkctl.stopping.BudgetForcing`'s ``max_tokens`` is one for all).

    Parameters
    ----------
    budgets : sequence of int
        Thinking tokens per row of the batch it will see, each >= 1.
    """

    def __init__(self, budgets: Sequence[int]) -> None:
        super().__init__(tokenizer=None)
        if not budgets or any(not isinstance(b, int) or isinstance(b, bool) or b < 1 for b in budgets):
            raise ValueError(f"budgets={list(budgets)!r} must be a non-empty list of integers >= 1, one per row")
        self.budgets = [int(b) for b in budgets]

    def _decide(self, input_ids: torch.Tensor, scores: torch.Tensor | None, thinking: Sequence[bool],
                n_tokens: Sequence[int]) -> list[bool]:
        if input_ids.shape[0] != len(self.budgets):
            raise ValueError(f"RowBudgetStopping has {len(self.budgets)} budgets for a batch of {input_ids.shape[0]} "
                             "rows; give one budget per row")
        return [n >= b for n, b in zip(n_tokens, self.budgets)]
