"""A learned process scorer: a hidden-state probe read at the end of every step.

Math-Shepherd (Wang et al. 2024) defines a step's value as the chance that the solution reaches the right answer
from it, and trains its process reward model on that label. thinkctl's outlook probe is that value read off the
hidden states: trained by ``thinkctl train`` on trace checkpoints with the label "this sample's final answer is
right", calibrated by ``thinkctl calibrate`` and saved in the bundle. :class:`ProcessProbeScorer` reads it (or any
hidden-state predictor) at the line break that ends each step, in one forward pass over the prompt and the steps.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from numpy.typing import NDArray

from thinkctl.generation import chat_prefix
from thinkctl.models import model_num_layers
from thinkctl.process.scoring import check_step_scores
from thinkctl.tasks.base import Problem

__all__ = ["ProcessProbeScorer"]


class ProcessProbeScorer:
    """Score each step with ``predictor`` applied to the hidden state at the step's closing line break.

    Parameters
    ----------
    model, tokenizer : the causal LM whose hidden states the predictor reads, and its tokenizer
    predictor : callable
        ``predictor(hidden) -> ndarray (B,)`` of probabilities for hidden states ``(B, hidden_size)``, with an int
        attribute ``layer`` (decoder layer, negative from the end), e.g. the bundle's calibrated outlook predictor
        (:class:`thinkctl.controller.HiddenStatePredictor`).
    name : str, default="process-probe"

    Notes
    -----
    The steps are re-tokenized as ``step + "\\n"`` after the chat template's generation prompt, which is how the
    model wrote them; a tokenizer that merges a line break with the next line's first characters gives slightly
    other positions than the generation had.
    """

    def __init__(self, model: Any, tokenizer: Any, predictor: Any, *, name: str = "process-probe") -> None:
        if not callable(predictor) or not isinstance(getattr(predictor, "layer", None), int):
            raise ValueError("predictor must be callable on hidden states and carry an int `layer` (e.g. a "
                             "HiddenStatePredictor from a bundle)")
        self.model, self.tokenizer, self.predictor, self.name = model, tokenizer, predictor, name
        n_layers = model_num_layers(model)
        if not -n_layers <= predictor.layer < n_layers:
            raise ValueError(f"the predictor reads layer {predictor.layer}, out of range for a model with {n_layers} "
                             "layers; it was trained for another model")
        self._hidden_index = predictor.layer % n_layers + 1  # hidden_states[0] is the embeddings
        self._max_positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)

    @torch.no_grad()
    def score(self, problem: Problem, steps: Sequence[str]) -> NDArray[np.float64]:
        if not steps:
            return np.zeros(0)
        ids = chat_prefix(self.tokenizer, problem.prompt)
        ends = []
        for step in steps:
            ids += [int(i) for i in self.tokenizer(step + "\n", add_special_tokens=False)["input_ids"]]
            ends.append(len(ids) - 1)
        if self._max_positions is not None and len(ids) > int(self._max_positions):
            raise ValueError(f"problem {problem.id!r}: prompt and steps take {len(ids)} tokens, more than the model's "
                             f"context of {self._max_positions}; score shorter solutions")
        device = next(self.model.parameters()).device
        out = self.model(input_ids=torch.tensor([ids], device=device), output_hidden_states=True)
        hidden = out.hidden_states[self._hidden_index][0, ends]  # (n_steps, hidden)
        return check_step_scores(self.predictor(hidden), len(steps), f"step scorer {self.name!r}")
