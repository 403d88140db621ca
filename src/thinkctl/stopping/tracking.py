"""Per-row bookkeeping of where each sequence of a batch is in the reasoning format.

Reasoning models write ``<think> ... </think>`` then ``\\nFinal Answer: X`` and EOS. Every hook in
:mod:`thinkctl.stopping` needs to know, for each row of a left-padded batch, whether the row is still thinking,
how many thinking tokens it has produced, and whether it has finished. :class:`ThinkingTracker` answers these
questions incrementally, one new token per call. Its state is a few Python integers per row, kept on the host:
a decoding step reads the newest tokens of every row once (one tiny device-to-host copy) instead of launching
dozens of kernels on tensors of size B, which cost a sizeable fraction of a decoding step on small models.
Nothing loops over the vocabulary.

Markers may be single special tokens or multi-piece strings; :func:`encode_text` checks that the tokenizer
round-trips a string and :func:`marker_variants` lists the token sequences under which a marker can appear in
generated text.
"""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Any, Sequence, TypeVar

import torch

__all__ = [
    "ThinkingTracker",
    "think_markers",
    "encode_text",
    "marker_variants",
    "eos_ids_of",
    "ends_with",
    "last_positions",
    "precomputed_call_signature",
]

logger = logging.getLogger(__name__)

_T = TypeVar("_T", bound=type)


def precomputed_call_signature(cls: _T) -> _T:
    """Class decorator for logits processors: make transformers' per-step signature lookup nearly free.

    transformers' ``LogitsProcessorList`` calls ``inspect.signature(processor.__call__)`` for every processor at
    every decoding step, to decide whether to pass extra keyword arguments. For a bound method ``inspect`` derives
    the signature anew each time: measured inside the decoding loop of the embedded model on a CPU, 22-28 us per
    step (2 % of a step), 10-16 us with ``__signature__`` stored on the function. After ``__init__`` (and after a
    copy or an unpickling), the decorated class's instances carry an instance attribute ``__call__``: a
    ``functools.partial`` of the class's ``__call__`` bound to the instance and holding its precomputed
    ``__signature__``, which ``inspect`` returns as is (about 8 us in the loop, under 1 us in isolation). Calling the
    processor is unchanged (Python looks ``__call__`` up on the class), and ``processor.__call__(...)`` calls the
    same method. A subclass gets its own ``__call__``'s signature.
    """
    init = cls.__init__  # type: ignore[misc]  # the class's own __init__, wrapped below
    setstate = getattr(cls, "__setstate__", None)

    def bind(self: Any) -> None:
        call = functools.partial(type(self).__call__, self)
        call.__signature__ = inspect.signature(call)  # type: ignore[attr-defined]  # bound: no self
        self.__call__ = call

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        bind(self)

    def __setstate__(self: Any, state: Any) -> None:  # copy.copy, copy.deepcopy, pickle: bind to the new object
        if setstate is not None:
            setstate(self, state)
        else:
            self.__dict__.update(state)
        bind(self)

    cls.__init__ = __init__  # type: ignore[misc]
    cls.__setstate__ = __setstate__  # type: ignore[attr-defined]
    return cls


#: Prefixes under which a marker commonly appears inside generated text (after a word or at a line start).
#: BPE tokenizers tokenize ``" </think>"`` differently from ``"</think>"``; each prefix gives one more variant.
MARKER_CONTEXT_PREFIXES: tuple[str, ...] = (" ", "\n")


