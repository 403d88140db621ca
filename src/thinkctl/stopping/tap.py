"""Constant-memory taps on a decoder's hidden states during ``model.generate``.

:class:`HiddenStateTap` registers forward hooks on chosen decoder layers and keeps only the newest position's hidden
state, shape ``(B, hidden)``, of each layer. Memory does not grow with the generated length, and generation never
needs ``output_hidden_states=True``.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator, Sequence

import torch
from torch import nn

__all__ = ["HiddenStateTap", "find_decoder_layers", "FINAL_NORM"]

logger = logging.getLogger(__name__)

#: Key of :attr:`HiddenStateTap.latest` that holds the final-norm output (the input of the LM head).
FINAL_NORM = "final_norm"

#: Attribute paths of the decoder-layer list in common architectures, tried in order.
LAYER_PATHS: tuple[str, ...] = (
    "model.layers",  # Llama, Mistral, Qwen2, Qwen3, Gemma, Phi-3, SmolLM
    "transformer.h",  # GPT-2, GPT-J, Falcon, Bloom
    "model.decoder.layers",  # OPT
    "gpt_neox.layers",  # GPT-NeoX, Pythia
    "transformer.layers",
    "model.language_model.layers",  # multimodal wrappers
    "language_model.model.layers",
    "backbone.layers",
    "layers",
    "h",
)


def _get_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def find_decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The list of decoder layers of a causal LM.

    Tries the attribute paths of common architectures (``model.layers`` for Llama/Qwen, ``transformer.h`` for
    GPT-2, ...) and falls back to the longest ``nn.ModuleList`` whose length equals
    ``config.num_hidden_layers`` (or the longest one at all).

    Parameters
    ----------
    model : torch.nn.Module

    Returns
    -------
    path : str
        Dotted attribute path of the list.
    layers : torch.nn.ModuleList

    Raises
    ------
    ValueError
        If the model holds no ``nn.ModuleList``.
    """
    for path in LAYER_PATHS:
        found = _get_path(model, path)
        if isinstance(found, nn.ModuleList) and len(found) > 0:
            return path, found
    n_cfg = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    candidates = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not candidates:
        raise ValueError(
            f"cannot find the decoder layers of {type(model).__name__}: it holds no nn.ModuleList; "
            "pass a transformers causal LM")
    matching = [(n, m) for n, m in candidates if n_cfg is not None and len(m) == n_cfg]
    name, layers = max(matching or candidates, key=lambda nm: len(nm[1]))
    logger.info("decoder layers of %s found by search at %r (%d layers)", type(model).__name__, name, len(layers))
    return name, layers


def _newest(output: Any) -> torch.Tensor:
    hidden = output[0] if isinstance(output, (tuple, list)) else output
    if not isinstance(hidden, torch.Tensor):  # ModelOutput-like
        hidden = hidden[0]
    last = hidden.select(1, -1)  # (B, hidden)
    if last.requires_grad:  # generate runs without autograd; a direct forward pass with it keeps no graph here
        last = last.detach()
    # a decoding step's output is (B, 1, hidden): its last position is all of it, so the view keeps nothing more
    # alive; a longer one (the prefill) is cloned, since a view would keep the whole (B, T, hidden) activation
    return last if hidden.shape[1] == 1 else last.clone()


