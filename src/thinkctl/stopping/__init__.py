"""Hooks that run inside ``model.generate``: budget forcing, thought-switch penalty, hidden-state taps, stop rules.

Every hook is a ``transformers`` ``LogitsProcessor`` or ``StoppingCriteria`` that composes with a plain
``model.generate(..., logits_processor=LogitsProcessorList([...]), stopping_criteria=StoppingCriteriaList([...]))``,
works per row of a left-padded batch (greedy or sampled, with the KV cache) and never edits ``scores`` in place.

* :class:`BudgetForcing` (s1) - minimum / maximum thinking tokens; forced stops always end with an answer.
* :class:`ThoughtSwitchPenalty` (TIP) - penalise "Alternatively" early in the thinking.
* :class:`HiddenStateTap` - newest hidden state of chosen layers, constant memory.
* Stop rules (:class:`StopRule`): :class:`ProbeStopping` (confidence predictor on tapped states),
  :class:`AnswerConsistencyStopping` (Dynasor), :class:`TokenConfidenceStopping` (DeepConf),
  :class:`DeadlineStopping` (wall clock). Pass them to ``BudgetForcing(stop_rules=[...])`` to force the answer
  of a row when they fire, or use them alone as ``StoppingCriteria`` to end rows without an answer.
* :func:`build_inputs` with :data:`PROMPT_STYLES` (``"cot"``, ``"cod"``) - left-padded chat-template inputs.

Examples
--------
>>> from transformers import LogitsProcessorList
>>> tap = HiddenStateTap(model, layers=(-1,))  # doctest: +SKIP
>>> probe = ProbeStopping(tap, predictor, threshold=0.9, every=32)  # doctest: +SKIP
>>> bf = BudgetForcing(tokenizer, max_tokens=1024, stop_rules=[probe])  # doctest: +SKIP
>>> with tap:  # doctest: +SKIP
...     out = model.generate(**build_inputs(tokenizer, prompts), max_new_tokens=1100,
...                          logits_processor=LogitsProcessorList([bf]))
"""

from thinkctl.stopping.budget import WAIT_TRIGGERS, BudgetForcing
from thinkctl.stopping.penalty import ThoughtSwitchPenalty, switch_token_ids
from thinkctl.stopping.prober import ForcedAnswerProber
from thinkctl.stopping.prompts import PLACEMENTS, PROMPT_STYLES, PromptStyle, build_inputs, render_prompt
from thinkctl.stopping.probe_rule import ProbeStopping
from thinkctl.stopping.rules import (
    AnswerConsistencyStopping,
    DeadlineStopping,
    StopRule,
    TokenConfidenceStopping,
)
from thinkctl.stopping.tap import FINAL_NORM, HiddenStateTap, find_decoder_layers
from thinkctl.stopping.tracking import ThinkingTracker, think_markers

__all__ = [
    "BudgetForcing",
    "WAIT_TRIGGERS",
    "ThoughtSwitchPenalty",
    "switch_token_ids",
    "HiddenStateTap",
    "FINAL_NORM",
    "find_decoder_layers",
    "StopRule",
    "ProbeStopping",
    "AnswerConsistencyStopping",
    "TokenConfidenceStopping",
    "DeadlineStopping",
    "ForcedAnswerProber",
    "ThinkingTracker",
    "think_markers",
    "PromptStyle",
    "PROMPT_STYLES",
    "PLACEMENTS",
    "build_inputs",
    "render_prompt",
]