def encode_text(tokenizer: Any, text: str, *, name: str) -> list[int]:
    """Token ids of ``text`` (no special tokens added), checked to round-trip through the tokenizer.

    Parameters
    ----------
    tokenizer : PreTrainedTokenizerBase
        The model's tokenizer.
    text : str
        The string to encode (a marker such as ``"</think>"`` or a continuation such as ``"\\nWait"``).
    name : str
        The constructor argument that holds ``text``; it is named in the error message.

    Returns
    -------
    list of int
        The token ids, at least one.

    Raises
    ------
    ValueError
        If ``text`` is empty, encodes to nothing, contains the unknown token, or does not decode back to itself
        (up to surrounding whitespace).
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{name}={text!r} must be a non-empty string")
    ids = list(tokenizer.encode(text, add_special_tokens=False))
    decoded = tokenizer.decode(ids, skip_special_tokens=False) if ids else ""
    unk = getattr(tokenizer, "unk_token_id", None)
    has_unk = unk is not None and unk in ids and text.strip() != getattr(tokenizer, "unk_token", None)
    if not ids or has_unk or decoded.strip() != text.strip():
        raise ValueError(
            f"{name}={text!r} cannot be encoded by this tokenizer (it encodes to {ids}, which decodes to "
            f"{decoded!r}); pass a string made of text the tokenizer knows"
            + (", or None for a model without this marker" if name in ("think_start", "think_end") else "")
        )
    return ids


def marker_variants(tokenizer: Any, text: str, *, name: str) -> list[tuple[int, ...]]:
    """The token sequences under which the marker ``text`` can appear in generated text.

    The first variant is the tokenizer's own encoding of ``text`` (the one hooks inject). Further variants come from
    encoding ``text`` after a space or a newline and dropping leading whitespace-only pieces, because BPE tokenizers
    merge a marker with the character before it. A single special token has one variant.

    Parameters
    ----------
    tokenizer : PreTrainedTokenizerBase
    text : str
    name : str
        Argument name for error messages.

    Returns
    -------
    list of tuple of int
        Distinct variants, the canonical encoding first.
    """
    base = tuple(encode_text(tokenizer, text, name=name))
    variants = [base]
    for prefix in MARKER_CONTEXT_PREFIXES:
        ids = list(tokenizer.encode(prefix + text, add_special_tokens=False))
        while ids and not tokenizer.decode(ids[:1], skip_special_tokens=False).strip():
            ids = ids[1:]
        if ids and tokenizer.decode(ids, skip_special_tokens=False).strip() == text.strip():
            t = tuple(ids)
            if t not in variants:
                variants.append(t)
    return variants


#: Tokens compared between consecutive calls to tell a continuing generation from a new one of the same batch
#: size whose prompt happens to be one token longer than the last sequence seen.
CONTINUITY_TOKENS = 3

#: The think markers of DeepSeek-R1, Qwen3 and thinkctl's embedded model.
DEFAULT_THINK_START = "<think>"
DEFAULT_THINK_END = "</think>"


def think_markers(tokenizer: Any, start: str = DEFAULT_THINK_START,
                  end: str = DEFAULT_THINK_END) -> tuple[str | None, str | None]:
    """The think markers a model uses, or ``(None, None)`` for a model without them (a plain instruct model).

    A tokenizer has think markers when ``end`` is a single token of its vocabulary (an added special token, as in
    DeepSeek-R1 distills and Qwen3) or when its chat template mentions ``start`` or ``end``.

    Examples
    --------
    >>> start, end = think_markers(tokenizer)  # doctest: +SKIP
    >>> BudgetForcing(tokenizer, max_tokens=512, think_start=start, think_end=end)  # doctest: +SKIP
    """
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    template = getattr(tokenizer, "chat_template", None) or ""
    if not isinstance(template, str):  # a dict of named templates
        template = " ".join(str(t) for t in dict(template).values())
    if end in vocab or start in template or end in template:
        return start, end
    return None, None


def eos_ids_of(tokenizer: Any, eos_token_id: int | Sequence[int] | None) -> list[int]:
    """EOS ids from an explicit argument or the tokenizer (an int or a list, as generation configs allow)."""
    if eos_token_id is None:
        eos_token_id = getattr(tokenizer, "eos_token_id", None) if tokenizer is not None else None
    if eos_token_id is None:
        return []
    if isinstance(eos_token_id, int):
        return [eos_token_id]
    ids = [int(i) for i in eos_token_id]
    return ids


def ends_with(tail: Sequence[int], variant: Sequence[int]) -> bool:
    """Whether the token list ``tail`` ends with ``variant``."""
    n = len(variant)
    return 0 < n <= len(tail) and list(tail[len(tail) - n:]) == list(variant)


def last_positions(input_ids: torch.Tensor, variants: Sequence[Sequence[int]]) -> list[int]:
    """Per row, the index just past the last occurrence of any variant in ``input_ids`` (shape (B, T)), or -1.

    Vectorised over rows and positions (``unfold``); used once per generation to read the prompt.
    """
    b, t = input_ids.shape
    best = torch.full((b,), -1, dtype=torch.long, device=input_ids.device)
    for v in variants:
        n = len(v)
        if n == 0 or n > t:
            continue
        pattern = torch.tensor(list(v), dtype=input_ids.dtype, device=input_ids.device)
        hit = (input_ids.unfold(1, n, 1) == pattern).all(dim=-1)  # (B, T - n + 1)
        ends = torch.arange(n, t + 1, device=input_ids.device)  # exclusive end index of each window
        best = torch.maximum(best, torch.where(hit, ends, -1).max(dim=1).values)
    return [int(i) for i in best.tolist()]


class ThinkingTracker:
    """Where each row of a batch is: thinking, answering, or done; and how many thinking tokens it has produced.

    Thinking tokens of a row are the tokens generated after the prompt (and after a ``<think>`` marker if the model
    emits one itself) up to, not including, ``</think>``. A row whose prompt already opened thinking (a chat template
    ending with ``<think>\\n``, as for DeepSeek-R1) starts thinking at its first generated token; a row whose prompt
    closed thinking (``<think>\\n\\n</think>`` as Qwen3 writes with thinking disabled) starts in the answer phase.
    For a model without think markers (``think_end=None``) every generated token is a thinking token.

    The tracker detects a new generation by itself when the batch size changes, ``input_ids`` does not grow by
    exactly one token since the last call, or the tokens before the newest differ from those seen last call;
    :meth:`reset` forces it. Passing a finished output back to ``generate`` unchanged therefore continues the
    count (the output's last token, never shown to a hook, is accounted then); anything else starts over.
    Beam search reorders rows between steps and is not supported.

    Parameters
    ----------
    tokenizer : PreTrainedTokenizerBase or None
        Used to encode the markers. ``None``: no markers, every generated token is a thinking token.
    think_start, think_end : str or None
        Opening and closing markers of the thinking section.
    eos_token_id : int or list of int, optional
        Tokens that end a row. Defaults to the tokenizer's EOS.
    pad_token_id : int, optional
        The token ``generate`` writes into finished rows; seeing it also marks a row done. Defaults to the
        tokenizer's pad token.
    includes_new_token : bool, default=False
        ``False`` for logits processors (the first call sees the prompt only); ``True`` for stopping criteria
        (the first call already sees the first generated token).

    Attributes
    ----------
    phase : list of int
        Per row: ``THINKING`` (0), ``ANSWER`` (1) or ``DONE`` (2).
    think_tokens : list of int
    answer_tokens : list of int
        Tokens generated after ``</think>`` (EOS excluded).
    generated_tokens : list of int
        Tokens generated while the row was not done (EOS included).
    seen_start : list of bool
        Whether thinking was opened by a ``<think>`` marker.
    prompt_length : int
        Padded prompt length of the current generation.
    start_variants, end_variants : list of tuple of int
        Token sequences of the markers (see :func:`marker_variants`), longest first.
    window : int
        Number of trailing tokens per row needed to recognise a marker.
    """

    THINKING = 0
    ANSWER = 1
    DONE = 2

    def __init__(
        self,
        tokenizer: Any = None,
        *,
        think_start: str | None = "<think>",
        think_end: str | None = "</think>",
        eos_token_id: int | Sequence[int] | None = None,
        pad_token_id: int | None = None,
        includes_new_token: bool = False,
    ) -> None:
        self.includes_new_token = includes_new_token
        start: list[tuple[int, ...]] = []
        end: list[tuple[int, ...]] = []
        if tokenizer is not None:
            if think_start is not None:
                start = marker_variants(tokenizer, think_start, name="think_start")
            if think_end is not None:
                end = marker_variants(tokenizer, think_end, name="think_end")
        self.start_variants = sorted(start, key=len, reverse=True)
        self.end_variants = sorted(end, key=len, reverse=True)
        self.window = max([CONTINUITY_TOKENS + 1] + [len(v) for v in start + end])
        # single-token markers are checked by set membership, longer ones by comparing the row's tail
        self._start_single = frozenset(v[0] for v in start if len(v) == 1)
        self._start_multi = [list(v) for v in self.start_variants if len(v) > 1]
        self._end_single = frozenset(v[0] for v in end if len(v) == 1)
        self._end_multi = [list(v) for v in self.end_variants if len(v) > 1]
        stop = eos_ids_of(tokenizer, eos_token_id)
        if pad_token_id is None and tokenizer is not None:
            pad_token_id = getattr(tokenizer, "pad_token_id", None)
        if pad_token_id is not None:
            stop.append(int(pad_token_id))
        self.stop_ids = frozenset(stop)
        # a newest token outside this set only advances a counter (a marker can end only with its last piece)
        self._watch = self.stop_ids | frozenset(v[-1] for v in start + end)
        self.reset()

    def reset(self) -> None:
        """Forget the current generation; the next :meth:`update` starts a new one."""
        self._last_len: int | None = None
        self._prev_tails: list[list[int]] = []
        self._newest: list[int] = []
        self.batch_size = 0
        self.prompt_length = 0
        self.phase: list[int] = []
        self.think_tokens: list[int] = []
        self.answer_tokens: list[int] = []
        self.generated_tokens: list[int] = []
        self.seen_start: list[bool] = []

    @property
    def thinking(self) -> list[bool]:
        """Per row: still thinking."""
        return [p == self.THINKING for p in self.phase]

    @property
    def done(self) -> list[bool]:
        """Per row: has emitted EOS (or been padded by ``generate``)."""
        return [p == self.DONE for p in self.phase]

    @property
    def newest_tokens(self) -> list[int]:
        """Per row: the newest token of the ``input_ids`` seen by the last :meth:`update` (empty before one; the
        tracker's own list, read it without modifying it)."""
        return self._newest

    def is_new_generation(self, input_ids: torch.Tensor, tails: list[list[int]] | None = None) -> bool:
        """Whether ``input_ids`` starts a new generation rather than continuing the current one.

        A continuation has the same batch size, exactly one more token, and its tokens before the newest are the
        newest tokens of the previous call (checked on the last :data:`CONTINUITY_TOKENS`).
        """
        b, t = input_ids.shape
        if self._last_len is None or b != self.batch_size or t != self._last_len + 1:
            return True
        if tails is None:
            tails = self.tails(input_ids)
        prev = self._prev_tails
        if not tails or not prev:
            return False
        # every row of a tail has the same length (a column slice of one tensor), so the overlap with the previous
        # tails is the same for all rows: compare all rows at once
        width, prev_width = len(tails[0]), len(prev[0])
        if width == prev_width:  # the usual step: both tails are a full window
            return [c[:-1] for c in tails] != [p[1:] for p in prev]
        k = min(width - 1, prev_width)
        if k <= 0:
            return False
        return [c[width - 1 - k:-1] for c in tails] != [p[prev_width - k:] for p in prev]

    def tails(self, input_ids: torch.Tensor) -> list[list[int]]:
        """The last :attr:`window` tokens of every row, on the host (one small device-to-host copy)."""
        return input_ids[:, -self.window:].tolist()

    def update(self, input_ids: torch.Tensor, tails: list[list[int]] | None = None) -> bool:
        """Account for the newest token of every row.

        Parameters
        ----------
        input_ids : torch.LongTensor of shape (B, T)
            Prompt plus generated tokens, as ``generate`` passes them to hooks.
        tails : list of list of int, optional
            ``input_ids[:, -window:]`` already copied to the host by the caller (saves a copy).

        Returns
        -------
        bool
            True when this call started a new generation (state was re-initialised from the prompt).
        """
        if tails is None:
            tails = self.tails(input_ids)
        new = self.is_new_generation(input_ids, tails)
        self._newest = [t[-1] for t in tails]
        if new:
            prompt = input_ids[:, :-1] if self.includes_new_token else input_ids
            self._begin(prompt)
        if not new or self.includes_new_token:
            self._advance(tails, self._newest)
        self._last_len = input_ids.shape[1]
        self._prev_tails = tails
        return new

    def _begin(self, prompt: torch.Tensor) -> None:
        b, p = prompt.shape
        self.batch_size = b
        self.prompt_length = p
        last_start = last_positions(prompt, self.start_variants) if self.start_variants else [-1] * b
        last_end = last_positions(prompt, self.end_variants) if self.end_variants else [-1] * b
        self.phase = [self.ANSWER if 0 <= s < e else self.THINKING for s, e in zip(last_start, last_end)]
        self.seen_start = [s > e for s, e in zip(last_start, last_end)]
        self.think_tokens = [0] * b
        self.answer_tokens = [0] * b
        self.generated_tokens = [0] * b

    def _advance(self, tails: list[list[int]], newest: list[int]) -> None:
        phase, stop = self.phase, self.stop_ids
        if self._watch.isdisjoint(newest) and phase.count(self.THINKING) == len(phase):
            # the usual step: every row thinking, no marker or stop token among the newest tokens
            self.think_tokens = [n + 1 for n in self.think_tokens]
            self.generated_tokens = [n + 1 for n in self.generated_tokens]
            return
        think, answer, generated = self.think_tokens, self.answer_tokens, self.generated_tokens
        start_single, start_multi = self._start_single, self._start_multi
        end_single, end_multi = self._end_single, self._end_multi
        answer_phase, done_phase, watch = self.ANSWER, self.DONE, self._watch
        for r, tail in enumerate(tails):
            p = phase[r]
            if p == done_phase:
                continue
            generated[r] += 1
            tok = tail[-1]
            if tok not in watch:
                if p == answer_phase:
                    answer[r] += 1
                else:
                    think[r] += 1
                continue
            if tok in stop:
                phase[r] = done_phase
                continue
            if p == answer_phase:
                answer[r] += 1
                continue
            think[r] += 1
            if not self.seen_start[r] and (tok in start_single or any(tail[-len(v):] == v for v in start_multi)):
                think[r] = 0
                self.seen_start[r] = True
            closed = 0
            for v in end_multi:  # longest first
                if tail[-len(v):] == v:
                    closed = len(v)
                    break
            if not closed and tok in end_single:
                closed = 1
            if closed:
                think[r] = max(0, think[r] - closed)
                phase[r] = answer_phase

    def completing_tokens(self, tail: Sequence[int]) -> list[int]:
        """End-marker tokens that would complete ``</think>`` after ``tail`` (a single-token marker: always)."""
        return [v[-1] for v in self.end_variants if len(v) == 1 or ends_with(tail, v[:-1])]
