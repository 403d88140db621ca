"""Shared fixtures of the calibration tests: seeded generators and synthetic, deliberately miscalibrated data."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240501)


def make_miscalibrated(rng: np.random.Generator, n: int, *, scale: float = 3.0, shift: float = 1.0):
    """Labels drawn from sigmoid(z) while the predictor reports the logit ``scale * z + shift``.

    Returns ``(y, reported_logits, true_probabilities)``, each of shape (n,). ``scale > 1`` makes the reported
    probabilities over-confident, ``shift`` biases them towards the positive class.
    """
    z = rng.normal(size=n)
    p_true = 1.0 / (1.0 + np.exp(-z))
    y = (rng.uniform(size=n) < p_true).astype(int)
    return y, scale * z + shift, p_true


@pytest.fixture
def miscalibrated_factory():
    """The generator above, for tests that need several sizes or settings."""
    return make_miscalibrated


@pytest.fixture
def miscalibrated(rng):
    """4000 samples; first half for fitting, second half for evaluation."""
    return make_miscalibrated(rng, 4000)


@pytest.fixture
def calibrated_probs(rng):
    """Perfectly calibrated probabilities: y ~ Bernoulli(p) with p ~ Beta(2, 2); 3000 samples."""
    p = rng.beta(2.0, 2.0, size=3000)
    y = (rng.uniform(size=p.size) < p).astype(int)
    return y, p
