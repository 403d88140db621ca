"""Prompt styles (chain of thought, chain of draft) applied through the tokenizer's chat template.

A :class:`PromptStyle` is an instruction added to each query, as a system message or as a suffix of the user
message; :func:`build_inputs` renders a batch of queries with ``tokenizer.apply_chat_template`` and left-pads it for
``model.generate``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from jinja2 import TemplateError
from transformers import BatchEncoding

from thinkctl.registry import Registry

__all__ = ["PromptStyle", "PROMPT_STYLES", "PLACEMENTS", "render_messages", "render_prompt", "build_inputs"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PromptStyle:
    """An instruction that shapes how the model reasons.

    Attributes
    ----------
    name : str
        Registry name.
    instruction : str or None
        Text added to every query (``None``: the query as is).
    reference : str
        Where the style comes from.
    """

    name: str
    instruction: str | None
    reference: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("PromptStyle.name must be a non-empty string")
        if self.instruction is not None and not self.instruction.strip():
            raise ValueError(f"PromptStyle {self.name!r}: instruction must be None or non-empty text")


#: Registered prompt styles. The instructions follow Xu et al. 2025 ("Chain of Draft: Thinking Faster by Writing
#: Less", their CoT and CoD system prompts) with the answer format of thinkctl's tasks (``Final Answer: X``).
PROMPT_STYLES: Registry[PromptStyle] = Registry("prompt style")
PROMPT_STYLES.add("none", PromptStyle("none", None, "the query as is"))
PROMPT_STYLES.add("cot", PromptStyle(
    "cot",
    "Think step by step to answer the following question. "
    "Return the answer at the end of the response after 'Final Answer:'.",
    "standard chain of thought (Wei et al. 2022; prompt wording of Xu et al. 2025)",
))
PROMPT_STYLES.add("cod", PromptStyle(
    "cod",
    "Think step by step, but only keep a minimum draft for each thinking step, with 5 words at most. "
    "Return the answer at the end of the response after 'Final Answer:'.",
    "Chain of Draft (Xu et al. 2025, 'Chain of Draft: Thinking Faster by Writing Less')",
))


def _as_system(prompt: str, instruction: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": instruction}, {"role": "user", "content": prompt}]


def _as_suffix(prompt: str, instruction: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{prompt}\n\n{instruction}"}]


#: Where the instruction goes: ``"system"`` (a system message), ``"suffix"`` (after the user message) or
#: ``"auto"`` (system when the chat template renders system messages, else suffix).
PLACEMENTS: Registry[Callable[[str, str], list[dict[str, str]]] | None] = Registry("placement")
PLACEMENTS.add("system", _as_system)
PLACEMENTS.add("suffix", _as_suffix)
PLACEMENTS.add("auto", None)


def _resolve_style(style: str | PromptStyle) -> PromptStyle:
    return style if isinstance(style, PromptStyle) else PROMPT_STYLES.get(style)


def render_messages(prompt: str, style: str | PromptStyle = "cot", placement: str = "suffix"
                    ) -> list[dict[str, str]]:
    """Chat messages for one query in a style.

    Parameters
    ----------
    prompt : str
        The user's query.
    style : str or PromptStyle, default="cot"
        A name in :data:`PROMPT_STYLES` or a style.
    placement : {"system", "suffix"}, default="suffix"

    Returns
    -------
    list of dict
        Messages for ``apply_chat_template``.
    """
    st = _resolve_style(style)
    fn = PLACEMENTS.get(placement)
    if st.instruction is None:
        return [{"role": "user", "content": prompt}]
    if fn is None:
        raise ValueError("placement='auto' needs a tokenizer; use render_prompt or build_inputs, "
                         "or placement='system' / 'suffix'")
    return fn(prompt, st.instruction)


def render_prompt(tokenizer: Any, prompt: str, style: str | PromptStyle = "cot", placement: str = "auto") -> str:
    """The generation prompt (chat template applied, generation prompt added) for one query.

    With ``placement="auto"`` the instruction goes into a system message when the template renders it (some
    templates reject or silently drop system messages), else after the user message. A tokenizer without a chat
    template gets ``"{instruction}\\n\\n{prompt}\\n"`` (logged as a warning).

    Parameters
    ----------
    tokenizer : PreTrainedTokenizerBase
    prompt : str
    style : str or PromptStyle, default="cot"
    placement : {"auto", "system", "suffix"}, default="auto"

    Returns
    -------
    str
    """
    st = _resolve_style(style)
    PLACEMENTS.get(placement)
    if getattr(tokenizer, "chat_template", None) is None:
        logger.warning("tokenizer has no chat_template; prompting with plain text")
        return (f"{st.instruction}\n\n" if st.instruction else "") + f"{prompt}\n"

    def apply(messages: list[dict[str, str]]) -> str:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return str(text)

    if st.instruction is None:
        return apply(render_messages(prompt, st))
    if placement == "auto":
        try:
            text = apply(render_messages(prompt, st, "system"))
        except (TemplateError, ValueError) as exc:  # templates raise for roles they do not support
            logger.info("chat template rejects system messages (%s); using a suffix", exc)
            return apply(render_messages(prompt, st, "suffix"))
        if st.instruction in text:
            return text
        return apply(render_messages(prompt, st, "suffix"))
    return apply(render_messages(prompt, st, placement))


def build_inputs(tokenizer: Any, prompts: Sequence[str], style: str | PromptStyle = "cot", *,
                 placement: str = "auto") -> BatchEncoding:
    """Left-padded ``input_ids`` and ``attention_mask`` for a batch of queries in a prompt style.

    Parameters
    ----------
    tokenizer : PreTrainedTokenizerBase
        Pads with its pad token (or its EOS when it has none).
    prompts : sequence of str
        User queries.
    style : str or PromptStyle, default="cot"
        A name in :data:`PROMPT_STYLES` (``"cot"``, ``"cod"``, ``"none"``) or a style.
    placement : {"auto", "system", "suffix"}, default="auto"

    Returns
    -------
    BatchEncoding
        ``input_ids`` and ``attention_mask``, ``torch.LongTensor`` of shape (n_prompts, max_length), padded on the
        left, ready for ``model.generate(**inputs)``.

    Raises
    ------
    ValueError
        If ``prompts`` is empty or a string, the tokenizer has neither pad nor EOS token, or ``style`` /
        ``placement`` is unknown (the message lists the known names).

    Examples
    --------
    >>> inputs = build_inputs(tokenizer, ["What is 2+3?", "What is 17*3?"], style="cod")  # doctest: +SKIP
    >>> model.generate(**inputs, max_new_tokens=256)  # doctest: +SKIP
    """
    if isinstance(prompts, str) or len(prompts) == 0:
        raise ValueError(f"prompts={prompts!r} must be a non-empty list of strings")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad nor an EOS token; set tokenizer.pad_token")
    rows = [list(tokenizer.encode(render_prompt(tokenizer, p, style, placement), add_special_tokens=False))
            for p in prompts]
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
    return BatchEncoding({"input_ids": ids, "attention_mask": mask})
