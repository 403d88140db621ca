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


@pytest.fixture(autouse=True)
def reasons_are_declared(monkeypatch):
    """Every controller call in these tests checks that each stop reason its traces record is a declared one."""
    from thinkctl.controller import STOP_REASONS, AdaptiveController

    chunked = AdaptiveController._chunked

    def checked(self, *args, **kwargs):
        results = chunked(self, *args, **kwargs)
        for r in results:
            for e in r.trace:
                if e["event"] == "stop":
                    assert e["reason"] in STOP_REASONS, e
                elif e["event"] in ("vote", "best_of"):
                    assert e["stop"] in STOP_REASONS, e
        return results

    monkeypatch.setattr(AdaptiveController, "_chunked", checked)
