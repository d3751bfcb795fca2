"""Which Ray hooklab uses: the address rules, a cluster that does not answer (one message within
the timeout, no hang), and a local Ray that starts and stops."""

from __future__ import annotations

import socket
import time

import pytest

from hooklab.studies import cluster
from hooklab.studies.cluster import ClusterError, ray_session, resolve_address


def test_address_argument_then_environment_then_in_process(monkeypatch):
    monkeypatch.delenv(cluster.RAY_ENV, raising=False)
    assert resolve_address(None) is None
    assert resolve_address("  ") is None
    monkeypatch.setenv(cluster.RAY_ENV, "10.0.0.5:6379")
    assert resolve_address(None) == "10.0.0.5:6379"
    assert resolve_address("local") == "local"


@pytest.mark.parametrize("address,expected", [
    ("10.0.0.5", ("10.0.0.5", 6379)), ("10.0.0.5:7000", ("10.0.0.5", 7000)),
    ("ray://head", ("head", 10001)), ("ray://head:9999/", ("head", 9999)),
    ("[::1]:6380", ("::1", 6380))])
def test_host_and_port(address, expected):
    assert cluster._host_port(address) == expected


def test_a_bad_port_is_named():
    with pytest.raises(ClusterError, match="not host:port"):
        cluster._host_port("head:http")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_cluster_that_does_not_answer_is_one_message_without_a_hang():
    port = _closed_port()
    t0 = time.monotonic()
    with pytest.raises(ClusterError, match=rf"127\.0\.0\.1:{port}.*does not answer"):
        with ray_session(f"127.0.0.1:{port}", timeout=2.0):
            raise AssertionError("the body must not run")
    assert time.monotonic() - t0 < 10


def test_an_address_where_no_ray_listens_is_one_message_in_bounded_time():
    """Unroutable, so either the TCP check gives up after its timeout, or (behind a network
    that accepts every connection, as on these machines) Ray's own join gives up."""
    pytest.importorskip("ray")
    t0 = time.monotonic()
    with pytest.raises(ClusterError, match="does not answer|could not join the Ray cluster"):
        with ray_session("10.255.255.1:6379", timeout=1.0):
            raise AssertionError("the body must not run")
    assert time.monotonic() - t0 < 90


def test_missing_ray_is_a_clear_message(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("no ray")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ClusterError, match=r"pip install 'hooklab\[ray\]'"):
        with ray_session("local"):
            pass


def test_local_ray_starts_with_the_cpus_asked_and_stops():
    ray = pytest.importorskip("ray")
    assert not ray.is_initialized()
    with ray_session("local", num_cpus=1) as r:
        assert r.is_initialized()
        assert r.cluster_resources().get("CPU") == 1.0
        with ray_session("local") as inner:  # reused, not restarted
            assert inner is r
        assert r.is_initialized()
    assert not ray.is_initialized()
