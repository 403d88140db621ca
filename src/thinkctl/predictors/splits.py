"""Grouped train/test splits: every sample of one group (one problem) lands on the same side.

Traces hold many samples per problem (several sampled answers, several checkpoints per answer). A split by
sample would let a predictor memorise a problem from its training rows and look good on its test rows; a split
by problem id does not. Every held-out evaluation in thinkctl goes through :func:`grouped_train_test_split`.

Examples
--------
>>> import numpy as np
>>> from thinkctl.predictors import grouped_train_test_split
>>> groups = np.repeat(np.arange(10), 3)            # 10 problems, 3 samples each
>>> train, test = grouped_train_test_split(groups, test_size=0.2, seed=0)
>>> len(test), len(set(groups[train]) & set(groups[test]))
(6, 0)
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["grouped_train_test_split", "DEFAULT_TEST_SIZE"]

#: Fraction of groups held out when the caller does not say (scikit-learn's ``train_test_split`` default).
DEFAULT_TEST_SIZE = 0.25


def _n_test_groups(test_size: float | int, n_groups: int) -> int:
    if isinstance(test_size, bool) or not isinstance(test_size, numbers.Real):
        raise ValueError(f"test_size={test_size!r} must be a fraction in (0, 1) or a number of groups")
    if isinstance(test_size, numbers.Integral):
        n_test = int(test_size)
        if not 1 <= n_test <= n_groups - 1:
            raise ValueError(f"test_size={n_test} groups is out of range for {n_groups} groups; "
                             f"use 1..{n_groups - 1} or a fraction in (0, 1)")
        return n_test
    frac = float(test_size)
    if not 0.0 < frac < 1.0:
        raise ValueError(f"test_size={test_size!r} must be a fraction strictly between 0 and 1 (e.g. 0.25)")
    n_test = math.ceil(frac * n_groups)
    if not 1 <= n_test <= n_groups - 1:
        raise ValueError(f"test_size={test_size!r} leaves no group for training or testing with only {n_groups} "
                         "groups; pass more groups or a different test_size")
    return n_test


def grouped_train_test_split(
    n_or_groups: int | ArrayLike,
    *,
    test_size: float | int = DEFAULT_TEST_SIZE,
    seed: int = 0,
    stratify: ArrayLike | None = None,
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Split sample indices into train and test so that no group straddles the two.

    Parameters
    ----------
    n_or_groups : int or array-like of shape (n_samples,)
        Either the number of samples (each sample is its own group) or the group label of every sample
        (e.g. problem ids; any hashable, sortable values).
    test_size : float or int, default=0.25
        Fraction of **groups** to hold out, rounded up (as scikit-learn's ``GroupShuffleSplit``), or an int number of
        groups. At least one group must remain on each side.
    seed : int, default=0
        Seed of the ``numpy.random.default_rng`` that shuffles the groups; the split is a pure function of
        ``(groups, test_size, seed, stratify)``.
    stratify : array-like of shape (n_samples,), optional
        Class label of every sample (e.g. the binary target or a difficulty level). Groups are then split within
        each stratum, the stratum of a group being the most common label among its samples (ties: the smallest),
        so that train and test keep roughly the same label mix; every stratum with at least two groups has at
        least one group on each side.

    Returns
    -------
    train_idx, test_idx : ndarray of shape (n_train,), (n_test,)
        Sorted integer indices into the samples. They partition ``range(n_samples)``.

    Raises
    ------
    ValueError
        On a bad ``test_size``, fewer than two groups, or ``stratify`` of the wrong length.
    """
    groups = _as_groups(n_or_groups)
    n = groups.shape[0]
    uniq, inverse = np.unique(groups, return_inverse=True)
    n_groups = uniq.shape[0]
    if n_groups < 2:
        raise ValueError(f"need at least 2 groups to split, got {n_groups}; pass more samples or problems")
    n_test = _n_test_groups(test_size, n_groups)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed={seed!r} must be an integer")
    rng = np.random.default_rng(int(seed))
    if stratify is None:
        test_groups = rng.permutation(n_groups)[:n_test]
    else:
        test_groups = _stratified_groups(np.asarray(stratify), inverse, n_groups, n_test, rng, n)
    is_test_group = np.zeros(n_groups, dtype=bool)
    is_test_group[test_groups] = True
    is_test = is_test_group[inverse]
    return np.flatnonzero(~is_test).astype(np.intp), np.flatnonzero(is_test).astype(np.intp)


def _as_groups(n_or_groups: int | ArrayLike) -> NDArray[Any]:
    if isinstance(n_or_groups, numbers.Integral) and not isinstance(n_or_groups, bool):
        n = int(n_or_groups)
        if n < 2:
            raise ValueError(f"n={n} samples cannot be split; pass at least 2")
        return np.arange(n)
    groups = np.asarray(n_or_groups)
    if groups.ndim != 1:
        raise ValueError(f"groups must be 1-D of shape (n_samples,), got shape {groups.shape}; "
                         "pass one group label (problem id) per sample, or an int number of samples")
    return groups


def _stratified_groups(labels: NDArray[Any], inverse: NDArray[np.intp], n_groups: int, n_test: int,
                       rng: np.random.Generator, n: int) -> NDArray[np.intp]:
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"stratify has shape {labels.shape} but there are {n} samples; pass one label per sample")
    label_values, label_idx = np.unique(labels, return_inverse=True)
    counts = np.zeros((n_groups, label_values.shape[0]), dtype=np.int64)
    np.add.at(counts, (inverse, label_idx), 1)
    stratum = counts.argmax(axis=1)  # most common label per group; argmax breaks ties towards the smallest
    frac = n_test / n_groups
    chosen: list[NDArray[np.intp]] = []
    leftovers: list[NDArray[np.intp]] = []
    for s in range(label_values.shape[0]):
        members = rng.permutation(np.flatnonzero(stratum == s))
        k = int(np.floor(frac * members.shape[0]))
        if members.shape[0] >= 2:
            k = min(max(k, 1), members.shape[0] - 1)
        chosen.append(members[:k])
        leftovers.append(members[k:])
    picked = np.concatenate(chosen) if chosen else np.empty(0, dtype=np.intp)
    rest = rng.permutation(np.concatenate(leftovers)) if leftovers else np.empty(0, dtype=np.intp)
    if picked.shape[0] < n_test:  # top up from the remaining groups, uniformly
        picked = np.concatenate([picked, rest[: n_test - picked.shape[0]]])
    elif picked.shape[0] > n_test:  # the per-stratum minimum of one group overshot; keep a random subset
        picked = rng.permutation(picked)[:n_test]
    return picked.astype(np.intp)
