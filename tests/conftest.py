"""Shared fixtures for the processhub test suite.

etcd for integration tests, chosen once per session, in this order:

1. ``$ETCD_ENDPOINTS`` (comma-separated ``host:port`` list) — an etcd you run yourself;
2. a Docker engine that answers ``docker info`` within 5 s — ``quay.io/coreos/etcd``
   started with testcontainers;
3. :class:`hub.localetcd.LocalEtcd` with the binary from ``processhub[etcd]``.

``$PROCESSHUB_TEST_ETCD=docker|local`` forces option 2 or 3. When no etcd can be had,
etcd tests are skipped — except under ``CI=true``, where they fail: CI never silently
skips them.

Tests that use ``etcd_endpoint``, ``etcd_endpoints`` or ``own_etcd`` (directly or through
another fixture) are marked ``etcd`` automatically: ``pytest -m "not etcd"`` runs the
rest.

Helpers live in ``tests/support`` (``from support.proxy import TcpProxy``,
``from support.wait import wait_until``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any, NoReturn

import pytest
from support.wait import wait_until

from hub.errors import ConfigError
from hub.localetcd import LocalEtcd

ETCD_IMAGE = "quay.io/coreos/etcd:v3.5.17"
_ETCD_FIXTURES = frozenset({"etcd_endpoint", "etcd_endpoints", "own_etcd"})
_DOCKER_PROBE_TIMEOUT = 5.0
_CONTAINER_HEALTH_TIMEOUT = 60.0


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}


def _unavailable(reason: str) -> NoReturn:
    """No etcd: fail under CI (never skip etcd tests there), skip elsewhere."""
    if _in_ci():
        pytest.fail(f"etcd required under CI=true: {reason}", pytrace=False)
    pytest.skip(f"no etcd available: {reason}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _ETCD_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.etcd)


# ------------------------------------------------------------------ etcd selection


def _docker_available() -> bool:
    """True if a Docker engine answers within a few seconds."""
    docker_cli = shutil.which("docker")
    if docker_cli is not None:
        try:
            probe = subprocess.run(
                [docker_cli, "info"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=_DOCKER_PROBE_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return probe.returncode == 0
    try:  # no CLI: ask the engine directly (DOCKER_HOST or the default socket)
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=int(_DOCKER_PROBE_TIMEOUT))
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _wait_http_health(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if json.loads(response.read()).get("health") == "true":
                    return
        except (OSError, ValueError):
            pass
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{url} not healthy after {timeout:.0f}s")
        time.sleep(0.1)


@contextlib.contextmanager
def _docker_etcd() -> Iterator[str]:
    from testcontainers.core.container import DockerContainer

    container: Any = (
        DockerContainer(ETCD_IMAGE)
        .with_command(
            [
                "etcd",
                "--name=processhub-test",
                "--data-dir=/etcd-data",
                "--listen-client-urls=http://0.0.0.0:2379",
                "--advertise-client-urls=http://127.0.0.1:2379",
                "--log-level=warn",
                "--auto-compaction-retention=0",
                f"--quota-backend-bytes={8 * 1024**3}",
            ]
        )
        .with_exposed_ports(2379)
    )
    container.start()
    try:
        endpoint = f"{container.get_container_host_ip()}:{container.get_exposed_port(2379)}"
        _wait_http_health(f"http://{endpoint}/health", _CONTAINER_HEALTH_TIMEOUT)
        yield endpoint
    finally:
        container.stop()


@contextlib.contextmanager
def _local_etcd() -> Iterator[str]:
    with LocalEtcd(name="processhub-test") as etcd:
        yield etcd.endpoint


def _endpoints_from_env() -> list[str] | None:
    raw = os.environ.get("ETCD_ENDPOINTS", "")
    endpoints = [e.strip().removeprefix("http://") for e in raw.split(",") if e.strip()]
    return endpoints or None


@pytest.fixture(scope="session")
def etcd_endpoints() -> Iterator[list[str]]:
    """Every client endpoint (``"host:port"``) of the session's etcd."""
    from_env = _endpoints_from_env()
    if from_env is not None:
        yield from_env
        return
    mode = os.environ.get("PROCESSHUB_TEST_ETCD", "auto").strip().lower()
    if mode not in {"auto", "docker", "local"}:
        pytest.fail(f"PROCESSHUB_TEST_ETCD must be auto, docker or local, not {mode!r}")
    errors: list[str] = []
    with contextlib.ExitStack() as stack:
        endpoint: str | None = None
        if mode in {"auto", "docker"}:
            if _docker_available():
                try:
                    endpoint = stack.enter_context(_docker_etcd())
                except Exception as exc:  # image pull, port mapping, health...
                    errors.append(f"docker: {exc!r}")
            else:
                errors.append("docker: no engine answered `docker info`")
        if endpoint is None and mode in {"auto", "local"}:
            try:
                endpoint = stack.enter_context(_local_etcd())
            except (ConfigError, RuntimeError, OSError) as exc:
                errors.append(f"local: {exc}")
        if endpoint is None:
            _unavailable("; ".join(errors))
        yield [endpoint]


@pytest.fixture(scope="session")
def etcd_endpoint(etcd_endpoints: list[str]) -> str:
    """``"host:port"`` of the session's etcd (the first of ``etcd_endpoints``)."""
    return etcd_endpoints[0]


@pytest.fixture
def own_etcd() -> Iterator[LocalEtcd]:
    """A fresh, started LocalEtcd for this test alone (free to stop, pause, restart)."""
    try:
        etcd = LocalEtcd(name="processhub-own")
    except ConfigError as exc:
        _unavailable(str(exc))
    with contextlib.closing(etcd):
        etcd.start()
        yield etcd


@pytest.fixture
def hub_prefix() -> str:
    """A key prefix no other test uses, e.g. ``/processhub-test-1a2b3c4d``."""
    return f"/processhub-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail the test if an asyncio task is still pending when it ends.

    Request it *first* in the test's arguments so that its teardown runs after every
    other fixture's. Tasks get a short grace period to finish being cancelled.
    """
    yield
    current = asyncio.current_task()

    def pending() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if t is not current and not t.done()]

    with contextlib.suppress(AssertionError):
        await wait_until(lambda: not pending(), timeout=1.0, interval=0.01)
    leaked = pending()
    for task in leaked:
        task.cancel()  # reported below; do not let them run into the next test
    assert not leaked, f"{len(leaked)} asyncio task(s) left pending: " + ", ".join(
        repr(t) for t in leaked
    )
