"""The embedded default model: a small reasoning LM trained by thinkctl, shipped with the package.

>>> import thinkctl
>>> model, tokenizer = thinkctl.load_embedded()
>>> model.config.model_type
'llama'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["load_embedded", "CHECKPOINT_DIR", "METADATA_FILE"]

#: Where the committed checkpoint lives (inside the installed package).
CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoint"
#: What ``thinkctl train-embedded`` writes beside the weights (config, seed, data statistics, loss curve).
METADATA_FILE = "thinkctl_embedded.json"


def load_embedded(path: str | os.PathLike[str] | None = None, *, dtype: Any = None) -> tuple[Any, Any]:
    """Load the embedded reasoning model and its tokenizer, offline.

    Parameters
    ----------
    path : path-like, optional
        A checkpoint written by ``thinkctl train-embedded``; default: the one shipped with thinkctl.
    dtype : torch.dtype, optional
        Parameter dtype (default float32).

    Returns
    -------
    (model, tokenizer)
        A ``LlamaForCausalLM`` in eval mode and its fast tokenizer (left padding, chat template).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ckpt = Path(path) if path is not None else CHECKPOINT_DIR
    if not (ckpt / "config.json").is_file():
        raise FileNotFoundError(
            f"no embedded checkpoint at {ckpt}; train one with `thinkctl train-embedded --out {ckpt}`")
    kwargs: dict[str, Any] = {"local_files_only": True}
    if dtype is not None:
        kwargs["dtype"] = dtype
    model = AutoModelForCausalLM.from_pretrained(ckpt, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(ckpt, local_files_only=True)
    tokenizer.padding_side = "left"
    model.eval()
    model.name_or_path = "thinkctl-embedded"
    model.config.name_or_path = "thinkctl-embedded"
    return model, tokenizer
