"""Prompt styles and left-padded chat-template inputs."""

from __future__ import annotations

import pytest
import torch

from thinkctl.registry import UnknownNameError
from thinkctl.stopping import PROMPT_STYLES, PromptStyle, build_inputs, render_prompt

PROMPTS = ["2+3?", "what is 17*3?"]


def test_registry_lists_styles_and_unknown_names():
    assert {"cot", "cod", "none"} <= set(PROMPT_STYLES.names())
    assert "5 words at most" in PROMPT_STYLES.get("cod").instruction
    with pytest.raises(UnknownNameError, match="known: cod, cot, none"):
        PROMPT_STYLES.get("tot")


@pytest.mark.parametrize("style", ["cot", "cod", "none"])
def test_build_inputs_left_pads_chat_template(tok, style):
    batch = build_inputs(tok, PROMPTS, style=style)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == mask.shape and ids.dtype == torch.long
    for i, prompt in enumerate(PROMPTS):
        n = int(mask[i].sum())
        assert (mask[i, : ids.shape[1] - n] == 0).all() and (mask[i, ids.shape[1] - n:] == 1).all()  # left
        assert (ids[i, : ids.shape[1] - n] == tok.pad_token_id).all()
        text = tok.decode(ids[i, ids.shape[1] - n:])
        assert text == render_prompt(tok, prompt, style)
        assert text.endswith("<|assistant|><think>\n") and prompt in text
        instruction = PROMPT_STYLES.get(style).instruction
        if instruction:
            assert text.startswith("<|system|>" + instruction)  # the template renders system messages
        else:
            assert "<|system|>" not in text


def test_auto_placement_falls_back_to_suffix(tok):
    from transformers import PreTrainedTokenizerFast

    drop_system = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer, eos_token="<eos>",
                                          pad_token="<pad>", unk_token="<unk>")
    drop_system.chat_template = (
        "{% for m in messages %}{% if m['role'] != 'system' %}{{ m['content'] + '\\n' }}{% endif %}{% endfor %}")
    text = render_prompt(drop_system, "2+3?", "cod")
    assert text == "2+3?\n\n" + PROMPT_STYLES.get("cod").instruction + "\n"
    reject_system = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer, eos_token="<eos>",
                                            pad_token="<pad>", unk_token="<unk>")
    reject_system.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system') }}{% endif %}"
        "{{ m['content'] }}{% endfor %}")
    assert render_prompt(reject_system, "q", "cot") == "q\n\n" + PROMPT_STYLES.get("cot").instruction


def test_custom_style_and_explicit_placement(tok):
    style = PromptStyle("terse", "Answer tersely.")
    text = render_prompt(tok, "q", style, placement="suffix")
    assert text.startswith("<|user|>q\n\nAnswer tersely.\n")


@pytest.mark.parametrize("prompts, kwargs, exc, match", [
    ([], {}, ValueError, "non-empty list"),
    ("2+3?", {}, ValueError, "non-empty list"),
    (PROMPTS, dict(style="nope"), UnknownNameError, "unknown prompt style 'nope'"),
    (PROMPTS, dict(placement="middle"), UnknownNameError, "known: auto, suffix, system"),
])
def test_bad_arguments(tok, prompts, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        build_inputs(tok, prompts, **kwargs)


def test_prompt_style_validation():
    with pytest.raises(ValueError, match="instruction must be None or non-empty"):
        PromptStyle("x", "  ")
