"""Fixtures for thinkctl.controller tests (helpers live in ``controller_helpers``)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from controller_helpers import ForwardCounter, build_model, build_tokenizer


@pytest.fixture(scope="session")
def tok() -> PreTrainedTokenizerFast:
    return build_tokenizer()


@pytest.fixture(scope="session")
def model(tok: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    return build_model(tok, seed=0)


@pytest.fixture(scope="session")
def free_model(tok: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    """A random model free to emit EOS / ``</think>``."""
    return build_model(tok, seed=3, never_stop=False)


@pytest.fixture
def counter():
    made = []

    def make(m: torch.nn.Module) -> ForwardCounter:
        c = ForwardCounter(m)
        made.append(c)
        return c

    yield make
    for c in made:
        c.remove()
