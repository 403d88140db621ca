"""Connecting to Ray: the optional dependency, the address forms, and a session that cleans up after itself."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Iterator

__all__ = ["RAY_INSTALL", "LOCAL", "AUTO", "RayConfig", "require_ray", "ray_session"]

logger = logging.getLogger(__name__)

#: How to install the optional dependency.
RAY_INSTALL = "pip install 'thinkctl[distributed]'"
#: Address that starts a local Ray instance for the run (and shuts it down afterwards).
LOCAL = "local"
#: Address that joins the running cluster (``ray start --head`` on this node, or ``RAY_ADDRESS``).
AUTO = "auto"


def require_ray() -> ModuleType:
    """The ``ray`` module, or an ImportError that says which extra to install.

    Raises
    ------
    ImportError
        When Ray is not installed (``pip install 'thinkctl[distributed]'``).
    """
    try:
        import ray
    except ImportError as exc:
        raise ImportError(f"running on Ray needs the ray package, which is not installed; install it with "
                          f"`{RAY_INSTALL}`", name="ray") from exc
    return ray


@dataclass(frozen=True)
class RayConfig:
    """Where shards run and how many model replicas run them.

    Attributes
    ----------
    address : str, default="local"
        ``"local"``: start a Ray instance on this machine for the run and shut it down at the end; ``"auto"``: join
        the running cluster (started with ``ray start --head``; ``RAY_ADDRESS`` if set); or a cluster address
        (``"HOST:6379"``, ``"ray://HOST:10001"``). When this process is already connected to Ray (``ray.init`` was
        called), that connection is used whatever the address, and left open.
    num_workers : int or None, default=None
        Ray actors, each holding one model replica. None: one per GPU when the cluster has GPUs, else one per
        ``cpus_per_worker`` CPUs; never more than there are shards.
    gpus_per_worker : float or None, default=None
        GPUs reserved per actor. None: 1 when the cluster has GPUs, else 0 (CPU actors).
    cpus_per_worker : float, default=1.0
        CPUs reserved per actor; a CPU actor runs torch with that many threads.
    max_retries : int, default=2
        How often one shard is retried on a fresh actor after the actor running it died (process killed, node
        lost, out of memory) before the run fails. An exception raised by the work itself is not retried: it is
        a bug or a bad input, and the same shard would raise it again.
    local_num_cpus : int or None, default=None
        CPUs given to a local instance (``address="local"``); None: all of this machine's.
    quiet : bool, default=True
        Keep Ray's own log lines (startup, worker output) off the terminal; warnings about dead workers remain.
    """

    address: str = LOCAL
    num_workers: int | None = None
    gpus_per_worker: float | None = None
    cpus_per_worker: float = 1.0
    max_retries: int = 2
    local_num_cpus: int | None = None
    quiet: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.address, str) or not self.address.strip():
            raise ValueError(f"address={self.address!r}; use 'local', 'auto' or a cluster address such as "
                             f"'HOST:6379' or 'ray://HOST:10001'")
        if self.num_workers is not None and self.num_workers < 1:
            raise ValueError(f"num_workers={self.num_workers} must be at least 1 (or None: one per GPU, else per CPU)")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise ValueError(f"gpus_per_worker={self.gpus_per_worker} must be >= 0 (or None: 1 when there are GPUs)")
        if self.cpus_per_worker <= 0:
            raise ValueError(f"cpus_per_worker={self.cpus_per_worker} must be > 0")
        if self.max_retries < 0:
            raise ValueError(f"max_retries={self.max_retries} must be >= 0")
        if self.local_num_cpus is not None:
            if self.local_num_cpus < 1:
                raise ValueError(f"local_num_cpus={self.local_num_cpus} must be at least 1")
            if self.address != LOCAL:
                raise ValueError(f"local_num_cpus={self.local_num_cpus} applies to a local instance only, but "
                                 f"address={self.address!r}; the cluster's nodes declare their own CPUs "
                                 f"(`ray start --num-cpus N`)")


@contextlib.contextmanager
def ray_session(config: RayConfig = RayConfig()) -> Iterator[ModuleType]:
    """Connect to Ray as ``config.address`` says; disconnect (and stop a local instance) on exit.

    Yields the ``ray`` module. An existing connection of this process is reused and left open.

    Examples
    --------
    >>> from thinkctl.distributed import RayConfig, ray_session
    >>> with ray_session(RayConfig("local", local_num_cpus=2)) as ray:   # doctest: +SKIP
    ...     ray.cluster_resources()["CPU"]
    2.0
    """
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    kwargs = dict(logging_level=logging.ERROR if config.quiet else logging.INFO, log_to_driver=not config.quiet)
    if config.address == LOCAL:
        logger.info("starting a local Ray instance (%s CPUs)", config.local_num_cpus or "all")
        ray.init(address=LOCAL, num_cpus=config.local_num_cpus, include_dashboard=False, **kwargs)
    else:
        logger.info("connecting to the Ray cluster at %s", config.address)
        try:
            ray.init(address=config.address, **kwargs)
        except ConnectionError as exc:
            raise ValueError(f"no Ray cluster at address={config.address!r} ({exc}); start one with "
                             f"`ray start --head` (then use 'auto'), or use 'local' for a one-machine run") from exc
    try:
        yield ray
    finally:
        ray.shutdown()