class HiddenStateTap:
    """Keep the newest position's hidden state of chosen decoder layers while a model runs.

    Forward hooks on the decoder layers store ``output[:, -1, :]`` (shape ``(B, hidden)``) after every forward pass:
    after the prefill it is the hidden state of the prompt's last token, after each decoding step that of the newest
    token. With left padding the newest position is the last column for every row. Only the latest state is kept,
    so memory is constant in the generated length.

    Layer ``i`` is the output of decoder layer ``i`` (0-based, before the final norm); in the tuple returned by
    ``output_hidden_states=True`` that is ``hidden_states[i + 1]``. Negative indices count from the last layer.
    With ``final_norm=True`` the tap also keeps the input of the LM head (the final-norm output, i.e.
    ``hidden_states[-1]``) under the key :data:`FINAL_NORM`.

    Hooks are attached at construction; :meth:`remove` (or leaving a ``with`` block) detaches them.

    Parameters
    ----------
    model : torch.nn.Module
        A transformers causal LM (GPT-2, Llama, Qwen2, Qwen3, ... any model with a list of decoder layers).
    layers : sequence of int, default=(-1,)
        Decoder layers to tap.
    final_norm : bool, default=False
        Also tap the final-norm output.

    Attributes
    ----------
    latest : dict
        Layer index (normalised to ``0..n_layers-1``) or :data:`FINAL_NORM` -> ``torch.Tensor`` of shape
        ``(B, hidden)``, from the newest forward pass. Empty before the first pass and after :meth:`reset`.
    layers : tuple of int
        Normalised layer indices.
    n_layers : int
    steps : int
        Forward passes seen since the last :meth:`reset`.

    Raises
    ------
    ValueError
        If a layer index is out of range or ``layers`` is empty.

    Examples
    --------
    >>> import torch
    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> model = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    ...                                      num_attention_heads=2, vocab_size=50))
    >>> with HiddenStateTap(model, layers=(-1,)) as tap:
    ...     _ = model(torch.tensor([[1, 2, 3]]))
    ...     tap.latest[1].shape
    torch.Size([1, 32])
    """

    def __init__(self, model: nn.Module, layers: Sequence[int] = (-1,), *, final_norm: bool = False) -> None:
        self.model = model
        self.layer_path, self._modules = find_decoder_layers(model)
        self.n_layers = len(self._modules)
        if isinstance(layers, int):
            layers = (layers,)
        if len(layers) == 0:
            raise ValueError("layers=() is empty; pass at least one decoder layer index, e.g. layers=(-1,)")
        norm: list[int] = []
        for layer in layers:
            if not isinstance(layer, int) or isinstance(layer, bool):
                raise ValueError(f"layer={layer!r} must be an int (negative counts from the last layer)")
            if not -self.n_layers <= layer < self.n_layers:
                raise ValueError(
                    f"layer={layer} is out of range for a model with {self.n_layers} layers; "
                    f"use 0..{self.n_layers - 1} or negative indices down to -{self.n_layers}")
            idx = layer % self.n_layers
            if idx not in norm:
                norm.append(idx)
        self.layers: tuple[int, ...] = tuple(norm)
        self.final_norm = final_norm
        self.latest: dict[int | str, torch.Tensor] = {}
        self.steps = 0
        self._paused = False
        self._handles: list[Any] = []
        self.attach()

    # -- hook management -------------------------------------------------------------------------------------
    @property
    def attached(self) -> bool:
        """Whether the hooks are registered."""
        return bool(self._handles)

    def attach(self) -> "HiddenStateTap":
        """Register the hooks (done at construction; a no-op when already attached)."""
        if self._handles:
            return self
        for idx in self.layers:
            self._handles.append(self._modules[idx].register_forward_hook(self._layer_hook(idx)))
        if self.final_norm:
            get_head = getattr(self.model, "get_output_embeddings", None)
            head = get_head() if callable(get_head) else None
            if head is None:
                self.remove()
                raise ValueError(
                    f"final_norm=True needs the LM head of {type(self.model).__name__} "
                    "(get_output_embeddings() returned None); use final_norm=False")
            self._handles.append(head.register_forward_pre_hook(self._head_pre_hook))
        return self

    def remove(self) -> None:
        """Detach all hooks (idempotent). :attr:`latest` keeps the last states."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def reset(self) -> None:
        """Forget stored states and the step count."""
        self.latest = {}
        self.steps = 0

    @contextlib.contextmanager
    def paused(self) -> Iterator["HiddenStateTap"]:
        """Ignore forward passes inside the block (e.g. probe generations run from inside a hook)."""
        previous = self._paused
        self._paused = True
        try:
            yield self
        finally:
            self._paused = previous

    def __enter__(self) -> "HiddenStateTap":
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.remove()

    # -- hooks -----------------------------------------------------------------------------------------------
    def _layer_hook(self, idx: int) -> Any:
        last = idx == self.layers[-1]

        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if self._paused:
                return
            self.latest[idx] = _newest(output)
            if last:
                self.steps += 1

        return hook

    def _head_pre_hook(self, module: nn.Module, args: Any) -> None:
        if self._paused:
            return
        self.latest[FINAL_NORM] = _newest(args)

    def get(self, layer: int | str) -> torch.Tensor:
        """The newest state of ``layer`` (an index as given to the constructor, or :data:`FINAL_NORM`).

        Raises
        ------
        ValueError
            If the layer is not tapped.
        RuntimeError
            If no forward pass has been seen yet.
        """
        key: int | str
        if layer == FINAL_NORM:
            if not self.final_norm:
                raise ValueError(f"layer={layer!r} is not tapped; construct the tap with final_norm=True")
            key = FINAL_NORM
        else:
            if not isinstance(layer, int) or not -self.n_layers <= layer < self.n_layers:
                raise ValueError(
                    f"layer={layer!r} is out of range for a model with {self.n_layers} layers; "
                    f"use 0..{self.n_layers - 1}, negative indices, or {FINAL_NORM!r}")
            key = layer % self.n_layers
            if key not in self.layers:
                raise ValueError(f"layer={layer} is not tapped (tapped: {list(self.layers)}); add it to layers=")
        if key not in self.latest:
            raise RuntimeError(
                "the tap has not seen a forward pass yet; attach it to the model that generates "
                "(and do not remove it before generate runs)")
        return self.latest[key]

    def __repr__(self) -> str:
        return (f"HiddenStateTap(model={type(self.model).__name__}, layers={self.layers}, "
                f"final_norm={self.final_norm}, attached={self.attached})")
