"""etcd in a Docker container, through testcontainers, for tests.

Only used when a Docker engine answers within a few seconds: the probe must be cheap on
machines without Docker, where the caller falls back to a local binary.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

__all__ = ["ETCD_IMAGE", "docker_available", "docker_etcd"]

ETCD_IMAGE = "quay.io/coreos/etcd:v3.5.17"
_PROBE_TIMEOUT = 5.0
_HEALTH_TIMEOUT = 60.0  # a cold image pull happens inside container.start(), not here


def docker_available(timeout: float = _PROBE_TIMEOUT) -> bool:
    """True if a Docker engine answers within ``timeout`` seconds."""
    cli = shutil.which("docker")
    if cli is not None:
        try:
            probe = subprocess.run(
                [cli, "info"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return probe.returncode == 0
    try:  # no CLI: ask the engine directly (DOCKER_HOST or the default socket)
        docker: Any = importlib.import_module("docker")
        client = docker.from_env(timeout=int(timeout))
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _wait_healthy(url: str, timeout: float) -> None:
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
def docker_etcd(image: str = ETCD_IMAGE) -> Iterator[str]:
    """Run a single-member etcd container; yields its ``host:port``, removes it on exit.

    Raises:
        ImportError: testcontainers is not installed.
        Exception: whatever Docker raises (image pull, port mapping) or TimeoutError.
    """
    from testcontainers.core.container import DockerContainer

    container: Any = (
        DockerContainer(image)
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
        _wait_healthy(f"http://{endpoint}/health", _HEALTH_TIMEOUT)
        yield endpoint
    finally:
        container.stop()
