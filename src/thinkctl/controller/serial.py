"""The serial route: greedy thinking that reads the certified stop score at its schedule and forces the answer once
the score reaches the threshold, at the cap, or at the deadline (budget doubling inside one generation)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from thinkctl.controller.doubling import WAIT_TEXT, Doubling
from thinkctl.controller.engine import Clock, GenerationEngine, Prefill, Rows
from thinkctl.controller.reasons import StopReason
from thinkctl.controller.result import ControllerResult
from thinkctl.generation import chat_prefix
from thinkctl.stopping.rules import StopRule

__all__ = ["SerialRoute", "Continuation"]


@dataclass
class Continuation:
    """Thinking continued after "Wait" (:meth:`SerialRoute.continue_after_wait`): ``gen`` the tokens generated
    after the given thinking ("Wait" included), ``text`` the whole output from the start of the thinking,
    ``thinking`` the thinking tokens in all, ``generated`` the tokens this continuation generated, ``budget`` the
    thinking tokens it was allowed after "Wait"."""

    gen: list[int]
    text: str
    answer: str | None
    thinking: int
    generated: int
    reason: str
    end_confidence: float
    budget: int

logger = logging.getLogger(__name__)


class SerialRoute(GenerationEngine):
    """Serial thinking on top of :class:`~thinkctl.controller.engine.GenerationEngine`."""

    _warned_schedule: bool
    doubling: Doubling | None

    def _serial(self, pre: Prefill, rows: list[int], clock: Clock, *, budgets: Sequence[int] | None,
                use_confidence: bool, cap: int, name: str, traces: list[list[dict[str, Any]]],
                extra_rules: Callable[[], list[StopRule]] | None = None, double: bool = False
                ) -> list[ControllerResult]:
        cfg = self.config
        tcap = self._thinking_cap(cap)
        conf_pred = self.confidence if use_confidence else None
        certified = conf_pred.certified_at if conf_pred is not None else None
        if budgets is not None:
            plan = sorted({min(int(b), tcap) for b in budgets})
            cap = min(cap, plan[-1] + (cap - tcap))
        elif certified and not cfg.check_points and cfg.max_budget is None:
            # read where the threshold was certified (reading is free: a probe on the tapped state)
            plan = [c for c in certified if c < tcap] + [tcap] if tcap >= 1 else []
        else:
            plan = cfg.budgets(tcap)
            cap = min(cap, plan[-1] + (cap - tcap)) if plan else cap
        probe_at = plan[:-1] if conf_pred is not None else []  # the last budget is the cap: thinking ends there
        threshold = conf_pred.threshold if conf_pred is not None else None
        if threshold is not None and certified is not None and not self._warned_schedule:
            outside = sorted(set(probe_at) - set(certified))
            if outside:
                self._warned_schedule = True
                logger.warning("the stop threshold %.3f was certified at thinking budgets %s, but this controller also "
                               "reads its confidence at %s: the Learn-then-Test guarantee does not cover those "
                               "(recalibrate with `thinkctl calibrate --check-points`)", threshold,
                               list(certified[:6]), outside)
        out = self._run_rows(pre, rows, sample=False, cap=cap, clock=clock, probe_at=probe_at, threshold=threshold,
                             read_end=conf_pred is not None, extra_rules=extra_rules)
        if double and self.doubling is not None and conf_pred is not None:
            self._double(pre, rows, out, cap, clock, traces)
        results = []
        for k, i in enumerate(rows):
            trace = traces[k]
            for t, c in out.probes[k]:
                trace.append({"event": "probe", "thinking_tokens": t, "score": c, "threshold": threshold})
            if self.outlook is None and out.reasons[k] == StopReason.CONFIDENT and out.probes[k]:
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

    def _double(self, pre: Prefill, rows: list[int], out: Rows, cap: int, clock: Clock,
                traces: list[list[dict[str, Any]]]) -> None:
        """Budget doubling: the rows whose model ended its thinking itself with a confidence below the doubling
        threshold think again after "Wait" (:meth:`continue_after_wait`); ``out`` is updated in place, the replaced
        ending (closing marker and answer) still counted as generated."""
        assert self.doubling is not None
        own_end = (StopReason.CLOSED.value, StopReason.EOS.value)
        todo = [k for k in range(len(rows))
                if out.reasons[k] in own_end and self.doubling.doubles(out.end_confidence[k])]
        if not todo:
            return
        conts = self.continue_after_wait([pre.prompts[rows[k]] for k in todo],
                                         [out.gen[k][:out.thinking[k]] for k in todo], cap=cap, clock=clock)
        for k, cont in zip(todo, conts):
            if cont is None:
                continue
            n = out.thinking[k]
            traces[k].append({"event": "double", "confidence": out.end_confidence[k], "below": self.doubling.below,
                              "thinking_tokens": n, "budget": cont.budget})
            out.extra_tokens[k] += len(out.gen[k]) - n + 1  # the replaced ending, and the token fed again
            out.gen[k] = out.gen[k][:n] + cont.gen
            out.thinking[k] = cont.thinking
            out.reasons[k] = cont.reason
            out.end_confidence[k] = cont.end_confidence

    def _wait_ids(self) -> list[int]:
        """The tokens of "Wait" as written in place of the end of thinking (after a newline for a model without
        think markers, whose thinking ends in its last words)."""
        text = WAIT_TEXT if self.fmt.thinks_in_markers else "\n" + WAIT_TEXT
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @torch.no_grad()
    def continue_after_wait(self, prompts: Sequence[str], thinking_ids: Sequence[Sequence[int]], *,
                            cap: int | None = None, clock: Clock | None = None) -> list[Continuation | None]:
        """Budget doubling of given thinking: per prompt, its thinking tokens (without the end of thinking), then
        "Wait", then greedy thinking for at most as many tokens as it had (within the thinking ``cap`` leaves, the
        token cap by default), then the answer, forced if the model does not close its thinking itself. None for a
        prompt whose thinking leaves no room under the cap, or when the deadline has passed.

        The serial route calls this where a bundle's :class:`~thinkctl.controller.doubling.Doubling` says so;
        ``thinkctl calibrate`` calls it on calibration problems to decide whether doubling helps."""
        from thinkctl.stopping.rules import RowBudgetStopping

        cap = self.config.token_cap if cap is None else cap
        tcap = self._thinking_cap(cap)
        wait = self._wait_ids()
        clock = clock if clock is not None else Clock(self.config.deadline_s)
        thinks = [[int(t) for t in think] for think in thinking_ids]
        budgets = [min(len(t), tcap - len(t) - len(wait)) for t in thinks]
        results: list[Continuation | None] = [None] * len(thinks)
        todo = [j for j, b in enumerate(budgets) if b >= 1]
        size = min(self.config.prompt_batch, self.config.max_rows)
        for start in range(0, len(todo), size):
            part = todo[start:start + size]
            if clock.expired():
                break
            sub_cap = max(budgets[j] for j in part) + (cap - tcap)
            pre = self._prefill_ids([prompts[j] for j in part],
                                    [chat_prefix(self.tokenizer, prompts[j]) + thinks[j] + wait for j in part],
                                    read=False, cap=sub_cap)
            rule = RowBudgetStopping([budgets[j] for j in part])  # each row doubles its own thinking, no more
            rows = self._run_rows(pre, list(range(len(part))), sample=False, cap=sub_cap, clock=clock,
                                  read_end=self.confidence is not None, extra_rules=lambda: [rule])
            for k, j in enumerate(part):
                gen = wait + rows.gen[k]
                text = self._decode(thinks[j] + gen)
                reason = StopReason.CAP.value if rows.reasons[k] == StopReason.RULE.value else rows.reasons[k]
                results[j] = Continuation(gen=gen, text=text, answer=self._answer_of(text),
                                          thinking=len(thinks[j]) + len(wait) + rows.thinking[k],
                                          generated=1 + len(gen), reason=reason,
                                          end_confidence=rows.end_confidence[k], budget=budgets[j])
        return results
