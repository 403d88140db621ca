"""Batched generation from token-id prefixes, and the reasoning format of a tokenizer.

These helpers sit under the gym, trace collection and evaluation: they take prefixes as lists of token ids
(so callers control exactly what the model sees, e.g. a thought cut after k tokens plus a forced answer), run
``model.generate`` in left-padded batches sorted by length, and return the new tokens of each row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from thinkctl.seeds import torch_seed
from thinkctl.tasks.base import ANSWER_PREFIX, THINK_CLOSE, THINK_OPEN

__all__ = ["ReasoningFormat", "reasoning_format", "chat_prefix", "generate_from_prefixes", "thinking_length",
           "model_context_length", "check_context"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReasoningFormat:
    """How a tokenizer's model thinks and answers.

    ``think_close_id`` is the single token that ends thinking (``</think>``), or None for a model that does not
    think in markers (its thinking is everything before its answer). ``force_answer_ids`` are the tokens that
    make the model answer now; ``eos_ids`` end a generation.
    """

    think_close_id: int | None
    force_answer_ids: tuple[int, ...]
    eos_ids: tuple[int, ...]
    pad_id: int

    @property
    def thinks_in_markers(self) -> bool:
        return self.think_close_id is not None


def _single_token_id(tokenizer: Any, text: str) -> int | None:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return int(ids[0]) if len(ids) == 1 else None


def reasoning_format(tokenizer: Any, answer_prefix: str = ANSWER_PREFIX) -> ReasoningFormat:
    """Read the reasoning format off a tokenizer (``</think>`` as one token means a thinking model)."""
    close_id = _single_token_id(tokenizer, THINK_CLOSE)
    open_id = _single_token_id(tokenizer, THINK_OPEN)
    thinking = close_id is not None and open_id is not None
    force_text = f"{THINK_CLOSE}\n{answer_prefix}" if thinking else f"\n{answer_prefix}"
    force_ids = tuple(tokenizer(force_text, add_special_tokens=False)["input_ids"])
    eos = tokenizer.eos_token_id
    eos_ids = tuple(eos) if isinstance(eos, (list, tuple)) else ((eos,) if eos is not None else ())
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos_ids[0] if eos_ids else 0)
    return ReasoningFormat(think_close_id=close_id if thinking else None, force_answer_ids=force_ids,
                           eos_ids=eos_ids, pad_id=int(pad))


def chat_prefix(tokenizer: Any, prompt: str, system: str | None = None) -> list[int]:
    """Token ids of the chat template's generation prompt for one user message."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    return [int(i) for i in ids]


def thinking_length(fmt: ReasoningFormat, tokenizer: Any, generated: Sequence[int],
                    answer_prefix: str = ANSWER_PREFIX) -> tuple[int, bool]:
    """Number of thinking tokens at the start of ``generated`` and whether thinking was closed.

    For a thinking model it is the position of ``</think>``; otherwise the position where the answer marker
    (``Final Answer:``) starts, or the whole generation when there is none.
    """
    generated = list(generated)
    if fmt.think_close_id is not None:
        if fmt.think_close_id in generated:
            return generated.index(fmt.think_close_id), True
        return len(generated), False
    text = tokenizer.decode(generated, skip_special_tokens=True)
    pos = text.find(answer_prefix)
    if pos < 0:
        return len(generated), False
    # smallest k whose decoded prefix reaches the marker's start
    lo, hi = 0, len(generated)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(tokenizer.decode(generated[:mid], skip_special_tokens=True)) > pos:
            hi = mid
        else:
            lo = mid + 1
    return max(0, lo - 1), True


#: Config fields that give a model's context length (positions), in the order they are looked for.
CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length")


