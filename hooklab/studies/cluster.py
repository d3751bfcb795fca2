"""Which Ray to use, and one clear error when it is not there.

``--ray local`` (or ``address="local"``) starts a Ray on this machine with its CPUs; any other
address (``host:port`` of a head node, or a ``ray://host:port`` client address) is checked with a
TCP connect first, so a cluster that does not answer is one :class:`ClusterError` after
``timeout`` seconds, never a hang. Without an address, ``$HOOKLAB_RAY_ADDRESS`` decides; without
that, the work runs in-process.

Example:
    >>> address = resolve_address(args.ray)          # None: in-process
    >>> if address is not None:
    ...     with ray_session(address, num_cpus=2):
    ...         ...                                   # ray.data / ray.tune calls
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hooklab.core.errors import HooklabError

__all__ = ["ENV_FORWARDED", "RAY_ENV", "ClusterError", "ray_available", "ray_session",
           "resolve_address"]

log = logging.getLogger(__name__)

#: The environment variable naming the Ray cluster when no address is given.
RAY_ENV = "HOOKLAB_RAY_ADDRESS"
#: Variables the workers need to see what the driver sees (registered models, caches, stores).
ENV_FORWARDED = ("HOOKLAB_MODELS", "HOOKLAB_CACHE", "HOOKLAB_STORE", "PYTHONPATH")
#: Default ports: a head node's GCS, and the Ray Client server.
GCS_PORT, CLIENT_PORT = 6379, 10001


class ClusterError(HooklabError, RuntimeError):
    """Ray is not installed, or the cluster named does not answer."""


def ray_available() -> bool:
    """Whether the optional ``ray`` package can be imported."""
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def resolve_address(arg: str | None) -> str | None:
    """The Ray address to use: ``arg``, else ``$HOOKLAB_RAY_ADDRESS``, else None (in-process).

    ``"local"`` means a Ray started here; an empty string counts as not given.
    """
    address = (arg if arg is not None else os.environ.get(RAY_ENV, "")).strip()
    return address or None


def _host_port(address: str) -> tuple[str, int]:
    rest, default = address, GCS_PORT
    if rest.startswith("ray://"):
        rest, default = rest[len("ray://"):], CLIENT_PORT
    rest = rest.rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep:
        return rest, default
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise ClusterError(f"Ray address {address!r} is not host:port (e.g. 10.0.0.5:6379, "
                           "ray://10.0.0.5:10001, or 'local')") from None


def _probe(address: str, timeout: float) -> None:
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as exc:
        raise ClusterError(f"the Ray cluster at {address!r} does not answer ({host}:{port}: "
                           f"{exc.strerror or exc}, waited up to {timeout:g} s); start it with "
                           "'ray start --head' or use --ray local") from None


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ClusterError("Ray is not installed: pip install 'hooklab[ray]' "
                           "(or run without --ray, in-process)") from None
    return ray


@contextmanager
def ray_session(address: str, *, num_cpus: int | None = None, timeout: float = 20.0
                ) -> Iterator[Any]:
    """A connected Ray for the body; yields the ``ray`` module.

    Reuses a Ray the caller already initialised (and leaves it running); otherwise starts a local
    one (``address="local"``, ``num_cpus`` default: this machine's) or connects to ``address``
    after a TCP check, and shuts it down on exit. The variables in :data:`ENV_FORWARDED` are
    passed to the workers.
    """
    ray = _import_ray()
    if ray.is_initialized():
        yield ray
        return
    env = {k: os.environ[k] for k in ENV_FORWARDED if os.environ.get(k)}
    kwargs: dict[str, Any] = {"runtime_env": {"env_vars": env}} if env else {}
    kwargs.update(include_dashboard=False, log_to_driver=False,
                  logging_level=logging.WARNING)
    if address == "local":
        ray.init(num_cpus=num_cpus or os.cpu_count() or 1, **kwargs)
    else:
        _probe(address, timeout)
        if not address.startswith("ray://"):
            kwargs.pop("include_dashboard")
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, TimeoutError) as exc:
            raise ClusterError(f"could not join the Ray cluster at {address!r}: {exc}") from None
    log.info("Ray up: %s", ray.cluster_resources())
    try:
        yield ray
    finally:
        ray.shutdown()
