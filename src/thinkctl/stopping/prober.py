"""The answer a model would give if its thinking were stopped now (Dynasor's probe).

:class:`ForcedAnswerProber` appends ``</think>\\nFinal Answer:`` to a partial generation and greedily decodes a few
tokens; it is the ``answer_fn`` of :class:`~thinkctl.stopping.AnswerConsistencyStopping`.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Sequence

import torch

from thinkctl.stopping.tap import HiddenStateTap
from thinkctl.stopping.tracking import encode_text

__all__ = ["ForcedAnswerProber"]

logger = logging.getLogger(__name__)

#: Probe answers are short: Dynasor decodes a handful of tokens after its answer prompt.
DEFAULT_PROBE_ANSWER_TOKENS = 8


def _first_line(text: str) -> str | None:
    line = text.strip().split("\n", 1)[0].strip()
    return line or None


class ForcedAnswerProber:
    """Ask a model for the answer it would give if stopped now.

    ``prober(text)`` encodes ``text`` (a prompt plus partial thinking), appends ``think_end + separator +
    answer_text``, greedily generates up to ``max_answer_tokens`` tokens and returns ``(answer, tokens_used)``,
    where ``answer`` is ``extract(generated_text)`` (default: its first non-empty line, or ``None``) and
    ``tokens_used`` counts the probe's prefill plus its generated tokens (compute spent on probing).

    Parameters
    ----------
    model : transformers causal LM
    tokenizer : PreTrainedTokenizerBase
    think_end : str or None, default="</think>"
    answer_text : str, default="Final Answer:"
    separator : str, default="\\n"
    max_answer_tokens : int, default=8
    extract : callable, optional
        ``extract(answer_text) -> str | None``, e.g. a task's ``extract_answer`` applied to
        ``"Final Answer:" + text``.
    pause_taps : sequence of HiddenStateTap, default=()
        Taps on ``model`` to pause while probing, so that the probe's forward passes do not overwrite the states
        the outer generation's hooks read.

    Examples
    --------
    >>> prober = ForcedAnswerProber(model, tokenizer, max_answer_tokens=8)  # doctest: +SKIP
    >>> prober("<|user|>\\n2+2?<|end|>\\n<|assistant|>\\n<think>\\n2+2 is 4")  # doctest: +SKIP
    ('4', 23)
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        think_end: str | None = "</think>",
        answer_text: str = "Final Answer:",
        separator: str = "\n",
        max_answer_tokens: int = DEFAULT_PROBE_ANSWER_TOKENS,
        extract: Callable[[str], str | None] | None = None,
        pause_taps: Sequence[HiddenStateTap] = (),
    ) -> None:
        if not isinstance(max_answer_tokens, int) or max_answer_tokens < 1:
            raise ValueError(f"max_answer_tokens={max_answer_tokens!r} must be a positive int")
        self.model = model
        self.tokenizer = tokenizer
        end_ids = encode_text(tokenizer, think_end, name="think_end") if think_end is not None else []
        self.suffix_ids = end_ids + encode_text(tokenizer, separator + answer_text, name="answer_text")
        self.max_answer_tokens = max_answer_tokens
        self.extract = extract if extract is not None else _first_line
        self.pause_taps = list(pause_taps)

    def __call__(self, text: str) -> tuple[str | None, int]:
        """Probe one partial generation; returns ``(answer or None, tokens used)``."""
        ids = list(self.tokenizer.encode(text, add_special_tokens=False)) + self.suffix_ids
        device = next(self.model.parameters()).device
        input_ids = torch.tensor([ids], dtype=torch.long, device=device)
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id
        with contextlib.ExitStack() as stack:
            for tap in self.pause_taps:
                stack.enter_context(tap.paused())
            out = self.model.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                                      max_new_tokens=self.max_answer_tokens, do_sample=False, pad_token_id=pad)
        new = out[0, input_ids.shape[1]:]
        generated = self.tokenizer.decode(new, skip_special_tokens=True)
        return self.extract(generated), int(input_ids.shape[1] + new.shape[0])
