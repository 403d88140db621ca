"""Without Ray: `--ray` fails with one line naming the extra; configs refuse bad values with the fix."""

from __future__ import annotations

import sys

import pytest

from thinkctl.cli import main
from thinkctl.distributed import RAY_INSTALL, ModelSpec, RayConfig, ShardRunner, require_ray


@pytest.fixture
def no_ray(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError


def test_require_ray_names_the_extra(no_ray):
    with pytest.raises(ImportError, match=r"pip install 'thinkctl\[distributed\]'"):
        require_ray()


def test_collect_with_ray_but_no_ray_is_a_one_line_error(no_ray, tmp_path, capsys):
    rc = main(["collect", "--ray", "local", "--out", str(tmp_path / "s"), "--n", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("thinkctl collect: error:")
    assert RAY_INSTALL in err
    assert not (tmp_path / "s").exists()  # failed before touching the store


def test_a_runner_without_ray_names_the_extra(no_ray):
    with pytest.raises(ImportError, match="thinkctl\\[distributed\\]"):
        ShardRunner(dict, RayConfig(num_workers=1)).start()


def test_ray_workers_without_ray_is_refused(tmp_path, capsys):
    rc = main(["collect", "--ray-workers", "2", "--out", str(tmp_path / "s"), "--n", "2", "--no-progress"])
    assert rc == 2
    assert "--ray-workers=2 needs --ray ADDRESS" in capsys.readouterr().err


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_workers=0), "num_workers=0 must be at least 1"),
    (dict(cpus_per_worker=0), "cpus_per_worker=0 must be > 0"),
    (dict(gpus_per_worker=-1), "gpus_per_worker=-1 must be >= 0"),
    (dict(max_retries=-1), "max_retries=-1 must be >= 0"),
    (dict(address=" "), "use 'local', 'auto' or a cluster address"),
    (dict(address="auto", local_num_cpus=2), "applies to a local instance only"),
])
def test_ray_config_refuses_bad_values_with_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RayConfig(**kwargs)


def test_model_spec_refuses_non_string_dtype():
    import torch

    with pytest.raises(ValueError, match="dtype=torch.bfloat16 must be a dtype name"):
        ModelSpec("embedded", dtype=torch.bfloat16)
    assert ModelSpec("embedded", dtype="bfloat16").dtype == "bfloat16"


@pytest.mark.parametrize("name", ["thinkctl.distributed", "thinkctl.distributed.model", "thinkctl.distributed.runner",
                                  "thinkctl.distributed.collect"])
def test_docstring_examples_run(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
