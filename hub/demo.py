"""``processhub demo``: a local etcd, three node processes, children that move.

Everything it starts (etcd, nodes) it stops again, by PID, on success, failure or Ctrl-C.
The demo worker, :class:`Counter`, is also a minimal example of a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter as Tally
from collections.abc import Iterator
from typing import IO, Any

from hub.client import HubClient
from hub.model import ChildSpec
from hub.worker import Context

HUB_ID = "demo"


class Counter:
    """Demo worker: counts ticks. ``ctx.fencing_token`` tells instances apart."""

    async def run(self, ctx: Context) -> None:
        ticks = 0
        while not ctx.stopping.is_set():
            ticks += 1
            await asyncio.sleep(0.5)


def _say(text: str = "") -> None:
    print(text, flush=True)


class _Node:
    """One ``processhub node`` subprocess."""

    def __init__(self, node_id: str, endpoint: str, lease_ttl: int) -> None:
        self.node_id = node_id
        cmd = [
            sys.executable,
            "-m",
            "hub.cli",
            "--log-level",
            "error",
            "node",
            "--hub",
            HUB_ID,
            "--node-id",
            node_id,
            "--endpoints",
            endpoint,
            "--lease-ttl",
            str(lease_ttl),
            "--app",
            "hub.demo",
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)

    def wait_event(self, event: str, timeout: float) -> dict[str, Any]:
        stdout: IO[str] | None = self.proc.stdout
        assert stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = stdout.readline()
            if not line:
                raise RuntimeError(f"node {self.node_id} exited (code {self.proc.poll()})")
            message: dict[str, Any] = json.loads(line)
            if message.get("event") == event:
                return message
        raise TimeoutError(f"node {self.node_id}: no {event!r} within {timeout}s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def _cleanup(nodes: list[_Node]) -> Iterator[None]:
    try:
        yield
    finally:
        for node in nodes:
            node.stop()


def _table(client: HubClient, title: str) -> Tally[str]:
    handles = client.process_list("global")
    per_node: Tally[str] = Tally()
    rows = []
    for child_id in sorted(handles, key=lambda c: int(c.rsplit("-", 1)[1])):
        (node, handle), *_ = handles[child_id].items()
        per_node[node] += 1
        rows.append(f"  {child_id:<10} on {node:<8} token {handle.fencing_token:<6} {handle.state}")
    _say(f"\n{title}")
    _say("\n".join(rows))
    _say("  per node: " + ", ".join(f"{n}={c}" for n, c in sorted(per_node.items())))
    return per_node


async def _wait_placed(client: HubClient, count: int, avoid: str, timeout: float) -> float:
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        handles = client.process_list("global")
        running = [h for nodes in handles.values() for h in nodes.values() if h.is_running]
        if len(running) == count and all(h.node_id != avoid for h in running):
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    raise TimeoutError(f"children did not leave {avoid} within {timeout}s")


async def run_demo(*, children: int = 12, lease_ttl: int = 3) -> int:
    """Run the demo; returns the process exit code."""
    from hub.localetcd import LocalEtcd

    _say("processhub demo: a local etcd, three nodes, and children that move\n")
    with LocalEtcd(name="processhub-demo") as etcd:
        _say(f"etcd     running at {etcd.endpoint} (pid {etcd.pid})")
        nodes = [_Node(f"node-{i}", etcd.endpoint, lease_ttl) for i in (1, 2, 3)]
        with _cleanup(nodes):
            for node in nodes:
                info = node.wait_event("ready", timeout=30)
                _say(f"{node.node_id:<8} joined (pid {info['pid']})")
            async with HubClient(HUB_ID, endpoints=[etcd.endpoint]) as client:
                specs = [
                    ChildSpec(id=f"room-{i}", start="hub.demo:Counter", args={"room": i})
                    for i in range(1, children + 1)
                ]
                result = await client.start_children(specs, wait=True, timeout=15)
                if not result.ok:
                    _say(f"start failed: {result.errors}")
                    return 1
                _table(client, f"started {len(result.started)} children:")

                leaving = nodes[2]
                _say(f"\nstopping {leaving.node_id} gracefully (SIGTERM: drain, then leave)...")
                leaving.proc.send_signal(signal.SIGTERM)
                took = await _wait_placed(client, children, leaving.node_id, timeout=15)
                leaving.stop()
                _table(client, f"{leaving.node_id} left; its children moved in {took:.2f}s:")

                crashed = nodes[1]
                _say(f"\nkilling {crashed.node_id} with SIGKILL (no goodbye)...")
                os.kill(crashed.proc.pid, signal.SIGKILL)
                crashed.proc.wait()
                took = await _wait_placed(client, children, crashed.node_id, timeout=lease_ttl + 15)
                _table(
                    client,
                    f"{crashed.node_id} crashed; its children restarted elsewhere in {took:.2f}s "
                    f"(lease TTL {lease_ttl}s):",
                )
                await client.stop_children([s.id for s in specs], wait=True, timeout=15)
        _say("\ncleaned up: nodes and etcd stopped. Bye.")
    return 0
