"""thinkctl's own generate calls never let transformers compile the forward pass (see generation.NO_AUTO_COMPILE):
on CUDA a static cache would otherwise trigger torch.compile, recompiling for every left-padded width and
bypassing the Python forward hooks the hidden-state tap relies on."""

from __future__ import annotations

from thinkctl.controller import AdaptiveController, ControllerConfig
from thinkctl.generation import generate_from_prefixes, reasoning_format


def _recording(model, monkeypatch):
    seen = []
    original = model.generate

    def generate(*args, **kwargs):
        seen.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "generate", generate)
    return seen


def test_generate_from_prefixes_disables_auto_compile(model, tok, monkeypatch):
    seen = _recording(model, monkeypatch)
    fmt = reasoning_format(tok)
    generate_from_prefixes(model, [[5, 6, 7], [8, 9]], pad_id=fmt.pad_id, eos_ids=fmt.eos_ids, max_new_tokens=3)
    assert seen and all(kw.get("disable_compile") is True for kw in seen)


def test_controller_disables_auto_compile(model, tok, monkeypatch):
    seen = _recording(model, monkeypatch)
    c = AdaptiveController(model, tok, config=ControllerConfig(token_cap=60, initial_budget=8, max_answer_tokens=4,
                                                               easy_cap=30, max_samples=4, wave_size=2))
    c.run_serial(["What is 2+3?"])
    c.run_parallel(["What is 2+3?"], stop_rule=False, max_samples=2)
    assert seen and all(kw.get("disable_compile") is True for kw in seen)
