"""Scale-out on Ray: shards of problems over actors, one model replica per actor, results written by the driver.

``ray`` is an optional dependency (``pip install 'thinkctl[distributed]'``); importing this package does not
import it, and anything that needs it raises an ImportError naming that extra.

- :class:`RayConfig` and :func:`ray_session`: where to run (``"local"``, ``"auto"``, a cluster address) and how many
  actors with what resources;
- :class:`ShardRunner` / :func:`run_sharded`: a generic pool of actors, each building its worker once from a
  picklable factory, retrying a shard on a fresh actor when its actor dies;
- :class:`ModelSpec`: the picklable model description a worker loads (``thinkctl.load_model`` spec, dtype, device);
- :func:`collect_distributed` / :class:`CollectWorker`: ``thinkctl collect --ray``, into the same trace store;
- :func:`evaluate_distributed` / :class:`EvaluateWorker`: ``thinkctl evaluate --ray``, into the same JSONL rows.

Examples
--------
>>> from thinkctl.distributed import RayConfig
>>> RayConfig("auto", num_workers=8).gpus_per_worker is None   # None: 1 per worker when the cluster has GPUs
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from thinkctl.distributed.cluster import AUTO, LOCAL, RAY_INSTALL, RayConfig, ray_session, require_ray
from thinkctl.distributed.model import ModelSpec, worker_device
from thinkctl.distributed.runner import RunStats, ShardRunner, run_sharded

__all__ = ["AUTO", "LOCAL", "RAY_INSTALL", "RayConfig", "ray_session", "require_ray", "ModelSpec", "worker_device",
           "ShardRunner", "RunStats", "run_sharded", "CollectWorker", "collect_distributed", "shard_seed",
           "EvaluateWorker", "evaluate_distributed"]

if TYPE_CHECKING:  # pragma: no cover
    from thinkctl.distributed.collect import CollectWorker, collect_distributed, shard_seed
    from thinkctl.distributed.evaluate import EvaluateWorker, evaluate_distributed

_COLLECT = ("CollectWorker", "collect_distributed", "shard_seed")
_EVALUATE = ("EvaluateWorker", "evaluate_distributed")


def __getattr__(name: str) -> Any:
    # the collection job imports torch; the runner does not, so actors of other jobs start without it
    if name in _COLLECT:
        from thinkctl.distributed import collect

        return getattr(collect, name)
    if name in _EVALUATE:
        from thinkctl.distributed import evaluate

        return getattr(evaluate, name)
    raise AttributeError(f"module 'thinkctl.distributed' has no attribute {name!r}")
