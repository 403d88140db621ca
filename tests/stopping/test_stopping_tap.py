"""HiddenStateTap: newest-position states, constant memory, layer discovery, hook removal."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import LogitsProcessorList

from thinkctl.stopping import FINAL_NORM, HiddenStateTap, build_inputs, find_decoder_layers

ARCHS = ("gpt2", "llama", "qwen2", "qwen3")
LAYER_PATH = {"gpt2": "transformer.h", "llama": "model.layers", "qwen2": "model.layers", "qwen3": "model.layers"}


def final_norm_module(model):
    return model.transformer.ln_f if hasattr(model, "transformer") else model.model.norm


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_matches_output_hidden_states(arch, tok, models_for):
    model = models_for[arch]
    batch = build_inputs(tok, ["2+3?", "what is 17*3?"], style="none")
    with HiddenStateTap(model, layers=(0, -1), final_norm=True) as tap:
        assert tap.layer_path == LAYER_PATH[arch] and tap.layers == (0, 1)
        out = model(**batch, output_hidden_states=True)
        hs = out.hidden_states  # embeddings, layer 0 output, ..., final-norm output
        torch.testing.assert_close(tap.latest[0], hs[1][:, -1])
        torch.testing.assert_close(tap.get(FINAL_NORM), hs[-1][:, -1])
        # the last layer's raw output is not in hidden_states; its final norm is
        torch.testing.assert_close(final_norm_module(model)(tap.get(-1)), hs[-1][:, -1])
        assert tap.steps == 1
        for held in tap.latest.values():  # a prefill's newest position is copied out of the (B, T, hidden) output
            assert held.untyped_storage().nbytes() == held.numel() * held.element_size()


@pytest.mark.parametrize("arch", ARCHS)
def test_generate_keeps_newest_position_only(arch, tok, models_for):
    """At every decoding step (KV cache, left padding) the tap holds hidden_states[step][layer + 1][:, -1]."""
    model = models_for[arch]
    batch = build_inputs(tok, ["2+3?", "what is 17*3?", "x"], style="none")
    seen = []
    with HiddenStateTap(model, layers=(0,)) as tap:
        def spy(input_ids, scores):
            seen.append(tap.latest[0].clone())
            return scores

        out = model.generate(**batch, max_new_tokens=6, do_sample=False, output_hidden_states=True,
                             return_dict_in_generate=True, logits_processor=LogitsProcessorList([spy]))
        held = tap.latest[0]
    assert len(seen) == len(out.hidden_states) == 6
    for step, states in enumerate(out.hidden_states):
        torch.testing.assert_close(seen[step], states[1][:, -1])
    # constant memory: one (B, hidden) tensor owning its storage, not a view of a (B, T, hidden) activation
    assert held.shape == (3, model.config.hidden_size)
    assert held.untyped_storage().nbytes() == held.numel() * held.element_size()


def test_hooks_removed_on_exit_and_paused(tok, models_for):
    model = models_for["llama"]
    layers = model.model.layers
    before = [len(m._forward_hooks) for m in layers]
    with HiddenStateTap(model, layers=(-1,)) as tap:
        assert len(layers[-1]._forward_hooks) == before[-1] + 1
        model(torch.tensor([[5, 6, 7]]))
        first = tap.latest[1].clone()
        with tap.paused():
            model(torch.tensor([[8, 9]]))
        assert torch.equal(tap.latest[1], first) and tap.steps == 1
    assert [len(m._forward_hooks) for m in layers] == before
    assert not tap.attached
    model(torch.tensor([[8, 9]]))
    assert torch.equal(tap.latest[1], first)  # detached: nothing recorded
    tap.reset()
    with pytest.raises(RuntimeError, match="has not seen a forward pass"):
        tap.get(-1)


@pytest.mark.parametrize("layers, match", [
    ((2,), "layer=2 is out of range for a model with 2 layers; use 0..1 or negative indices"),
    ((-3,), "layer=-3 is out of range"),
    ((), "layers=\\(\\) is empty"),
    ((0.5,), "must be an int"),
])
def test_bad_layers_raise(tok, models_for, layers, match):
    with pytest.raises(ValueError, match=match):
        HiddenStateTap(models_for["qwen2"], layers=layers)


def test_get_untapped_layer_raises(tok, models_for):
    with HiddenStateTap(models_for["gpt2"], layers=(0,)) as tap:
        with pytest.raises(ValueError, match="not tapped"):
            tap.get(1)
        with pytest.raises(ValueError, match="final_norm=True"):
            tap.get(FINAL_NORM)


def test_find_decoder_layers_falls_back_to_module_list():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            return self.lin(x)

    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.heads = nn.ModuleList([nn.Linear(4, 4)])
            self.blocks = nn.ModuleList([Block() for _ in range(3)])

        def forward(self, x):
            for b in self.blocks:
                x = b(x)
            return x

    model = Custom()
    path, layers = find_decoder_layers(model)
    assert path == "blocks" and len(layers) == 3
    with HiddenStateTap(model, layers=(-2,)) as tap:
        x = torch.randn(2, 5, 4)
        model(x)
        expected = model.blocks[1](model.blocks[0](x))[:, -1]
        torch.testing.assert_close(tap.latest[1], expected)
    with pytest.raises(ValueError, match="no nn.ModuleList"):
        find_decoder_layers(nn.Linear(2, 2))
