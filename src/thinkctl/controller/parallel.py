"""The parallel route: waves of samples branching off the shared prefill, stopped by the vote (or DeepConf's
consensus), answered by the (optionally confidence-weighted) majority or a scorer's best sample."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

import numpy as np

from thinkctl.controller.engine import Clock, Prefill
from thinkctl.controller.reasons import StopReason
from thinkctl.controller.result import ControllerResult
from thinkctl.controller.seeding import wave_index
from thinkctl.controller.serial import SerialRoute
from thinkctl.voting import VoteTally

__all__ = ["ParallelRoute", "DeepConfOnline", "Scorer", "StopRuleLike"]

#: A vote stopping rule: ``should_stop(tally, budget) -> bool`` (see :mod:`thinkctl.voting`).
StopRuleLike = Any
#: A scorer (ORM / PRM): ``scorer(prompt, text) -> float``, higher is better; scores a full or partial solution.
Scorer = Callable[[str, str], float]


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


class ParallelRoute(SerialRoute):
    """Parallel sampling on top of the serial route (which forces an answer when no sample votes)."""

    def _parallel(self, pre: Prefill, rows: list[int], clock: Clock, *, rule: StopRuleLike | None,
                  budgets: list[int], name: str, traces: list[list[dict[str, Any]]], chunk: int,
                  scorer: Scorer | str | None = None, weighted: bool | None = None,
                  deepconf: "DeepConfOnline | None" = None, wave_size: int | None = None,
                  seeds: Sequence[ControllerResult] | None = None) -> list[ControllerResult]:
        """Waves of samples per prompt branching off the shared prefill, until each prompt's vote is settled.

        ``seeds`` (one per row) are answers already given (the serial route's, when it escalates): each counts as
        the vote's first, within ``budgets``, and keeps its text when it leads; its tokens are the caller's."""
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
        status = [StopReason.BUDGET.value] * k_rows
        active = list(range(k_rows))
        low: list[float] | None = [-math.inf] * k_rows if deepconf is not None else None
        for k, seed in enumerate(seeds or ()):
            tallies[k].add(seed.answer or None)
            if weighted and seed.answer:
                wtallies[k].add(seed.answer, max(0.0, seed.confidence))
        wave = 0
        while active:
            if clock.expired():
                for k in active:
                    status[k] = StopReason.DEADLINE.value
                break
            warm = deepconf is not None and wave == 0
            first = min(deepconf.warmup, size) if warm else size  # type: ignore[union-attr]
            plan = [(k, min(first, budgets[k] - tallies[k].n_seen)) for k in active]
            flat = [rows[k] for k, w in plan for _ in range(w)]
            out = self._run_rows(pre, flat, sample=True, cap=cfg.token_cap, clock=clock,
                                 seed=wave_index(chunk, wave), read_end=read_end,
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
                    status[k] = StopReason.SETTLED.value
                    continue
                still.append(k)
            active = still
        results: list[ControllerResult | None] = [None] * k_rows
        forced = []
        for k in range(k_rows):
            trace = traces[k]
            leader: Hashable | None
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
            if seeds is not None:
                if first == 0:  # the seed leads: its text answers
                    results[k] = self._result(pre, rows[k], [], generated[k], share, trace, name,
                                              tallies[k].n_seen, answer=str(leader), text=seeds[k].text,
                                              thinking=thinking[k])
                    continue
                first -= 1
            results[k] = self._result(pre, rows[k], gens[k][first], generated[k], share, trace, name,
                                      tallies[k].n_seen, answer=str(leader), text=texts[k][first],
                                      thinking=thinking[k])
        if forced:
            # nobody voted (every sample failed to answer, or the deadline came first): one greedy forced answer
            sub = [traces[k] for k in forced]
            for t in sub:
                t.append({"event": "stop", "reason": StopReason.NO_VOTES.value})
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
