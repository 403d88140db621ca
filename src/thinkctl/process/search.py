"""Step-level search guided by a step scorer: beam search and diverse verifier tree search (DVTS).

Both follow search-and-learn (Beeching, Tunstall & Rush 2024; DVTS from the same work), with the model's thinking
cut into steps at line breaks:

* **beam search** (``beam``): N candidates per round. Each round extends every kept beam by one sampled step
  (``beam_width`` = M samples per beam; N samples from the prompt in the first round), scores every candidate's
  steps with the scorer, aggregates them (``min`` by default: a prefix is as good as its weakest step), and keeps
  the N / M best unfinished candidates; candidates whose thinking ended leave the beam as finished solutions, and
  the search ends when N solutions are finished or no beam is left.
* **DVTS** (``dvts``): N / M independent subtrees. Each round extends each subtree's single beam by M sampled steps
  and keeps the best one, so the subtrees stay diverse where beam search would collapse onto one prefix.
* **pruned sampling** (``prune``): N independent samples, generated step by step; a sample whose aggregated step
  score falls below ``SearchConfig.prune_below`` is abandoned there (its remaining steps and its answer are never
  generated), except a problem's last live sample, which always goes on so that every problem gets an answer.
  The threshold comes from :func:`thinkctl.process.pruning.certify_pruning` (Learn-then-Test); with
  ``prune_below=None`` nothing is pruned and the trace records every sample's score after every step, which is
  what the certification reads.

Finished solutions vote for their answers with their aggregated scores as weights (search-and-learn's weighted
best-of-N); the confidence is the winner's share of the weight. Every generated token counts: every candidate's
steps (kept or not), the tokens that force an answer when the thinking budget runs out, and the answers. A prefix
is re-read from scratch for every step (no cache is shared between rounds): that costs time, not counted tokens.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from thinkctl.generation import ReasoningFormat, generate_from_prefixes
from thinkctl.process.scoring import AGGREGATIONS, StepScorer, aggregate, check_step_scores, split_steps
from thinkctl.registry import Registry
from thinkctl.seeds import torch_seed
from thinkctl.tasks.base import ANSWER_PREFIX, Problem, Task

__all__ = ["SearchConfig", "SearchResult", "step_search", "SEARCH_METHODS", "BEAM_WIDTH", "SEARCH_TEMPERATURE"]

logger = logging.getLogger(__name__)

#: Samples per beam and round (search-and-learn's default beam width).
BEAM_WIDTH = 4
#: Sampling temperature of the steps (search-and-learn's default).
SEARCH_TEMPERATURE = 0.8

#: Search methods by name: ``beam`` and ``dvts`` (the value is unused; the registry lists and checks names).
SEARCH_METHODS: Registry[str] = Registry("search method")
SEARCH_METHODS.add("beam", "beam search over steps")
SEARCH_METHODS.add("dvts", "diverse verifier tree search")
SEARCH_METHODS.add("prune", "independent samples pruned at a process-score threshold")


@dataclass(frozen=True)
class SearchConfig:
    """Settings of :func:`step_search`.

    Attributes
    ----------
    n : int
        N: candidates per round (beam search) or in all (DVTS: N / M subtrees of M); a multiple of ``beam_width``.
    beam_width : int, default=4
        M: sampled continuations of each beam per round.
    max_step_tokens : int, default=48
        A step ends at a line break, the end of thinking or this many tokens.
    max_thinking_tokens : int, default=384
        Thinking budget of one candidate; past it the answer is forced.
    max_answer_tokens : int, default=16
        Tokens for the answer after the thinking.
    temperature, top_p : float
        Sampling of the steps.
    aggregation : str, default="min"
        How step scores make a candidate's score (:data:`~thinkctl.process.scoring.AGGREGATIONS`).
    stop_score : float or None, default=None
        End a problem's search as soon as a finished solution scores at least this (e.g. 1.0 with the exact
        checker: a solution whose every step is verified); None: search on as described above.
    prune_below : float or None, default=None
        ``prune`` method only: abandon a sample once its aggregated score is below this; None: never.
    seed : int, default=0
        Seed of the sampling and of the tie-breaking.
    batch_size : int, default=64
        Rows per ``generate`` call.
    """

    n: int
    beam_width: int = BEAM_WIDTH
    max_step_tokens: int = 48
    max_thinking_tokens: int = 384
    max_answer_tokens: int = 16
    temperature: float = SEARCH_TEMPERATURE
    top_p: float = 1.0
    aggregation: str = "min"
    stop_score: float | None = None
    prune_below: float | None = None
    seed: int = 0
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.beam_width < 1 or self.n < self.beam_width or self.n % self.beam_width:
            raise ValueError(f"n={self.n} must be a positive multiple of beam_width={self.beam_width} (e.g. "
                             f"n={4 * self.beam_width})")
        for name in ("max_step_tokens", "max_thinking_tokens", "max_answer_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature} must be positive (steps are sampled)")
        AGGREGATIONS.get(self.aggregation)
        if self.prune_below is not None and not math.isfinite(self.prune_below):
            raise ValueError(f"prune_below={self.prune_below} must be a finite score threshold, or None")


@dataclass
class SearchResult:
    """The outcome of a search for one problem (fields as in the controller's results)."""

    answer: str
    text: str
    confidence: float
    tokens: int
    samples: int
    thinking_tokens: int
    trace: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Beam:
    ids: list[int]                # generated so far (thinking, then possibly the end of thinking and the answer)
    thinking: int                 # thinking tokens among ids
    score: float = 1.0
    done: bool = False            # thinking ended (or forced): only the answer remains
    forced: bool = False
    subtree: int = 0
    history: list[float] = field(default_factory=list)   # aggregated score after each step
    lengths: list[int] = field(default_factory=list)     # generated tokens after each step


@dataclass
class _State:
    problem: Problem
    prefix: list[int]
    beams: list[_Beam]
    finished: list[_Beam] = field(default_factory=list)
    tokens: int = 0
    thinking_tokens: int = 0
    samples: int = 0
    rounds: int = 0
    pruned: list[_Beam] = field(default_factory=list)


_LINE_BREAK_IDS: dict[int, tuple[int, ...]] = {}


def _line_break_ids(tokenizer: Any) -> tuple[int, ...]:
    """Every token whose text holds a line break (a step boundary), computed once per tokenizer."""
    key = id(tokenizer)
    if key not in _LINE_BREAK_IDS:
        vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
        ids = [int(i) for i in vocab.values() if "\n" in tokenizer.decode([int(i)])]
        _LINE_BREAK_IDS[key] = tuple(sorted(ids))
    return _LINE_BREAK_IDS[key]


def _thinking_text(tokenizer: Any, fmt: ReasoningFormat, ids: Sequence[int]) -> str:
    text = tokenizer.decode(list(ids), skip_special_tokens=True)
    if not fmt.thinks_in_markers:
        pos = text.find(ANSWER_PREFIX)
        return text if pos < 0 else text[:pos]
    return text


def _ended(fmt: ReasoningFormat, tokenizer: Any, new: Sequence[int]) -> bool:
    if fmt.think_close_id is not None and fmt.think_close_id in new:
        return True
    if any(t in fmt.eos_ids for t in new):
        return True
    return not fmt.thinks_in_markers and ANSWER_PREFIX in tokenizer.decode(list(new), skip_special_tokens=True)


def _score(scorer: StepScorer, tokenizer: Any, fmt: ReasoningFormat, st: _State, beam: _Beam, how: str) -> float:
    thinking_ids = beam.ids[:beam.thinking]
    steps = split_steps(_thinking_text(tokenizer, fmt, thinking_ids))
    if not steps:
        return 1.0
    scores = check_step_scores(scorer.score(st.problem, steps), len(steps), f"step scorer {scorer.name!r}")
    return aggregate(scores, how)


def step_search(model: Any, tokenizer: Any, fmt: ReasoningFormat, task: Task, problems: Sequence[Problem],
                prefixes: Sequence[Sequence[int]], scorer: StepScorer, cfg: SearchConfig, *,
                method: str = "beam") -> list[SearchResult]:
    """Beam search or DVTS over thinking steps for each problem; see the module docstring.

    Parameters
    ----------
    model, tokenizer : the causal LM and its tokenizer
    fmt : ReasoningFormat
        From :func:`thinkctl.generation.reasoning_format`.
    task : Task
        Extracts the answers.
    problems : sequence of Problem
    prefixes : sequence of token-id lists
        The prompt of each problem as the model sees it (chat template included).
    scorer : StepScorer
    cfg : SearchConfig
    method : {"beam", "dvts"}

    Returns
    -------
    list of SearchResult, one per problem.
    """
    SEARCH_METHODS.get(method)
    if len(problems) != len(prefixes):
        raise ValueError(f"{len(problems)} problems but {len(prefixes)} prefixes; pass one prefix per problem")
    m = 1 if method == "prune" else cfg.beam_width
    n_keep = cfg.n // m
    states = [_State(problem=p, prefix=list(x),
                     beams=[_Beam(ids=[], thinking=0, subtree=k)
                            for k in range(n_keep if method in ("dvts", "prune") else 1)])
              for p, x in zip(problems, prefixes)]
    stop_ids = tuple(sorted(set(fmt.eos_ids) | set(_line_break_ids(tokenizer))
                            | ({fmt.think_close_id} if fmt.think_close_id is not None else set())))
    rng = np.random.default_rng(cfg.seed)
    round_ = 0
    while any(st.beams for st in states):
        # 1. expand: every active beam gets M sampled steps (beam search's first round: N from the prompt)
        jobs: list[tuple[_State, _Beam]] = []
        for st in states:
            for beam in st.beams:
                copies = cfg.n if (method == "beam" and st.rounds == 0) else m
                jobs.extend((st, beam) for _ in range(copies))
        budget = [cfg.max_thinking_tokens - beam.thinking for _, beam in jobs]
        outs = generate_from_prefixes(model, [st.prefix + beam.ids for st, beam in jobs], pad_id=fmt.pad_id,
                                      eos_ids=stop_ids, max_new_tokens=min(cfg.max_step_tokens, max(budget)),
                                      do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p,
                                      batch_size=cfg.batch_size, seed=torch_seed(cfg.seed * 7919 + round_))
        candidates: dict[int, list[_Beam]] = {}
        for (st, beam), new, left in zip(jobs, outs, budget):
            new = list(new[:left])
            st.tokens += len(new)
            st.samples += 1 if not beam.ids else 0
            ended = _ended(fmt, tokenizer, new)
            think_new = len(new)
            if ended and fmt.think_close_id is not None and fmt.think_close_id in new:
                think_new = new.index(fmt.think_close_id)
            st.thinking_tokens += think_new
            cand = _Beam(ids=beam.ids + new, thinking=beam.thinking + think_new, subtree=beam.subtree, done=ended)
            if not ended and cand.thinking >= cfg.max_thinking_tokens:
                cand.done, cand.forced = True, True
            cand.score = _score(scorer, tokenizer, fmt, st, cand, cfg.aggregation)
            cand.history = beam.history + [round(float(cand.score), 6)]
            cand.lengths = beam.lengths + [len(cand.ids)]
            candidates.setdefault(id(st), []).append(cand)
        # 2. select
        for st in states:
            cands = candidates.get(id(st), [])
            st.rounds += 1
            order = rng.permutation(len(cands))  # random tie-breaking among equal scores
            ranked = sorted((cands[i] for i in order), key=lambda b: -b.score)
            if method == "beam":
                st.finished.extend(b for b in ranked if b.done)
                # N / M beams go on until N solutions are finished (search-and-learn)
                st.beams = [b for b in ranked if not b.done][:n_keep] if len(st.finished) < cfg.n else []
            elif method == "prune":
                _prune(st, cands, cfg.prune_below)
            else:
                best: dict[int, _Beam] = {}
                for b in ranked:
                    best.setdefault(b.subtree, b)
                st.finished.extend(b for b in best.values() if b.done)
                st.beams = [b for b in best.values() if not b.done]
            if cfg.stop_score is not None and any(b.score >= cfg.stop_score for b in st.finished):
                st.beams = []
        round_ += 1
    return _answer(model, tokenizer, fmt, task, states, cfg, method)


def _prune(st: _State, cands: list[_Beam], below: float | None) -> None:
    """One round of pruned sampling for one problem: candidates below ``below`` are abandoned, unless that would
    leave the problem with no sample at all (then the best-scoring one goes on); the rest finish or go on."""
    low: list[_Beam] = []
    keep: list[_Beam] = []
    for b in cands:
        (low if below is not None and not b.score >= below else keep).append(b)
    if not keep and not st.finished and low:
        best = max(low, key=lambda b: b.score if math.isfinite(b.score) else -math.inf)
        low = [b for b in low if b is not best]
        keep = [best]
    st.pruned.extend(low)
    st.finished.extend(b for b in keep if b.done)
    st.beams = sorted((b for b in keep if not b.done), key=lambda b: b.subtree)


def _answer(model: Any, tokenizer: Any, fmt: ReasoningFormat, task: Task, states: Sequence[_State],
            cfg: SearchConfig, method: str) -> list[SearchResult]:
    """Let every finished candidate answer (greedily; forced where the budget ran out), then vote by score."""
    jobs: list[tuple[_State, _Beam, list[int]]] = []
    for st in states:
        for b in st.finished:
            tail = b.ids[b.thinking:]
            if b.forced or (fmt.think_close_id is not None and fmt.think_close_id not in tail):
                extra = list(fmt.force_answer_ids)
            else:
                extra = []
            if any(t in fmt.eos_ids for t in tail):
                continue
            st.tokens += len(extra)
            jobs.append((st, b, extra))
    if jobs:
        outs = generate_from_prefixes(model, [st.prefix + b.ids + extra for st, b, extra in jobs], pad_id=fmt.pad_id,
                                      eos_ids=fmt.eos_ids, max_new_tokens=cfg.max_answer_tokens,
                                      batch_size=cfg.batch_size)
        for (st, b, extra), new in zip(jobs, outs):
            st.tokens += len(new)
            b.ids = b.ids + extra + list(new)
    results = []
    for st in states:
        weights: dict[str, float] = {}
        texts: dict[str, str] = {}
        branches: list[dict[str, Any]] = []
        for b in st.finished:
            text = tokenizer.decode(b.ids, skip_special_tokens=True)
            answer = task.extract_answer(text)
            branches.append({"subtree": b.subtree, "scores": b.history, "lengths": b.lengths, "answer": answer,
                             "pruned": False})
            if answer is None:
                continue
            w = b.score if math.isfinite(b.score) else 0.0
            weights[answer] = weights.get(answer, 0.0) + max(w, 0.0)
            texts.setdefault(answer, text)
        total = sum(weights.values())
        if weights:
            winner = max(weights, key=lambda a: (weights[a], -list(weights).index(a)))
            conf = weights[winner] / total if total > 0 else 1.0 / len(weights)
        else:
            winner, conf = "", 0.0
        branches.extend({"subtree": b.subtree, "scores": b.history, "lengths": b.lengths, "answer": None,
                         "pruned": True} for b in st.pruned)
        event: dict[str, Any] = {"event": "search", "method": method, "n": cfg.n,
                                 "beam_width": 1 if method == "prune" else cfg.beam_width, "rounds": st.rounds,
                                 "finished": len(st.finished),
                                 "scores": [round(float(b.score), 4) for b in st.finished]}
        if method == "prune":
            event.update(prune_below=cfg.prune_below, pruned=len(st.pruned),
                         branches=sorted(branches, key=lambda d: d["subtree"]))
        results.append(SearchResult(
            answer=winner, text=texts.get(winner, ""), confidence=float(conf), tokens=st.tokens,
            samples=st.samples, thinking_tokens=st.thinking_tokens,
            trace=[event, {"event": "vote", "weights": weights}]))
    return results
