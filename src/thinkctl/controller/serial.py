"""The serial route: greedy thinking that reads the certified stop score at its schedule and forces the answer once
the score reaches the threshold, at the cap, or at the deadline (budget doubling inside one generation)."""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Sequence

from thinkctl.controller.engine import Clock, GenerationEngine, Prefill
from thinkctl.controller.reasons import StopReason
from thinkctl.controller.result import ControllerResult
from thinkctl.stopping.rules import StopRule

__all__ = ["SerialRoute"]

logger = logging.getLogger(__name__)


class SerialRoute(GenerationEngine):
    """Serial thinking on top of :class:`~thinkctl.controller.engine.GenerationEngine`."""

    _warned_schedule: bool

    def _serial(self, pre: Prefill, rows: list[int], clock: Clock, *, budgets: Sequence[int] | None,
                use_confidence: bool, cap: int, name: str, traces: list[list[dict[str, Any]]],
                extra_rules: Callable[[], list[StopRule]] | None = None) -> list[ControllerResult]:
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
