"""grouped_train_test_split: partitions, never leaks a group, deterministic, stratifies, validates."""

from __future__ import annotations

import math

import numpy as np
import pytest

from thinkctl.predictors import grouped_train_test_split


@pytest.mark.parametrize("seed", range(10))
def test_no_group_straddles_train_and_test(seed: int) -> None:
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 8, size=60)  # 60 problems with 1..7 samples each
    groups = rng.permutation(np.repeat([f"p{i}" for i in range(60)], sizes))
    train, test = grouped_train_test_split(groups, test_size=0.3, seed=seed)
    assert set(groups[train]).isdisjoint(groups[test])
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(groups.size))
    assert len(set(groups[test])) == math.ceil(0.3 * 60)


def test_int_n_means_one_group_per_sample_and_int_test_size_counts_groups() -> None:
    train, test = grouped_train_test_split(10, test_size=3, seed=0)
    assert len(test) == 3 and len(train) == 7
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)


def test_deterministic_for_a_seed_and_seed_dependent() -> None:
    groups = np.repeat(np.arange(50), 3)
    a = grouped_train_test_split(groups, test_size=0.2, seed=4)
    b = grouped_train_test_split(groups, test_size=0.2, seed=4)
    c = grouped_train_test_split(groups, test_size=0.2, seed=5)
    assert np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_stratify_puts_rare_class_on_both_sides() -> None:
    groups = np.repeat(np.arange(100), 2)
    y = np.zeros(200, dtype=int)
    y[groups < 4] = 1  # 4 positive problems out of 100
    for seed in range(20):
        train, test = grouped_train_test_split(groups, test_size=0.2, seed=seed, stratify=y)
        assert y[test].sum() > 0 and y[train].sum() > 0
        assert set(groups[train]).isdisjoint(groups[test])
    # without stratification some seed leaves the test split without positives
    assert any(y[grouped_train_test_split(groups, test_size=0.2, seed=s)[1]].sum() == 0 for s in range(20))


def test_stratified_split_keeps_level_mix() -> None:
    levels = np.repeat([1, 2, 3, 4, 5], [100, 200, 300, 200, 200])
    _, test = grouped_train_test_split(levels.size, test_size=0.3, seed=0, stratify=levels)
    counts = np.bincount(levels[test], minlength=6)[1:]
    np.testing.assert_allclose(counts, 0.3 * np.array([100, 200, 300, 200, 200]), atol=2)


@pytest.mark.parametrize("test_size", [0.0, 1.0, 1.5, -0.2, 0, 10, True, "0.2"])
def test_bad_test_size_raises(test_size) -> None:
    with pytest.raises(ValueError, match="test_size"):
        grouped_train_test_split(np.arange(10), test_size=test_size)


def test_bad_groups_raise() -> None:
    with pytest.raises(ValueError, match="at least 2 groups"):
        grouped_train_test_split(np.zeros(5))
    with pytest.raises(ValueError, match="1-D"):
        grouped_train_test_split(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="stratify"):
        grouped_train_test_split(np.arange(10), stratify=np.zeros(3))
    with pytest.raises(ValueError, match="at least 2"):
        grouped_train_test_split(1)
