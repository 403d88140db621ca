"""Thought-switching penalty (TIP) against underthinking.

Wang et al. 2025, "Thoughts Are All Over the Place: On the Underthinking of o1-Like LLMs": reasoning models abandon
promising lines of thought too early, marked by words such as "Alternatively". TIP subtracts a penalty ``alpha``
from the logits of those tokens during the first ``beta`` tokens of the thinking, which lengthens each line of
thought; the paper's best setting is ``alpha=3``, ``beta=600``.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import torch
from transformers import LogitsProcessor

from thinkctl.stopping.tracking import ThinkingTracker, encode_text, precomputed_call_signature

__all__ = ["ThoughtSwitchPenalty", "switch_token_ids"]

logger = logging.getLogger(__name__)

#: Penalty strength and duration of TIP's best setting (Wang et al. 2025).
TIP_ALPHA = 3.0
TIP_BETA = 600
#: Words that open a new line of thought (TIP penalises "alternatively").
DEFAULT_SWITCH_WORDS: tuple[str, ...] = ("Alternatively",)
#: Contexts in which a word starts: at a line start (no prefix) or after a space.
_WORD_PREFIXES: tuple[str, ...] = ("", " ")


def switch_token_ids(tokenizer: Any, words: Sequence[str]) -> list[int]:
    """First token of each tokenization of each word: as given, lowercase and capitalised, with and without a
    leading space.

    Whitespace-only leading pieces (SentencePiece's lone ``"▁"``) are skipped, so the space token itself is never
    penalised. For a word the tokenizer splits into pieces, its first piece is penalised, which also affects other
    words starting with that piece (logged at INFO).

    Raises
    ------
    ValueError
        If ``words`` is empty or a word cannot be encoded.
    """
    if isinstance(words, str) or len(words) == 0:
        raise ValueError(f"words={words!r} must be a non-empty sequence of strings, e.g. ('Alternatively',)")
    ids: list[int] = []
    for word in words:
        encode_text(tokenizer, word, name=f"words[{word!r}]")
        forms = dict.fromkeys([word, word.lower(), word[:1].upper() + word[1:]])
        for form in forms:
            for prefix in _WORD_PREFIXES:
                pieces = list(tokenizer.encode(prefix + form, add_special_tokens=False))
                while pieces and not tokenizer.decode(pieces[:1], skip_special_tokens=False).strip():
                    pieces = pieces[1:]
                if not pieces:
                    continue
                if len(pieces) > 1:
                    logger.info("switch word %r is %d pieces; penalising its first piece %r", prefix + form,
                                len(pieces), tokenizer.decode(pieces[:1]))
                if pieces[0] not in ids:
                    ids.append(int(pieces[0]))
    return ids


@precomputed_call_signature
class ThoughtSwitchPenalty(LogitsProcessor):
    """Subtract ``alpha`` from the logits of thought-switching tokens during each row's first ``beta`` thinking tokens.

    Per row of a left-padded batch: the penalty applies while the row is thinking (see
    :class:`~thinkctl.stopping.ThinkingTracker`) and has produced fewer than ``beta`` thinking tokens; answers are
    never penalised. Penalised tokens are the first token of every tokenization of every word in ``words``
    (see :func:`switch_token_ids`).

    Parameters
    ----------
    tokenizer : PreTrainedTokenizerBase
    alpha : float, default=3.0
        Penalty strength, >= 0 (TIP).
    beta : int, default=600
        Penalty duration in thinking tokens, >= 0 (TIP).
    words : sequence of str, default=("Alternatively",)
        Thought-switching words.
    think_start, think_end : str or None
        Think markers; ``think_end=None`` for models without them.
    eos_token_id : int or list of int, optional

    Attributes
    ----------
    token_ids : list of int
        Penalised token ids.

    Raises
    ------
    ValueError
        On a negative or non-finite ``alpha``, a negative ``beta``, empty ``words`` or a word the tokenizer cannot
        encode.

    Examples
    --------
    >>> from transformers import LogitsProcessorList
    >>> tip = ThoughtSwitchPenalty(tokenizer, alpha=3.0, beta=600)  # doctest: +SKIP
    >>> model.generate(**inputs, logits_processor=LogitsProcessorList([tip]))  # doctest: +SKIP
    """

    def __init__(
        self,
        tokenizer: Any,
        alpha: float = TIP_ALPHA,
        beta: int = TIP_BETA,
        words: Sequence[str] = DEFAULT_SWITCH_WORDS,
        *,
        think_start: str | None = "<think>",
        think_end: str | None = "</think>",
        eos_token_id: int | Sequence[int] | None = None,
    ) -> None:
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not math.isfinite(alpha) or alpha < 0:
            raise ValueError(f"alpha={alpha!r} must be a finite non-negative penalty (TIP uses alpha=3.0)")
        if not isinstance(beta, int) or isinstance(beta, bool) or beta < 0:
            raise ValueError(f"beta={beta!r} must be a non-negative int number of thinking tokens (TIP uses 600)")
        self.alpha = float(alpha)
        self.beta = beta
        self.words = tuple(words) if not isinstance(words, str) else words
        self.token_ids = switch_token_ids(tokenizer, words)
        self._tracker = ThinkingTracker(tokenizer, think_start=think_start, think_end=think_end,
                                        eos_token_id=eos_token_id)
        self._penalty: dict[tuple[Any, ...], torch.Tensor] = {}

    def reset(self) -> None:
        """Forget the current generation."""
        self._tracker.reset()

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Scores of shape (B, vocab) with the penalty applied (a new tensor; ``scores`` is untouched)."""
        tr = self._tracker
        tr.update(input_ids)
        rows = [r for r, (p, n) in enumerate(zip(tr.phase, tr.think_tokens)) if p == tr.THINKING and n < self.beta]
        if not rows or self.alpha == 0.0:
            return scores
        key = (scores.shape[-1], scores.dtype, scores.device)
        if key not in self._penalty:
            vec = torch.zeros(scores.shape[-1], dtype=scores.dtype, device=scores.device)
            vec[self.token_ids] = -self.alpha
            self._penalty[key] = vec
        penalty = self._penalty[key]  # (vocab,): -alpha at the switch tokens, 0 elsewhere
        if len(rows) == scores.shape[0]:
            return scores + penalty
        mask = torch.zeros(scores.shape[0], 1, dtype=scores.dtype, device=scores.device)
        mask[rows] = 1.0
        return scores + mask * penalty

    def __repr__(self) -> str:
        return f"ThoughtSwitchPenalty(alpha={self.alpha}, beta={self.beta}, words={self.words!r})"
