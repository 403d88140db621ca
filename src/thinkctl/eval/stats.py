"""Small statistics shared by reports: intervals for proportions and means."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["wilson_interval", "mean_ci"]

_Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = _Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95 % by default); ``(0, 1)`` when ``n == 0``."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def mean_ci(values: Sequence[float], z: float = _Z95) -> tuple[float, float]:
    """Normal-approximation interval of a mean (95 % by default)."""
    v = np.asarray(values, dtype=float)
    if v.size < 2:
        m = float(v.mean()) if v.size else float("nan")
        return (m, m)
    m, se = float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size))
    return (m - z * se, m + z * se)
