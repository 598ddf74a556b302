"""The processhub command, run for real as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "hub.cli"]


@pytest.mark.slow
def test_demo_runs_end_to_end_and_cleans_up() -> None:
    proc = subprocess.run(
        [*CLI, "demo", "--children", "6", "--lease-ttl", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "started 6 children" in out
    assert "node-3 left; its children moved" in out
    assert "node-2 crashed; its children restarted elsewhere" in out
    assert "per node: node-1=6" in out  # after both failures everything runs on node-1
    assert "cleaned up" in out


def test_node_without_hub_id_is_a_usage_error() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROCESSHUB_")}
    proc = subprocess.run([*CLI, "node"], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2
    assert "--hub" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_node_with_missing_app_module_is_a_usage_error() -> None:
    proc = subprocess.run(
        [*CLI, "node", "--hub", "h", "--app", "no_such_module_xyz"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "no_such_module_xyz" in proc.stderr


def test_node_exits_cleanly_on_sigterm(etcd_endpoint: str, hub_prefix: str) -> None:
    proc = subprocess.Popen(
        [*CLI, "node", "--hub", "h", "--endpoints", etcd_endpoint, "--prefix", hub_prefix],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert '"ready"' in proc.stdout.readline()
        proc.terminate()
        assert proc.wait(timeout=30) == 0
        assert '"stopped"' in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_node_exits_cleanly_when_an_operator_drains_it(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    from hub.client import HubClient

    proc = subprocess.Popen(  # noqa: ASYNC220 - the node runs beside the test's event loop
        [
            *CLI,
            "node",
            "--hub",
            "h",
            "--node-id",
            "drained",
            "--endpoints",
            etcd_endpoint,
            "--prefix",
            hub_prefix,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert '"ready"' in proc.stdout.readline()
        async with HubClient("h", endpoints=[etcd_endpoint], prefix=hub_prefix) as client:
            await client.drain("drained", timeout=20)
        assert proc.wait(timeout=30) == 0
        assert '"stopped"' in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_node_serves_health_readiness_and_metrics(etcd_endpoint: str, hub_prefix: str) -> None:
    import json
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    proc = subprocess.Popen(
        [
            *CLI,
            "node",
            "--hub",
            "h",
            "--endpoints",
            etcd_endpoint,
            "--prefix",
            hub_prefix,
            "--http",
            "127.0.0.1:0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ready = json.loads(proc.stdout.readline())
        base = f"http://{ready['http']}"
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as resp:
            assert resp.status == 200
        with urllib.request.urlopen(f"{base}/readyz", timeout=5) as resp:
            assert resp.status == 200
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
            names = {f.name for f in text_string_to_metric_families(resp.read().decode())}
        assert "processhub_lease_time_left_seconds" in names
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
