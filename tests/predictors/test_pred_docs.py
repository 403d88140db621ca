"""The Examples sections of thinkctl.predictors stay runnable and the public names stay importable."""

from __future__ import annotations

import doctest
import importlib

import pytest

import thinkctl.predictors as predictors

MODULES = [
    "thinkctl.predictors",
    "thinkctl.predictors.splits",
    "thinkctl.predictors.bootstrap",
    "thinkctl.predictors.features",
    "thinkctl.predictors.difficulty",
    "thinkctl.predictors.probe",
    "thinkctl.predictors.layer_sweep",
]

# the public names of thinkctl.predictors, plus the helpers the calibration and controller layers use
REQUIRED = ["HiddenStateProbe", "QueryFeatures", "DifficultyModel", "layer_sweep", "plot_layer_sweep",
            "grouped_train_test_split", "auroc_ci", "spearman_ci", "bootstrap_ci"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


def test_public_names() -> None:
    assert set(REQUIRED) <= set(predictors.__all__)
    for name in predictors.__all__:
        assert getattr(predictors, name) is not None
