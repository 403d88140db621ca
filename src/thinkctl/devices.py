"""Torch devices named by the user: one check, with an error that says what to use.

A bottom-layer module (torch is imported only when a device is resolved), shared by the model loaders and the
training of the embedded model.
"""

from __future__ import annotations

from typing import Any

__all__ = ["resolve_device"]


def resolve_device(device: Any) -> Any:
    """``device`` as a ``torch.device``; a ValueError that says what to use when it is malformed or names a CUDA GPU
    this torch cannot see."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device={device!r} is not a torch device; use 'cpu', 'cuda', 'cuda:1', 'mps', ...") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but this torch ({torch.__version__}) sees no CUDA GPU; use device='cpu' "
                         "or a CUDA build of torch on a machine with a GPU")
    return dev
