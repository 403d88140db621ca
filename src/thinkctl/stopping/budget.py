"""Budget forcing (s1): a minimum and a maximum number of thinking tokens per row, enforced inside ``generate``.

Muennighoff et al. 2025, "s1: Simple test-time scaling": to make a model think longer, suppress its end-of-thinking
delimiter and append "Wait"; to make it think less, append the end-of-thinking delimiter and the answer prefix so the
model must answer. :class:`BudgetForcing` does both per row of a batch as a ``transformers`` ``LogitsProcessor``,
and ends the thinking of rows for which a :class:`~thinkctl.stopping.StopRule` fires (a confident probe, agreeing
answers, a deadline) the same way, so every forced stop yields an extractable answer.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import torch
from transformers import LogitsProcessor

from thinkctl.registry import Registry
from thinkctl.stopping.rules import StopRule
from thinkctl.stopping.tracking import ThinkingTracker, encode_text, eos_ids_of, precomputed_call_signature

__all__ = ["BudgetForcing", "WAIT_TRIGGERS"]

logger = logging.getLogger(__name__)

#: Answer tokens a forced answer may take before EOS is forced. Not from s1 (which leaves the answer unbounded);
#: the answers of thinkctl's tasks fit in a few tokens, and a bound guarantees that every forced stop terminates.
DEFAULT_MAX_ANSWER_TOKENS = 16
#: Whitespace strings that are not content: a forced answer may open with a few of them, never end on them.
_BLANK_STRINGS: tuple[str, ...] = (" ", "  ", "\n", "\n\n", " \n", "\t")
#: Blank tokens a forced answer may open with (``Final Answer:`` then a space that some tokenizers, the embedded
#: model's among them, write as a token of its own); after them the answer's next token must have content.
MAX_LEADING_BLANKS = 2


def _trigger_argmax(scores: torch.Tensor, rows: list[int], ends: list[list[int]],
                    generator: torch.Generator | None) -> list[bool]:
    """Row ``rows[i]`` triggers when one of the tokens ``ends[i]`` is its most likely next token."""
    sub = scores if len(rows) == scores.shape[0] else scores[rows]
    top = sub.argmax(dim=-1).tolist()
    return [t in e for t, e in zip(top, ends)]


def _trigger_sample(scores: torch.Tensor, rows: list[int], ends: list[list[int]],
                    generator: torch.Generator | None) -> list[bool]:
    """Row ``rows[i]`` triggers with probability equal to the total probability of the tokens ``ends[i]``."""
    width = max(len(e) for e in ends)
    idx = torch.tensor([e + e[:1] * (width - len(e)) for e in ends], device=scores.device)
    mask = torch.tensor([[1.0] * len(e) + [0.0] * (width - len(e)) for e in ends], device=scores.device)
    sub = scores if len(rows) == scores.shape[0] else scores[rows]
    p_end = (torch.softmax(sub.float(), dim=-1).gather(1, idx) * mask).sum(dim=1)
    u = torch.rand(len(rows), generator=generator, device=scores.device)
    return (u < p_end).tolist()


#: How BudgetForcing decides that a row below ``min_tokens`` "tries to stop thinking" and gets the continuation:
#: ``"argmax"`` when end-of-thinking or EOS is the most likely next token (exactly s1 under greedy decoding);
#: ``"sample"`` with probability equal to their total probability (exactly s1 in distribution under sampling, when
#: BudgetForcing is the last processor). Otherwise those tokens are only suppressed.
WAIT_TRIGGERS: Registry[Callable[..., list[bool]]] = Registry("wait trigger")
WAIT_TRIGGERS.add("argmax", _trigger_argmax)
WAIT_TRIGGERS.add("sample", _trigger_sample)

_NONE, _WAIT, _STOP, _EOS = -1, 0, 1, 2  # forced sequences
_REASON_MAX, _REASON_EOS, _REASON_RULE = 1, 2, 3  # why thinking was ended by force (0: it was not)


@precomputed_call_signature
class BudgetForcing(LogitsProcessor):
    """Force each row to think at least ``min_tokens`` and at most ``max_tokens`` tokens, then answer (s1).

    Per row of a left-padded batch, greedy or sampled, with the KV cache:

    * below ``min_tokens`` thinking tokens, the end-of-thinking marker and EOS are suppressed; when the row tries to
      end thinking (see ``wait_trigger``) the continuation ``separator + wait_text`` (``"\\nWait"``) is injected
      token by token (every other logit set to ``-inf``);
    * at ``max_tokens`` thinking tokens (or when a stop rule fires, once ``min_tokens`` is reached), the marker
      ``think_end``, then ``separator + answer_text`` (``"</think>\\nFinal Answer:"``) are injected token by token;
      the forced answer then gets a non-blank token within its first few (:data:`MAX_LEADING_BLANKS` blanks may
      come first) and at most ``max_answer_tokens`` tokens, after which
      EOS is forced. A forced stop therefore always ends with an extractable ``Final Answer: X``.

    Thinking tokens are counted as in :class:`~thinkctl.stopping.ThinkingTracker` (after the prompt, after a
    ``<think>`` the model writes itself, up to ``</think>``); injected continuation tokens are thinking tokens, so
    thinking never exceeds ``max_tokens``. For a model without think markers pass ``think_end=None``: every
    generated token is a thinking token and a forced stop injects ``"\\nFinal Answer:"``. Markers may be single
    special tokens or multi-piece strings; for a multi-piece ``think_end`` below ``min_tokens`` only the piece that
    would complete the marker is suppressed.

    The hook infers the prompt length from its first call and detects a new generation when the batch size changes
    or ``input_ids`` does not grow by one token; call :meth:`reset` between generations to be explicit.

    Composition with stop rules: ``BudgetForcing(tokenizer, max_tokens=..., stop_rules=[probe])`` calls each rule
    once per decoding step with its own per-row thinking counts (so hook order in the list does not matter) and,
    when a rule fires for a row that has thought at least ``min_tokens`` tokens, injects the answer prefix into that
    row exactly as at ``max_tokens``; :attr:`stop_reasons` says which rule ended each row.

    Notes
    -----
    Place BudgetForcing last in the ``LogitsProcessorList`` (``generate`` runs its own warpers, temperature and
    top-k/top-p, before custom processors). The pad token is banned in every row (a model never writes padding;
    this makes a pad in ``input_ids`` mean that ``generate`` finished the row). ``scores`` is never modified: the
    result is a new tensor whenever a score changes. Per-row state is kept on the host, read from one small copy of
    the newest tokens per step; nothing loops over the vocabulary. Use :func:`~thinkctl.stopping.think_markers`
    to choose ``think_start``/``think_end`` for an arbitrary tokenizer.

    Parameters
    ----------
    tokenizer : PreTrainedTokenizerBase
        The model's tokenizer; every text argument must round-trip through it.
    min_tokens : int, default=0
        Minimum thinking tokens per row (s1's "Wait" extension).
    max_tokens : int or None, default=None
        Maximum thinking tokens per row; ``None`` for no maximum.
    wait_text : str, default="Wait"
        Continuation injected after ``separator`` when a row below ``min_tokens`` tries to stop (s1).
    answer_text : str, default="Final Answer:"
        Answer prefix injected after ``think_end`` and ``separator`` at a forced stop.
    think_end : str or None, default="</think>"
        End-of-thinking marker; ``None`` for models without think markers.
    think_start : str or None, default="<think>"
        Start-of-thinking marker (only used to count thinking tokens).
    separator : str, default="\\n"
        Text put before ``wait_text`` and between ``think_end`` and ``answer_text``.
    max_answer_tokens : int, default=16
        Free answer tokens after a forced answer prefix before EOS is forced.
    stop_rules : sequence of StopRule, default=()
        Rules that end a row's thinking early (e.g. :class:`~thinkctl.stopping.ProbeStopping`); BudgetForcing
        drives them every step and forces the answer of rows for which one fires.
    wait_trigger : {"argmax", "sample"}, default="argmax"
        See :data:`WAIT_TRIGGERS`.
    answer_on_eos : bool, default=True
        When a thinking row at or above ``min_tokens`` tries to emit EOS (which would end it without an answer),
        end its thinking with a forced answer instead. Ignored with ``think_end=None``, where EOS is the natural
        end of a plain model's output.
    eos_token_id : int or list of int, optional
        EOS ids; defaults to the tokenizer's. The first one is forced at the end of a forced answer.
    generator : torch.Generator, optional
        Random source of ``wait_trigger="sample"``.

    Attributes
    ----------
    forced_tokens : torch.LongTensor of shape (B,)
        Tokens injected per row in the current generation (they count as compute).
    waits : torch.LongTensor of shape (B,)
        Continuations injected per row.
    think_tokens : torch.LongTensor of shape (B,)
        Thinking tokens per row so far.
    forced_stop : torch.BoolTensor of shape (B,)
        Rows whose thinking was ended by force.
    stop_reasons : list of (str or None)
        Why each row's thinking was ended by force: ``"max_tokens"``, ``"eos"`` (see ``answer_on_eos``), the class
        name of a stop rule, or ``None``.
    prompt_length : int
        Padded prompt length of the current generation.

    Raises
    ------
    ValueError
        On a negative or inconsistent budget (``min_tokens > max_tokens``), a text the tokenizer cannot encode, a
        tokenizer without EOS, an unknown ``wait_trigger`` or a stop rule that is not a :class:`StopRule`.

    Examples
    --------
    >>> from transformers import LogitsProcessorList
    >>> bf = BudgetForcing(tokenizer, min_tokens=64, max_tokens=512)  # doctest: +SKIP
    >>> out = model.generate(**inputs, logits_processor=LogitsProcessorList([bf]),
    ...                      max_new_tokens=600)  # doctest: +SKIP
    >>> bf.forced_tokens, bf.stop_reasons  # doctest: +SKIP
    """

    def __init__(
        self,
        tokenizer: Any,
        min_tokens: int = 0,
        max_tokens: int | None = None,
        wait_text: str = "Wait",
        answer_text: str = "Final Answer:",
        think_end: str | None = "</think>",
        *,
        think_start: str | None = "<think>",
        separator: str = "\n",
        max_answer_tokens: int = DEFAULT_MAX_ANSWER_TOKENS,
        stop_rules: Sequence[StopRule] = (),
        wait_trigger: str = "argmax",
        answer_on_eos: bool = True,
        eos_token_id: int | Sequence[int] | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        if not isinstance(min_tokens, int) or isinstance(min_tokens, bool) or min_tokens < 0:
            raise ValueError(f"min_tokens={min_tokens!r} must be a non-negative int (0 disables the minimum)")
        if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)
                                       or max_tokens < 0):
            raise ValueError(f"max_tokens={max_tokens!r} must be a non-negative int, or None for no maximum")
        if max_tokens is not None and min_tokens > max_tokens:
            raise ValueError(f"min_tokens={min_tokens} > max_tokens={max_tokens}; "
                             "use min_tokens <= max_tokens")
        if not isinstance(max_answer_tokens, int) or max_answer_tokens < 1:
            raise ValueError(f"max_answer_tokens={max_answer_tokens!r} must be a positive int")
        self._trigger = WAIT_TRIGGERS.get(wait_trigger)
        for rule in stop_rules:
            if not isinstance(rule, StopRule):
                raise ValueError(f"stop_rules contains {rule!r}, which is not a StopRule; use ProbeStopping, "
                                 "AnswerConsistencyStopping, TokenConfidenceStopping or DeadlineStopping")
        eos = eos_ids_of(tokenizer, eos_token_id)
        if not eos:
            raise ValueError("the tokenizer has no eos_token_id; pass eos_token_id= so forced answers can end")
        if not isinstance(separator, str):
            raise ValueError(f"separator={separator!r} must be a string (\"\\n\" or \"\")")

        self.tokenizer = tokenizer
        self.min_tokens = min_tokens
        self.max_tokens = max_tokens
        self.wait_text = wait_text
        self.answer_text = answer_text
        self.think_end = think_end
        self.think_start = think_start
        self.separator = separator
        self.max_answer_tokens = max_answer_tokens
        self.stop_rules = list(stop_rules)
        self.wait_trigger = wait_trigger
        self.answer_on_eos = bool(answer_on_eos) and think_end is not None
        self.eos_token_id = eos
        self.generator = generator

        self._tracker = ThinkingTracker(tokenizer, think_start=think_start, think_end=think_end,
                                        eos_token_id=eos)
        wait_ids = encode_text(tokenizer, separator + wait_text, name="wait_text")
        answer_ids = encode_text(tokenizer, separator + answer_text, name="answer_text")
        end_ids = encode_text(tokenizer, think_end, name="think_end") if think_end is not None else []
        self._seqs: tuple[list[int], ...] = (wait_ids, end_ids + answer_ids, [eos[0]])

        self._eos_ids = list(dict.fromkeys(eos))

        # tokens that may not come before a forced answer's first content token: EOS, pad, the first piece of a
        # marker; blank tokens are allowed MAX_LEADING_BLANKS times (banning them outright turned the embedded
        # model's " 48" into "-48": its space is a token of its own)
        first_ban = set(eos)
        pad = getattr(tokenizer, "pad_token_id", None)
        if pad is not None:
            first_ban.add(int(pad))
        first_ban.update(v[0] for v in self._tracker.end_variants + self._tracker.start_variants)
        blanks = set()
        for blank in _BLANK_STRINGS:
            ids = tokenizer.encode(blank, add_special_tokens=False)
            if len(ids) == 1:
                blanks.add(int(ids[0]))
        self._first_ban = sorted(first_ban - blanks)
        self._blank_ids = frozenset(blanks)
        self._blank_ban = sorted(first_ban | blanks)
        # the answer's last allowed token (max_answer_tokens) must have content if none came before it
        self._leading_blanks = min(MAX_LEADING_BLANKS, self.max_answer_tokens - 1)
        # a model never writes padding; banning it makes "pad seen" mean "generate finished this row"
        self._pad = int(pad) if pad is not None and int(pad) not in eos else None
        self._id_tensors: dict[tuple[tuple[int, ...], torch.device], torch.Tensor] = {}
        self._ban_vectors: dict[tuple[Any, ...], torch.Tensor] = {}
        self._pad_vector: torch.Tensor | None = None
        self._init_state(0)

    # -- state -----------------------------------------------------------------------------------------------
    def _init_state(self, b: int) -> None:
        self._f_seq = [_NONE] * b  # forced sequence in progress per row
        self._f_pos = [0] * b  # position in it
        self._forced_answer = [False] * b  # the forced answer prefix has been written
        self._answer_free = [0] * b  # free answer tokens since then
        self._answer_content = [False] * b  # one of them was not blank
        self._closed = [False] * b  # thinking ended by force
        self._think_at_close = [0] * b
        self._reason = [0] * b
        self._forced = [0] * b
        self._waits = [0] * b

    def reset(self) -> None:
        """Forget the current generation (also resets the stop rules)."""
        self._tracker.reset()
        self._init_state(0)
        for rule in self.stop_rules:
            rule.reset()

    @property
    def forced_tokens(self) -> torch.Tensor:
        """torch.LongTensor of shape (B,): tokens injected per row (they count as compute)."""
        return torch.tensor(self._forced, dtype=torch.long)

    @property
    def waits(self) -> torch.Tensor:
        """torch.LongTensor of shape (B,): continuations injected per row."""
        return torch.tensor(self._waits, dtype=torch.long)

    @property
    def think_tokens(self) -> torch.Tensor:
        """torch.LongTensor of shape (B,): thinking tokens per row so far."""
        tr = self._tracker.think_tokens
        return torch.tensor([c if closed else n for n, c, closed in zip(tr, self._think_at_close, self._closed)],
                            dtype=torch.long)

    @property
    def prompt_length(self) -> int:
        """Padded prompt length of the current generation."""
        return self._tracker.prompt_length

    @property
    def forced_stop(self) -> torch.Tensor:
        """torch.BoolTensor of shape (B,): rows whose thinking was ended by force."""
        return torch.tensor([r > 0 for r in self._reason], dtype=torch.bool)

    @property
    def stop_reasons(self) -> list[str | None]:
        """Per row: ``"max_tokens"``, ``"eos"``, the class name of the stop rule that fired, or ``None``."""
        names: list[str | None] = [None, "max_tokens", "eos"] + [type(r).__name__ for r in self.stop_rules]
        return [names[c] for c in self._reason]

    # -- the hook --------------------------------------------------------------------------------------------
    def _advance(self, tails: list[list[int]]) -> None:
        """Account for the token chosen at the previous step (forced or not)."""
        done = self._tracker.done
        for r, tail in enumerate(tails):
            seq = self._f_seq[r]
            if seq == _NONE:
                if self._forced_answer[r] and not done[r]:
                    self._answer_free[r] += 1
                    if tail[-1] not in self._blank_ids:
                        self._answer_content[r] = True
                continue
            expected = self._seqs[seq][self._f_pos[r]]
            if tail[-1] != expected:  # generate padded a row another criterion finished
                self._f_seq[r], self._f_pos[r] = _NONE, 0
                continue
            self._f_pos[r] += 1
            if self._f_pos[r] >= len(self._seqs[seq]):
                self._forced_answer[r] = self._forced_answer[r] or seq == _STOP
                self._f_seq[r], self._f_pos[r] = _NONE, 0

    def _force(self, r: int, seq: int, reason: int = 0, n: int = 0) -> None:
        self._f_seq[r], self._f_pos[r] = seq, 0
        if seq == _STOP:
            self._closed[r] = True
            self._think_at_close[r] = n
            if self._reason[r] == 0:
                self._reason[r] = reason

    def _ban_vector(self, ids: tuple[int, ...], scores: torch.Tensor) -> torch.Tensor:
        """A cached (vocab,) tensor: -inf at ``ids``, 0 elsewhere (adding it bans ``ids`` in every row)."""
        key = (ids, scores.shape[-1], scores.dtype, scores.device)
        if key not in self._ban_vectors:
            vec = torch.zeros(scores.shape[-1], dtype=scores.dtype, device=scores.device)
            vec[list(ids)] = float("-inf")
            self._ban_vectors[key] = vec
        return self._ban_vectors[key]

    def _ids_tensor(self, ids: tuple[int, ...], device: torch.device) -> torch.Tensor:
        key = (ids, device)
        if key not in self._id_tensors:
            self._id_tensors[key] = torch.tensor(ids, dtype=torch.long, device=device)
        return self._id_tensors[key]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Scores of shape (B, vocab) with forced or suppressed tokens (a new tensor; ``scores`` is untouched)."""
        tracker = self._tracker
        b = input_ids.shape[0]
        tails = tracker.tails(input_ids)  # the one device-to-host copy of the step
        new = tracker.update(input_ids, tails)
        f_seq, forced_answer = self._f_seq, self._forced_answer
        if new:
            self._init_state(b)
            f_seq, forced_answer = self._f_seq, self._forced_answer
            for rule in self.stop_rules:
                rule.begin(input_ids)
            # the pad ban of every step of this generation (scores keep their vocabulary, dtype and device)
            self._pad_vector = None if self._pad is None else self._ban_vector((self._pad,), scores)
        elif f_seq.count(_NONE) != b or True in forced_answer:  # nothing to account for on a free step
            self._advance(tails)

        # Each section below touches rows one by one only when one of them can act; on the usual step (every row
        # free, no rule firing, no budget reached) the whole call is a few list scans and one tensor addition.
        phase, n = tracker.phase, tracker.think_tokens
        thinking_phase = tracker.THINKING
        if True in self._closed:
            thinking = [p == thinking_phase and not c for p, c in zip(phase, self._closed)]
        elif phase.count(thinking_phase) == b:
            thinking = [True] * b
        else:
            thinking = [p == thinking_phase for p in phase]

        # 1. forced stops: the max budget first, then stop rules (honoured from min_tokens on)
        if self.max_tokens is not None and max(n) >= self.max_tokens:
            for r in range(b):
                if thinking[r] and f_seq[r] != _STOP and n[r] >= self.max_tokens:
                    self._force(r, _STOP, _REASON_MAX, n[r])
        newest = tracker.newest_tokens
        for i, rule in enumerate(self.stop_rules):
            fired = rule.update(input_ids, scores, thinking, n, newest=newest)
            if True in fired:
                for r in range(b):
                    if fired[r] and thinking[r] and f_seq[r] != _STOP and n[r] >= self.min_tokens:
                        self._force(r, _STOP, _REASON_RULE + i, n[r])

        # 2. bounded forced answers: EOS after max_answer_tokens free tokens
        done_phase = tracker.DONE
        any_answer = True in forced_answer
        if any_answer:
            for r in range(b):
                if (forced_answer[r] and phase[r] != done_phase and f_seq[r] == _NONE
                        and self._answer_free[r] >= self.max_answer_tokens):
                    self._force(r, _EOS)

        # 3. a row that tries to stop thinking (wait_trigger): below min_tokens it gets the continuation; at or
        #    above it, EOS ends thinking with a forced answer instead (answer_on_eos)
        bans: dict[int, list[int]] = {}
        if self.answer_on_eos or (self.min_tokens > 0 and min(n) < self.min_tokens):
            rows = [r for r in range(b) if thinking[r] and f_seq[r] == _NONE
                    and (n[r] < self.min_tokens or self.answer_on_eos)]
            if rows:
                ends: list[list[int]] = []
                for r in rows:
                    e = list(self._eos_ids)
                    if n[r] < self.min_tokens:
                        e += [t for t in tracker.completing_tokens(tails[r]) if t not in e]
                    ends.append(e)
                fires = self._trigger(scores, rows, ends, self.generator)
                for r, e, fire in zip(rows, ends, fires):
                    if not fire:
                        bans[r] = e
                    elif n[r] < self.min_tokens:
                        self._force(r, _WAIT)
                        self._waits[r] += 1
                    else:
                        self._force(r, _STOP, _REASON_EOS, n[r])

        # 4. a forced answer must have content: no end before its first non-blank token, and at most
        #    _leading_blanks blank tokens before it (MAX_LEADING_BLANKS, fewer when max_answer_tokens is tiny)
        if any_answer:
            for r in range(b):
                if (phase[r] != done_phase and f_seq[r] == _NONE and forced_answer[r]
                        and not self._answer_content[r]):
                    ban = self._first_ban if self._answer_free[r] < self._leading_blanks else self._blank_ban
                    bans.setdefault(r, []).extend(ban)

        # 5. apply. Padding is never generated (banned in every row: generate overwrites finished rows anyway).
        #    The usual step bans the same tokens in every row: one addition of a cached (vocab,) vector of 0 / -inf
        #    then makes the new scores; otherwise per-row bans are grouped by token set. Forced rows last.
        any_forced = f_seq.count(_NONE) != b
        if not bans and not any_forced:
            return scores if self._pad_vector is None else scores + self._pad_vector
        forced_rows = [r for r in range(b) if f_seq[r] != _NONE] if any_forced else []
        if self._pad is not None:
            for r in range(b):
                bans.setdefault(r, []).append(self._pad)
        if not bans and not forced_rows:
            return scores
        groups: dict[tuple[int, ...], list[int]] = {}
        for r, banned in bans.items():
            groups.setdefault(tuple(sorted(set(banned))), []).append(r)
        dev = scores.device
        if len(groups) == 1 and len(bans) == b:
            out = scores + self._ban_vector(next(iter(groups)), scores)
        else:
            out = scores.clone()
            for toks, rows in groups.items():
                cols = self._ids_tensor(toks, dev)
                if len(rows) == b:
                    out[:, cols] = float("-inf")
                else:
                    out[torch.tensor(rows, dtype=torch.long, device=dev)[:, None], cols[None, :]] = float("-inf")
        if forced_rows:
            tokens = [self._seqs[f_seq[r]][self._f_pos[r]] for r in forced_rows]
            fr = torch.tensor(forced_rows, dtype=torch.long, device=dev)
            out[fr] = float("-inf")
            out[fr, torch.tensor(tokens, dtype=torch.long, device=dev)] = 0.0
            for r in forced_rows:
                if phase[r] != done_phase:
                    self._forced[r] += 1
        return out

    def __repr__(self) -> str:
        return (f"BudgetForcing(min_tokens={self.min_tokens}, max_tokens={self.max_tokens}, "
                f"wait_text={self.wait_text!r}, answer_text={self.answer_text!r}, think_end={self.think_end!r}, "
                f"max_answer_tokens={self.max_answer_tokens}, stop_rules={self.stop_rules!r})")
