"""Where `edgemine embed` and `edgemine score` run their pipeline: ``local`` (this machine's
processes) or ``ray`` (Ray Data on a Ray cluster, jobs.ray_runner).

Kept free of torch and of Ray's own import, so a command reaches the cluster (or says in one
line that it cannot) before it loads any model: an address that does not answer is a
ClusterError within ``CONNECT_TIMEOUT_S`` (Ray itself would retry for minutes).
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from mining.core.errors import ClusterError, ConfigError

log = logging.getLogger(__name__)

RUNNERS = ("local", "ray")
CONNECT_TIMEOUT_S = 10.0
DEFAULT_GCS_PORT = 6379
WHAT_TO_SET = ("set --address (or RAY_ADDRESS) to the cluster's head: HOST:PORT of its GCS "
               f"(port {DEFAULT_GCS_PORT} by default), ray://HOST:10001 for Ray Client, "
               "or auto on a node of the cluster")


@dataclass(frozen=True)
class Runner:
    """Where the read-decode-embed pipeline runs: ``local`` (this process and its DataLoader
    workers) or ``ray`` (Ray Data on the cluster at ``address``: ``auto``, ``HOST:PORT`` or
    ``ray://HOST:PORT``; None: $RAY_ADDRESS when set, else a Ray started on this machine for the run)."""

    kind: str = "local"
    address: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in RUNNERS:
            raise ConfigError(f"unknown runner {self.kind!r}; allowed: {', '.join(RUNNERS)}")
        if self.address is not None and self.kind != "ray":
            raise ConfigError("--address names a Ray cluster: use it with --runner ray")

    @property
    def model_device(self) -> str | None:
        """The device of the driver's own copy of the model: on Ray the driver only reads its
        name, tag and width (the actors embed), so a CPU copy does; None: the config's."""
        return "cpu" if self.kind == "ray" else None

    def connect(self) -> None:
        """Reach the cluster before any work (a ClusterError in bounded time when it cannot be)."""
        if self.kind == "ray":
            connect(self.address)


def import_ray() -> ModuleType:
    """Ray, or a ClusterError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 - the Data library's own requirements (pandas, pyarrow) must be there too
    except ImportError as e:
        raise ClusterError(f"--runner ray needs Ray Data, which is not installed ({e}): "
                           "pip install 'edgemine[ray]' (ray[data]==2.60.0)") from None
    return ray


def connect(address: str | None) -> None:
    """Connect this process to the Ray cluster at ``address`` (``auto``, ``HOST:PORT``,
    ``ray://HOST:PORT``; None: $RAY_ADDRESS, else start a Ray on this machine for the run)."""
    ray = import_ray()
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address == "auto":
        found = _auto_address()
        if found:
            _check_answers(found, f"auto ({found})")
    elif address:
        _check_answers(address)
    logging.getLogger("ray").setLevel(logging.WARNING)
    options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address is None:
        options["include_dashboard"] = False
    try:
        ray.init(address=address, **options)
    except ImportError as e:  # ray://: Ray Client, an extra of its own
        raise ClusterError(f"{address} is a Ray Client address, which needs `pip install 'ray[client]==2.60.0'` "
                           f"({e}); or run the job on the cluster (`ray job submit`) with --address auto") from None
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ClusterError(f"cannot connect to a Ray cluster at {address or 'auto'}: {first}; {WHAT_TO_SET}") from None
    log.info("running on Ray %s: %s", ray.__version__, describe_resources(ray.cluster_resources()))


def _auto_address() -> str | None:
    """HOST:PORT of the cluster ``auto`` names ($RAY_ADDRESS, else the last `ray start` on this
    machine), by Ray's own lookup (private, so of the pinned version only); None: not found,
    and ``ray.init`` then says so at once."""
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address("auto")
    except (ImportError, AttributeError, ConnectionError, ValueError):
        return None


def _check_answers(address: str, shown: str | None = None) -> None:
    """A TCP connection to the address's host and port, or a ClusterError saying what to set."""
    host_port = address.removeprefix("ray://")
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--address {address!r} is not HOST:PORT, ray://HOST:PORT or auto; {WHAT_TO_SET}")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise ClusterError(f"no Ray cluster answers at {shown or address} ({why}): start one (`ray start --head`) "
                           f"or {WHAT_TO_SET}") from None


def describe_resources(resources: dict[str, float]) -> str:
    return f"{resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs"


