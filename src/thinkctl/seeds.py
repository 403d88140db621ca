"""Seeds derived from a user's seed, kept inside the range every generator accepts.

thinkctl derives the seeds of shards, batches and waves from the user's seed by multiplying it by a prime and adding
an index, which keeps them distinct. ``torch.manual_seed`` takes a 64-bit integer, so a large user seed (anything
numpy accepts is allowed) would overflow; :func:`torch_seed` folds a derived seed into ``[0, 2**63)``. Seeds that
already lie there are unchanged, so results for ordinary seeds do not depend on the folding.
"""

from __future__ import annotations

__all__ = ["SEED_SPACE", "torch_seed"]

#: Derived seeds are folded into [0, SEED_SPACE): what ``torch.manual_seed`` and ``numpy`` accept.
SEED_SPACE = 2 ** 63


def torch_seed(value: int) -> int:
    """``value`` folded into ``[0, 2**63)`` (unchanged when it is already there).

    Examples
    --------
    >>> torch_seed(12345), torch_seed(500_000_000 * 1_000_003 * 100_003) < 2 ** 63
    (12345, True)
    """
    return int(value) % SEED_SPACE
