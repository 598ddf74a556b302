"""The processhub command, run for real as a subprocess."""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from support.wait import wait_until_sync

from hub.operate.cli import build_parser

pytestmark = pytest.mark.slow  # the command, run as a subprocess

CLI = [sys.executable, "-m", "hub.operate.cli"]


def _demo_pids(out: str) -> list[int]:
    """Every PID the demo reported starting (etcd and the three nodes)."""
    return sorted({int(pid) for pid in re.findall(r"\(pid (\d+)\)", out)})


def _gone(pid: int) -> bool:
    """True when no process has ``pid`` any more (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_demo_runs_end_to_end_and_cleans_up() -> None:
    started = time.monotonic()
    proc = subprocess.run(
        [*CLI, "demo", "--children", "6", "--lease-ttl", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    steps = [
        "1. start etcd",
        "2. start three nodes",
        "started 6 children",
        "4. kill -9 node-3",
        "node-3 crashed; its children restarted elsewhere",
        "5. stop node-2 gracefully",
        "node-2 left (exit code 0); its children moved",
        "per node: node-1=6",  # after both failures everything runs on node-1
        "cleaned up",
    ]
    positions = [out.find(step) for step in steps]
    assert -1 not in positions and positions == sorted(positions), out
    header = next(line for line in out.splitlines() if line.split()[:2] == ["NODE", "STATE"])
    assert header.split() == ["NODE", "STATE", "CHILDREN", "SOME", "OF", "THEM"]
    assert "\x1b[" not in out + proc.stderr  # a pipe: no colours, no progress bars
    assert "Traceback" not in proc.stderr
    pids = _demo_pids(out)
    assert len(pids) == 4, out  # etcd and three nodes
    assert all(_gone(pid) for pid in pids)
    assert took < 60, f"the demo took {took:.1f}s"


def test_demo_cleans_up_on_ctrl_c() -> None:
    proc = subprocess.Popen(
        [*CLI, "demo", "--children", "4", "--lease-ttl", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        seen = ""
        for line in proc.stdout:  # the long lease TTL keeps it waiting in the failover step
            seen += line
            if "4. kill -9" in line:
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, seen + out + err
    assert "Traceback" not in err
    pids = _demo_pids(seen)
    assert len(pids) == 4, seen
    wait_until_sync(lambda: all(_gone(pid) for pid in pids), timeout=5)


def test_help_works_for_every_verb() -> None:
    parser = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"ls", "nodes", "inspect", "start", "stop", "move", "drain", "watch", "demo"} <= set(
        verbs
    )
    for argv in [["--help"], *([verb, "--help"] for verb in sorted(verbs))]:
        proc = subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, (argv, proc.stderr)
        assert proc.stdout.startswith("usage: processhub"), (argv, proc.stdout)
        assert proc.stderr == ""


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
