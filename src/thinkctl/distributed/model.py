"""A picklable description of a model, loaded where it runs (on the Ray actor, onto the actor's GPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

__all__ = ["ModelSpec", "worker_device", "load_on_worker"]

#: ``ModelSpec.device`` value meaning "the GPU Ray gave this actor, else the CPU".
AUTO_DEVICE = "auto"


def worker_device() -> str:
    """``"cuda"`` when this process may use a GPU (inside a Ray actor: when Ray assigned it one), else ``"cpu"``."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    try:
        import ray

        if ray.is_initialized():
            # Ray narrows CUDA_VISIBLE_DEVICES to the actor's GPUs; an actor with num_gpus=0 gets none
            return "cuda" if ray.get_gpu_ids() else "cpu"
    except ImportError:
        pass
    return "cuda"


@dataclass(frozen=True)
class ModelSpec:
    """What :func:`thinkctl.load_model` needs, sent to workers instead of the model itself.

    Attributes
    ----------
    spec : str, default="embedded"
        A spec :func:`thinkctl.load_model` accepts: ``"embedded"``, ``"smollm2"``, a local transformers directory
        or a ``.gguf`` file. Paths must exist on every node that runs a worker.
    dtype : str or None, default=None
        Parameter dtype by name (``"bfloat16"``, ``"float32"``); None: as stored.
    device : str, default="auto"
        ``"auto"``: the GPU Ray gave the actor, else the CPU; or a torch device string.

    Examples
    --------
    >>> ModelSpec("embedded").spec
    'embedded'
    """

    spec: str = "embedded"
    dtype: str | None = None
    device: str = AUTO_DEVICE

    def __post_init__(self) -> None:
        if not isinstance(self.spec, (str, os.PathLike)) or not os.fspath(self.spec).strip():
            raise ValueError(f"spec={self.spec!r}; use 'embedded', 'smollm2', a local model directory or a .gguf file")
        if self.dtype is not None and not isinstance(self.dtype, str):
            raise ValueError(f"dtype={self.dtype!r} must be a dtype name such as 'bfloat16' (a string travels to "
                             f"every worker)")

    def load(self) -> tuple[Any, Any]:
        """``(model, tokenizer)`` from :func:`thinkctl.load_model`, on :attr:`device`."""
        from thinkctl.models import load_model

        device = worker_device() if self.device == AUTO_DEVICE else self.device
        return load_model(os.fspath(self.spec), dtype=self.dtype, device=device)


def load_on_worker(model: "ModelSpec | str", task: Any) -> tuple[Any, Any, Any]:
    """``(model, tokenizer, task)`` where a worker runs: the model from its :class:`ModelSpec` (or spec string), the
    task from the registry when it comes by name."""
    import thinkctl

    spec = model if isinstance(model, ModelSpec) else ModelSpec(model)
    loaded, tokenizer = spec.load()
    return loaded, tokenizer, thinkctl.tasks.get(task) if isinstance(task, str) else task
