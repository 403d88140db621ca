"""What the controller returns for one prompt."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ControllerResult"]


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