def model_context_length(model: Any) -> int | None:
    """The number of positions ``model`` was built for (``max_position_embeddings`` in its config; GPT-2's
    ``n_positions``), or None when its config states none."""
    cfg = getattr(model, "config", None)
    if cfg is None:
        return None
    configs = [cfg]
    if hasattr(cfg, "get_text_config"):
        configs.append(cfg.get_text_config())
    for c in configs:
        for name in CONTEXT_FIELDS:
            value = getattr(c, name, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


_WARNED_CONTEXT: set[tuple[int, int, str]] = set()


def check_context(model: Any, prompt_tokens: int, new_tokens: int, *, cap_name: str = "max_new_tokens",
                  what: str = "a prompt") -> None:
    """Check, before anything is allocated, that ``prompt_tokens`` plus up to ``new_tokens`` generated tokens fit
    ``model``'s context (:func:`model_context_length`; a model whose config states none is not checked).

    Raises
    ------
    ValueError
        When the cap ``new_tokens`` alone is beyond the context, or the prompt alone fills it; the message names
        ``cap_name`` (the option to lower) or the prompt (``what``).

    A prompt and cap that fit one by one but not together log a warning (once per context, cap and option): a
    generation that long would run past the positions the model was built for.
    """
    ctx = model_context_length(model)
    if ctx is None or prompt_tokens + new_tokens <= ctx:
        return
    if new_tokens > ctx:
        raise ValueError(f"{cap_name}={new_tokens} is beyond the model's context of {ctx} positions "
                         f"(max_position_embeddings in its config), which must also hold the prompt; use a "
                         f"{cap_name} of at most {ctx - max(1, prompt_tokens)}")
    if prompt_tokens >= ctx:
        raise ValueError(f"{what} is {prompt_tokens} tokens long, which fills the model's context of {ctx} positions "
                         f"(max_position_embeddings in its config) and leaves no room to generate; shorten it")
    key = (ctx, new_tokens, cap_name)
    if key not in _WARNED_CONTEXT:
        _WARNED_CONTEXT.add(key)
        logger.warning("%s=%d plus a prompt of %d tokens can reach %d positions, past the model's context of %d: a "
                       "generation that long would continue where the model was never trained; use %s=%d or less to "
                       "stay within it", cap_name, new_tokens, prompt_tokens, prompt_tokens + new_tokens, ctx,
                       cap_name, ctx - prompt_tokens)


@torch.no_grad()
def generate_from_prefixes(model: Any, prefixes: Sequence[Sequence[int]], *, pad_id: int,
                           eos_ids: Sequence[int], max_new_tokens: int, do_sample: bool = False,
                           temperature: float = 1.0, top_p: float = 1.0, batch_size: int = 64,
                           seed: int = 0, progress: Any = None,
                           cache_implementation: str | None = "static") -> list[list[int]]:
    """Generate continuations of token-id prefixes, in left-padded batches sorted by length.

    Returns the new tokens of each row, cut after the first EOS (the EOS is kept). Sampling is reproducible:
    each batch reseeds torch from ``(seed, batch index)``, and batches are formed deterministically.
    ``progress`` is an optional callable taking the number of rows done. ``cache_implementation="static"``
    preallocates the KV cache (on CPU, 2-3x faster than growing it step by step for long generations); models
    that do not support it fall back to the default cache.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be at least 1")
    if prefixes:
        longest = max(range(len(prefixes)), key=lambda i: len(prefixes[i]))
        check_context(model, len(prefixes[longest]), max_new_tokens, what=f"prefix {longest}")
    order = sorted(range(len(prefixes)), key=lambda i: (len(prefixes[i]), i))
    out: list[list[int]] = [[] for _ in prefixes]
    device = next(model.parameters()).device
    eos_set = set(int(e) for e in eos_ids)
    for b, start in enumerate(range(0, len(order), batch_size)):
        rows = order[start:start + batch_size]
        width = max(len(prefixes[i]) for i in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            p = list(prefixes[i])
            ids[r, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[r, width - len(p):] = 1
        kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, pad_token_id=pad_id,
                                      eos_token_id=list(eos_set) or None, do_sample=do_sample)
        if do_sample:
            kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
            torch.manual_seed(torch_seed(seed * 1_000_003 + b))
        gen = _generate(model, ids.to(device), mask.to(device), cache_implementation, kwargs)
        new = gen[:, width:].tolist()
        for r, i in enumerate(rows):
            seq = new[r]
            for k, t in enumerate(seq):
                if t in eos_set:
                    seq = seq[:k + 1]
                    break
            out[i] = seq
        if progress is not None:
            progress(len(rows))
    return out


_STATIC_UNSUPPORTED: set[str] = set()

#: transformers compiles the forward pass of a generation with a static cache on CUDA unless told not to. thinkctl
#: does not let it: every batch has another left-padded width (a recompilation each time), and a compiled forward
#: does not reliably run the Python forward hooks that :class:`~thinkctl.stopping.HiddenStateTap` relies on.
NO_AUTO_COMPILE = {"disable_compile": True}


def _generate(model: Any, ids: torch.Tensor, mask: torch.Tensor, cache: str | None, kwargs: dict[str, Any]) -> Any:
    kind = type(model).__name__
    if cache is not None and kind not in _STATIC_UNSUPPORTED:
        try:
            return model.generate(input_ids=ids, attention_mask=mask, cache_implementation=cache, **NO_AUTO_COMPILE,
                                  **kwargs)
        except (ValueError, TypeError, NotImplementedError, AttributeError) as exc:
            logger.info("%s does not support cache_implementation=%r (%s); using the default cache", kind, cache, exc)
            _STATIC_UNSUPPORTED.add(kind)
    return model.generate(input_ids=ids, attention_mask=mask, **kwargs)
