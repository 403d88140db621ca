"""Stop a row's thinking when a confidence predictor on its tapped hidden state is sure enough.

:class:`ProbeStopping` is a :class:`~thinkctl.stopping.rules.StopRule`: give it to
:class:`~thinkctl.stopping.BudgetForcing` (``stop_rules=[probe]``) to force the answer of a row when it fires, or use
it alone as a ``StoppingCriteria``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np
import torch

from thinkctl.stopping.rules import DEFAULT_PROBE_EVERY, StopRule, _check_schedule, _due, delimiter_token_ids
from thinkctl.stopping.tap import FINAL_NORM, HiddenStateTap

__all__ = ["ProbeStopping"]


class ProbeStopping(StopRule):
    """Stop a row's thinking once a confidence predictor on its hidden state reaches a threshold.

    A row is probed every ``every`` thinking tokens, when its thinking-token count reaches one of the values in
    ``at`` (a schedule such as the budget doublings 32, 64, 128, 256), and/or right after a step delimiter such as
    ``"\\n"``; any combination may be given. At a probe the newest hidden state of the tapped layer, shape
    ``(B, hidden)``, goes to ``predictor``; a row fires when its predicted probability of being right is
    ``>= threshold``. Give the rule to :class:`~thinkctl.stopping.BudgetForcing` (``stop_rules=[probe]``) to force
    the answer when it fires; used alone as a ``StoppingCriteria`` it ends the row without an answer.

    Inside BudgetForcing the probed state is that of the newest token (the one the next token is predicted from);
    alone, ``generate`` calls stopping criteria after appending a token but before the next forward pass, so the
    state is one position older.

    On a step where no row is due the rule touches no tensor; on a probe step the predictor runs once on the whole
    batch and its output is copied to the host once. Per-row state is a few numbers per row, plus one
    ``(thinking_tokens, confidence)`` pair per probe in :attr:`history` (``every=32`` over 4096 thinking tokens:
    128 pairs per row; ``at`` alone: one pair per listed count the row reaches).

    Parameters
    ----------
    tap : HiddenStateTap
        Attached to the model that generates.
    predictor : callable or estimator
        Maps a float tensor of shape (B, hidden) to probabilities of shape (B,) (a tensor, array or list; a
        (B, 2) output is read as ``[:, 1]``), e.g. a fitted ``HiddenStateProbe``. An estimator that is not callable
        but has ``predict_proba`` (a scikit-learn pipeline with a calibrator) gets a numpy array instead.
    threshold : float or None
        Confidence at which a row stops, in [0, 1]. ``None`` (a risk-controlled threshold that cannot be met) never
        stops but still records confidences.
    every : int or None, default=32
        Probe interval in thinking tokens (Dynasor's interval). ``None``: only at ``at`` and/or delimiters.
    delimiters : sequence of str or int, optional
        Also probe right after any token whose text contains one of these strings (needs ``tokenizer``) or
        whose id is listed.
    at : sequence of int, optional
        Also probe when a row's thinking-token count reaches exactly one of these values (strictly increasing
        positive ints), e.g. ``at=(32, 64, 128, 256)`` with ``every=None`` to probe only at the budget doublings.
        Counts below ``min_tokens`` are skipped.
    layer : int or "final_norm", optional
        Tapped layer to read; may be omitted when the tap holds a single layer.
    min_tokens : int, default=0
        Never probe (so never fire) before this many thinking tokens.
    tokenizer, think_start, think_end
        See :class:`StopRule`.

    Attributes
    ----------
    confidence : torch.FloatTensor of shape (B,)
        Latest predicted confidence per row (NaN before the first probe).
    probes : torch.LongTensor of shape (B,)
        Number of probes per row.
    fired_at : torch.LongTensor of shape (B,)
        Per row, the thinking-token count at the probe where the rule fired (confidence ``>= threshold``), -1 if
        it has not fired. Inside BudgetForcing with ``min_tokens`` the forced stop may come later;
        ``BudgetForcing.think_tokens`` says where thinking ended.
    history : list of list of (int, float)
        Per row, one ``(thinking_tokens, confidence)`` pair per probe, in order.
    stop : torch.BoolTensor of shape (B,)

    Raises
    ------
    ValueError
        On a threshold outside [0, 1], a non-positive ``every``, an ``at`` that is not strictly increasing positive
        ints, no schedule at all (``every=None`` without ``at`` or ``delimiters``), an untapped ``layer`` or a
        negative ``min_tokens``.

    Examples
    --------
    >>> import torch
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> from thinkctl.stopping import HiddenStateTap, ProbeStopping
    >>> model = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    ...                                      num_attention_heads=2, vocab_size=50))
    >>> tap = HiddenStateTap(model, layers=(-1,))
    >>> probe = ProbeStopping(tap, lambda h: torch.sigmoid(h.mean(dim=1)), threshold=0.9, every=8)
    >>> probe.every, probe.layer
    (8, 1)
    >>> doubling = ProbeStopping(tap, lambda h: torch.sigmoid(h.mean(dim=1)), threshold=0.9, every=None,
    ...                          at=(32, 64, 128, 256))
    >>> doubling.at
    (32, 64, 128, 256)
    >>> tap.remove()
    """

    def __init__(
        self,
        tap: HiddenStateTap,
        predictor: Callable[[Any], Any],
        threshold: float | None,
        every: int | None = DEFAULT_PROBE_EVERY,
        delimiters: Sequence[str | int] | None = None,
        *,
        at: Sequence[int] | None = None,
        layer: int | str | None = None,
        min_tokens: int = 0,
        tokenizer: Any = None,
        think_start: str | None = "<think>",
        think_end: str | None = "</think>",
    ) -> None:
        super().__init__(tokenizer=tokenizer, think_start=think_start, think_end=think_end)
        if not isinstance(tap, HiddenStateTap):
            raise ValueError(f"tap={tap!r} must be a HiddenStateTap attached to the generating model")
        if not (callable(predictor) or hasattr(predictor, "predict_proba")):
            raise ValueError(f"predictor={predictor!r} must be callable or have predict_proba")
        if threshold is not None and not (isinstance(threshold, (int, float)) and 0.0 <= threshold <= 1.0):
            raise ValueError(f"threshold={threshold!r} must be a probability in [0, 1], or None to never stop")
        if every is not None and (not isinstance(every, int) or isinstance(every, bool) or every < 1):
            raise ValueError(f"every={every!r} must be a positive int, or None to probe only at `at` counts "
                             "or delimiters")
        schedule = _check_schedule(at)
        if every is None and not delimiters and schedule is None:
            raise ValueError("every=None with neither at= nor delimiters= would never probe; set every=32, "
                             "at=(32, 64, 128, 256) or delimiters=('\\n',)")
        if not isinstance(min_tokens, int) or min_tokens < 0:
            raise ValueError(f"min_tokens={min_tokens!r} must be a non-negative int")
        if layer is None:
            keys: list[int | str] = list(tap.layers) + ([FINAL_NORM] if tap.final_norm else [])
            if len(keys) != 1:
                raise ValueError(f"the tap holds {keys}; pass layer= to choose one")
            layer = keys[0]
        if layer != FINAL_NORM and (not isinstance(layer, int) or (layer % tap.n_layers) not in tap.layers):
            raise ValueError(f"layer={layer!r} is not tapped (tapped: {list(tap.layers)}); add it to the tap's layers")
        if layer == FINAL_NORM and not tap.final_norm:
            raise ValueError(f"layer={layer!r} needs a tap built with final_norm=True")
        self.tap = tap
        self.predictor = predictor
        self._key = layer if layer == FINAL_NORM else layer % tap.n_layers  # the tap's key of the layer
        self.threshold = threshold
        self.every = every
        self.at = schedule
        self.layer = layer
        self.min_tokens = min_tokens
        self.delimiter_ids = delimiter_token_ids(tokenizer, delimiters) if delimiters else []
        self._delims = frozenset(self.delimiter_ids)
        self._at = frozenset(schedule or ())
        self._confidence: list[float] = []
        self._probes: list[int] = []
        self._fired_at: list[int] = []
        # one entry per probe step, (rows or None for all, thinking tokens, confidences); the per-row history is
        # built from it when read, so a probe step appends one record rather than one pair per row
        self._log: list[tuple[list[int] | None, list[int], list[float]]] = []
        self._history: list[list[tuple[int, float]]] | None = None

    @property
    def history(self) -> list[list[tuple[int, float]]]:
        """Per row, one ``(thinking_tokens, confidence)`` pair per probe, in order (built when read; do not
        modify it)."""
        if self._history is None:
            history: list[list[tuple[int, float]]] = [[] for _ in self._probes]
            for rows, counts, conf in self._log:
                for r, n, c in zip(range(len(history)) if rows is None else rows, counts, conf):
                    history[r].append((n, c))
            self._history = history
        return self._history

    @property
    def confidence(self) -> torch.Tensor:
        """torch.FloatTensor of shape (B,): latest predicted confidence per row (NaN before its first probe)."""
        return torch.tensor(self._confidence, dtype=torch.float32)

    @property
    def probes(self) -> torch.Tensor:
        """torch.LongTensor of shape (B,): number of probes per row."""
        return torch.tensor(self._probes, dtype=torch.long)

    @property
    def fired_at(self) -> torch.Tensor:
        """torch.LongTensor of shape (B,): thinking tokens at the probe where each row fired, -1 if it did not."""
        return torch.tensor(self._fired_at, dtype=torch.long)

    def _begin(self, input_ids: torch.Tensor) -> None:
        b = input_ids.shape[0]
        self._confidence = [math.nan] * b
        self._probes = [0] * b
        self._fired_at = [-1] * b
        self._log = []
        self._history = None

    def predict(self, hidden: torch.Tensor) -> torch.Tensor:
        """Confidence for a batch of hidden states.

        Parameters
        ----------
        hidden : torch.Tensor of shape (B, hidden)

        Returns
        -------
        torch.FloatTensor of shape (B,), on ``hidden``'s device.
        """
        return self._probabilities(hidden).to(device=hidden.device, dtype=torch.float32)

    def _probabilities(self, hidden: torch.Tensor) -> torch.Tensor:
        """The predictor's probabilities for ``hidden`` as a (B,) tensor, on whatever device and in whatever float
        dtype the predictor returned them (a probe step copies them to the host as they are)."""
        x = hidden if hidden.dtype is torch.float32 else hidden.float()
        if callable(self.predictor):
            out: Any = self.predictor(x)
        else:  # an estimator that is not callable: scikit-learn's predict_proba on numpy
            out = self.predictor.predict_proba(x.cpu().numpy())
        p = out if isinstance(out, torch.Tensor) else torch.as_tensor(np.asarray(out))
        if not p.is_floating_point():  # 0/1 labels or booleans: confidences are floats
            p = p.float()
        if p.ndim != 1:
            p = p[:, 1] if p.ndim == 2 and p.shape[1] == 2 else p.reshape(-1)
        if p.shape[0] != hidden.shape[0]:
            raise ValueError(f"predictor returned {tuple(out.shape) if hasattr(out, 'shape') else out!r} for "
                             f"{hidden.shape[0]} hidden states; it must map (B, hidden) to (B,) probabilities")
        return p

    def _decide(self, input_ids: torch.Tensor, scores: torch.Tensor | None, thinking: Sequence[bool],
                n_tokens: Sequence[int]) -> list[bool]:
        b = input_ids.shape[0]
        fire = [False] * b
        newest = self._newest_tokens(input_ids) if self._delims else None
        due = _due(n_tokens, thinking, self._stop, min_tokens=self.min_tokens, every=self.every, at=self._at,
                   delimiter_ids=self._delims, newest=newest)
        if not due:
            return fire
        hidden = self.tap.latest.get(self._key)  # (B, hidden)
        if hidden is None:
            hidden = self.tap.get(self.layer)  # raises: the tap has not seen a forward pass
        if hidden.shape[0] != b:
            raise RuntimeError(f"the tap holds states for {hidden.shape[0]} rows but generate runs "
                               f"{b}; is the tap attached to the model that generates?")
        conf = self._probabilities(hidden).tolist()  # the one device-to-host copy, on probe steps only
        if len(due) == b:  # every row probed (every=1, or rows in step): whole-batch bookkeeping
            self._confidence = conf[:]
            self._probes = [k + 1 for k in self._probes]
            self._log.append((None, list(n_tokens), conf))
        else:
            confidence, probes = self._confidence, self._probes
            for r in due:
                confidence[r] = conf[r]
                probes[r] += 1
            self._log.append((due, [n_tokens[r] for r in due], [conf[r] for r in due]))
        self._history = None
        threshold = self.threshold
        if threshold is not None:
            for r in due:
                if conf[r] >= threshold:
                    fire[r] = True
                    self._fired_at[r] = n_tokens[r]
        return fire
