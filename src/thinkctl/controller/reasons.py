"""Why the controller ended a row's thinking or a prompt's sampling: the declared vocabulary of stop reasons.

Every ``"stop"`` event of a :class:`~thinkctl.controller.ControllerResult` trace (its ``"reason"``) and every
``"vote"`` / ``"best_of"`` event (its ``"stop"``) holds one of these values, as a plain string.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Sequence

from thinkctl.stopping import DeadlineStopping, ProbeStopping
from thinkctl.stopping.rules import AnswerConsistencyStopping, StopRule

__all__ = ["StopReason", "STOP_REASONS", "thinking_stop_reason"]


class StopReason(StrEnum):
    """Why thinking or sampling ended.

    Serial thinking (the ``"stop"`` event of a generation):

    * ``CLOSED``: the model closed its thinking itself (``</think>``);
    * ``EOS``: the model ended its output, in a format without a thinking marker;
    * ``CAP``: the thinking budget (the token cap, or the last budget of a fixed schedule) was reached;
    * ``DEADLINE``: the wall-clock deadline came first (or had passed before the row started);
    * ``CONFIDENT``: the stop score reached the certified threshold at a probe;
    * ``CONSISTENT``: the forced-answer probes agreed (Dynasor's answer consistency);
    * ``LOW_CONFIDENCE``: DeepConf ended a sample whose group confidence fell below its threshold;
    * ``RULE``: another stop rule passed to :meth:`~thinkctl.controller.AdaptiveController.run_serial` fired;
    * ``NO_VOTES``: no parallel sample gave an answer, so one greedy answer was forced.

    Parallel sampling (the ``"stop"`` of the ``"vote"`` or ``"best_of"`` event):

    * ``SETTLED``: the vote stopping rule said the vote is settled;
    * ``BUDGET``: every allowed sample was drawn;
    * ``DEADLINE``: the deadline came first.
    """

    CLOSED = "closed"
    EOS = "eos"
    CAP = "cap"
    DEADLINE = "deadline"
    CONFIDENT = "confident"
    CONSISTENT = "consistent"
    LOW_CONFIDENCE = "low_confidence"
    RULE = "rule"
    NO_VOTES = "no_votes"
    SETTLED = "settled"
    BUDGET = "budget"


#: Every reason the controller can record, as the strings its traces hold.
STOP_REASONS = frozenset(r.value for r in StopReason)

#: The reason recorded when a stop rule of this type ends a row's thinking.
_RULE_REASONS: dict[type[StopRule], StopReason] = {
    ProbeStopping: StopReason.CONFIDENT,
    DeadlineStopping: StopReason.DEADLINE,
    AnswerConsistencyStopping: StopReason.CONSISTENT,
}


def thinking_stop_reason(reported: str | None, rules: Sequence[StopRule], *, no_thinking: bool,
                         has_think_end: bool, dropped: bool) -> StopReason:
    """The reason a row's thinking ended.

    Parameters
    ----------
    reported : str or None
        What :attr:`~thinkctl.stopping.BudgetForcing.stop_reasons` says for the row: ``None`` (thinking ended by
        itself), ``"max_tokens"``, ``"eos"`` or the class name of the stop rule that fired.
    rules : sequence of StopRule
        The stop rules given to that ``BudgetForcing``; the one that fired is looked up among them.
    no_thinking : bool
        The row had no thinking budget at all (the deadline had passed when it started).
    has_think_end : bool
        The reasoning format has an end-of-thinking marker.
    dropped : bool
        DeepConf ended the sample for low group confidence.
    """
    if dropped:
        return StopReason.LOW_CONFIDENCE
    if reported is None:
        return StopReason.CLOSED if has_think_end else StopReason.EOS
    if reported == "max_tokens":
        return StopReason.DEADLINE if no_thinking else StopReason.CAP
    if reported == "eos":
        return StopReason.EOS
    fired = next((r for r in rules if type(r).__name__ == reported), None)
    return next((reason for cls, reason in _RULE_REASONS.items() if isinstance(fired, cls)), StopReason.RULE)
