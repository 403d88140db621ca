"""A local Ray instance with 2 CPU workers, shared by the tests of this folder that need Ray."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(scope="session")
def ray_local():
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'thinkctl[distributed]')")
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.ERROR,
                 log_to_driver=False)
    yield ray
    ray.shutdown()
