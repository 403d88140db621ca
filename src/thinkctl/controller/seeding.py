"""The seeds of the controller's sampled generations, from one place, so that a run is reproducible.

A parallel wave's generations are split into sub-batches; each sub-batch seeds torch with
``sample_seed(config.seed, batch_index(wave_index(chunk, wave), sub_batch))`` right before its
``model.generate`` call. Serial thinking is greedy and draws no seed.
"""

from __future__ import annotations

from thinkctl.seeds import torch_seed

__all__ = ["sample_seed", "wave_index", "batch_index"]

#: Primes that spread the (chunk, wave, sub-batch, base seed) indices apart, so that no two draws share a seed.
_CHUNK_STRIDE = 10_007
_BATCH_STRIDE = 7_919
_BASE_STRIDE = 1_000_003


def wave_index(chunk: int, wave: int) -> int:
    """The index of wave ``wave`` of the prompt chunk ``chunk`` (chunks of ``config.prompt_batch`` prompts)."""
    return (chunk * _CHUNK_STRIDE + wave) * 3 + 1


def batch_index(index: int, sub_batch: int) -> int:
    """The index of sub-batch ``sub_batch`` (``config.max_rows`` rows each) of the generation with index ``index``."""
    return index * _BATCH_STRIDE + sub_batch


def sample_seed(base_seed: int, index: int) -> int:
    """The torch seed of the sampled generation ``index`` under ``ControllerConfig.seed`` = ``base_seed``.

    Examples
    --------
    >>> sample_seed(0, batch_index(wave_index(0, 0), 0))
    7919
    """
    return torch_seed(base_seed * _BASE_STRIDE + index)
