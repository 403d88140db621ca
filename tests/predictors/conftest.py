"""Fixtures of the predictor tests: one torch thread, seeded generators, synthetic hidden states and prompts."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> Iterator[None]:
    """The tests share a small machine: keep torch on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20250601)


def make_hidden_states(rng: np.random.Generator, n_problems: int = 150, per_problem: int = 4, hidden: int = 32,
                       signal: float = 3.0):
    """Hidden states whose label follows a logistic model of a random direction, samples grouped by problem.

    Each problem has its own offset (shared by its samples), as hidden states of one prompt are alike.
    Returns ``(X, y, groups, logit)`` of shapes (n, hidden), (n,), (n,), (n,); ``logit`` is the true log-odds.
    """
    n = n_problems * per_problem
    groups = np.repeat(np.arange(n_problems), per_problem)
    offsets = rng.normal(scale=0.5, size=(n_problems, hidden))[groups]
    X = (rng.normal(size=(n, hidden)) + offsets).astype(np.float32)
    w = rng.normal(size=hidden)
    w /= np.linalg.norm(w)
    logit = signal * (X @ w) / X.std()
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(int)
    return X, y, groups, logit


@pytest.fixture
def hidden_data(rng: np.random.Generator):
    return make_hidden_states(rng)


FILLER = ["please", "kindly", "now", "carefully", "quickly", "then", "and", "also", "the", "value", "of"]


def make_prompts(rng: np.random.Generator, n: int = 400):
    """Arithmetic prompts whose difficulty (level 1..5) is the operand digit count, with random filler words so that
    length alone is a weak signal. Returns ``(prompts, levels, solve_prob, tokens)``."""
    prompts, levels = [], []
    for _ in range(n):
        level = int(rng.integers(1, 6))
        a, b = (int(rng.integers(10 ** (level - 1), 10 ** level)) for _ in range(2))
        op = "*" if level >= 3 else "+"
        filler = " ".join(rng.choice(FILLER, size=int(rng.integers(0, 25))))
        prompts.append(f"{filler} compute {a} {op} {b}?")
        levels.append(level)
    levels_arr = np.asarray(levels)
    solve_prob = 1 / (1 + np.exp(1.5 * (levels_arr - 3)))
    tokens = np.exp(3.0 + 0.5 * levels_arr + rng.normal(scale=0.2, size=n))
    return prompts, levels_arr, solve_prob, tokens


@pytest.fixture
def prompt_data(rng: np.random.Generator):
    return make_prompts(rng)


@pytest.fixture
def hidden_factory():
    """``make_hidden_states`` as a fixture (test modules do not import conftest by name)."""
    return make_hidden_states


@pytest.fixture
def prompt_factory():
    """``make_prompts`` as a fixture."""
    return make_prompts
