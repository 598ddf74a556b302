"""The live dashboard (``GET /``) and its Server-Sent Events feed (``GET /api/events``) on a
3-node in-process cluster (real etcd); the last test renders the page in headless Chromium
(Debian's ``chromium``, installed with apt when missing) and reads the DOM it built.

Screenshots land in ``tests/artifacts/`` (git-ignored).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support.wait import wait_until

from hub import ChildSpec, Hub
from hub.child_events import ChildEvent
from hub.http import child_event_record, children_view

COUNTER = "hub.demo:Counter"
NODES = ("d1", "d2", "d3")
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}


def registry_counts(hub: Hub) -> dict[str, int]:
    """Children per node as ``hub``'s registry shows them (placed children only)."""
    tally = Counter(c["node"] for c in children_view(hub)["children"] if c["node"] is not None)
    return dict(tally)


def settled(hub: Hub, ids: list[str], nodes: set[str]) -> bool:
    """Every child in ``ids`` runs on one of ``nodes``, and only those nodes are members."""
    if set(hub.registry.nodes) != nodes:
        return False
    for child_id in ids:
        handle = hub.registry.handles.get(child_id)
        if handle is None or handle.node_id not in nodes or handle.state != "running":
            return False
    return True


def snapshot_counts(snapshot: dict[str, Any]) -> dict[str, int]:
    tally = Counter(c["node"] for c in snapshot["children"]["children"] if c["node"] is not None)
    return dict(tally)


@pytest.fixture
async def cluster(etcd_endpoint: str, hub_prefix: str) -> AsyncIterator[list[Hub]]:
    hubs = [
        Hub(
            "d",
            endpoints=[etcd_endpoint],
            node_id=node_id,
            lease_ttl=3,
            prefix=hub_prefix,
            http="127.0.0.1:0",
        )
        for node_id in NODES
    ]
    started: list[Hub] = []
    try:
        for hub in hubs:
            await hub.start()
            started.append(hub)
        await wait_until(lambda: all(len(h.registry.nodes) == len(NODES) for h in hubs), 15)
        yield hubs
    finally:
        for hub in reversed(started):
            await hub.stop(drain=False)


def address(hub: Hub) -> str:
    assert hub.http_server is not None
    return hub.http_server.address


async def start(hub: Hub, ids: list[str]) -> None:
    result = await hub.start_children(
        [ChildSpec(id=c, start=COUNTER) for c in ids], wait=True, timeout=15
    )
    assert not result.errors


async def get(addr: str, path: str) -> tuple[str, bytes]:
    host, _, port = addr.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n".encode())
        await writer.drain()
        async with asyncio.timeout(10):
            data = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return head.decode("ascii"), body


class SseClient:
    """A minimal ``text/event-stream`` reader over a raw connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, addr: str) -> SseClient:
        host, _, port = addr.rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port), limit=16 * 1024 * 1024)
        head = f"GET /api/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
        writer.write(head.encode())
        await writer.drain()
        answer = await reader.readuntil(b"\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert b"content-type: text/event-stream" in answer.lower()
        return cls(reader, writer)

    async def message(self) -> tuple[str, str]:
        """The next message with data: ``(event name, data)``; comments are skipped."""
        while True:
            block = (await self.reader.readuntil(b"\n\n")).decode()
            name, data = "message", []
            for line in block.splitlines():
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip())
            if data:
                return name, "\n".join(data)

    async def snapshot(self) -> dict[str, Any]:
        while True:
            name, data = await self.message()
            if name == "snapshot":
                document: dict[str, Any] = json.loads(data)
                return document

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


async def test_dashboard_page(cluster: list[Hub]) -> None:
    head, body = await get(address(cluster[0]), "/")
    assert head.startswith("HTTP/1.1 200 ")
    assert "content-type: text/html; charset=utf-8" in head.lower()
    page = body.decode()
    assert "new EventSource(" in page and "api/events" in page
    assert "http://" not in page and "https://" not in page  # self-contained


async def test_event_stream_follows_the_cluster(cluster: list[Hub]) -> None:
    d1, _, d3 = cluster
    ids = [f"a-{i}" for i in range(6)]
    await start(d1, ids)
    await wait_until(lambda: settled(d1, ids, set(NODES)), 20)

    client = await SseClient.connect(address(d1))
    try:
        async with asyncio.timeout(10):
            first = await client.snapshot()
        assert snapshot_counts(first) == registry_counts(d1)
        assert sum(snapshot_counts(first).values()) == len(ids)
        assert {n["node_id"] for n in first["nodes"]["nodes"]} == set(NODES)
        assert any(e["kind"] == "node_joined" for e in first["events"])
        # Child events are cluster-wide: d1 reports starts on the other nodes too.
        last_node = {}
        for event in first["events"]:
            if event["kind"] in ("child_started", "child_moved"):
                last_node[event["child_id"]] = event["node"]
        assert last_node == {c: d1.registry.handles[c].node_id for c in ids}
        assert set(last_node.values()) - {"d1"}

        more = [f"b-{i}" for i in range(3)]
        await start(d1, more)
        await d3.stop()
        everything = ids + more
        await wait_until(lambda: settled(d1, everything, {"d1", "d2"}), 30)
        expected = registry_counts(d1)
        assert set(expected) == {"d1", "d2"} and sum(expected.values()) == len(everything)

        async with asyncio.timeout(10):
            while True:  # snapshots are coalesced, so intermediate ones may be skipped
                latest = await client.snapshot()
                if snapshot_counts(latest) == expected:
                    break
        assert {n["node_id"] for n in latest["nodes"]["nodes"]} == {"d1", "d2"}
        kinds = {e["kind"] for e in latest["events"]}
        assert "node_left" in kinds
    finally:
        await client.close()
    server = cluster[0].http_server
    assert server is not None
    await wait_until(lambda: not server.feed.clients, 5)


async def test_event_stream_ends_on_server_stop(cluster: list[Hub]) -> None:
    d3 = cluster[2]
    client = await SseClient.connect(address(d3))
    try:
        async with asyncio.timeout(10):
            await client.snapshot()
        began = time.monotonic()
        await d3.stop()
        async with asyncio.timeout(5):
            rest = await client.reader.read()  # EOF: the server ended the stream
        assert isinstance(rest, bytes)
        assert time.monotonic() - began < 10
    finally:
        await client.close()


# -- browser -------------------------------------------------------------------------------


def _chromium() -> str:
    """Path of Debian's chromium; installs it (and chromium-driver) with apt when missing."""
    found = shutil.which("chromium")
    if found:
        return found
    began = time.monotonic()
    problem = ""
    try:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update"], check=True, capture_output=True, timeout=300)
        subprocess.run(
            ["apt-get", "install", "-y", "chromium", "chromium-driver"],
            check=True,
            capture_output=True,
            timeout=600,
            env=env,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
    found = shutil.which("chromium")
    if found:
        print(f"installed chromium in {time.monotonic() - began:.1f}s")
        return found
    message = f"chromium is not available and could not be installed ({problem or 'not found'})"
    if _in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="module")
def chromium() -> str:
    return _chromium()


async def run_chromium(binary: str, profile: Path, *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=3000",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(30):
            out, err = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, err.decode(errors="replace")[-2000:]
    return out.decode(errors="replace")


_COLUMN = re.compile(r'<div class="node[^"]*" data-node="([^"]+)" data-count="(\d+)"')


def page_counts(dom: str) -> dict[str, int]:
    return {node: int(count) for node, count in _COLUMN.findall(dom) if int(count) > 0}


def _written(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


async def render(binary: str, tmp: Path, url: str, shot: Path) -> str:
    dom = await run_chromium(binary, tmp / "profile-dom", "--dump-dom", url)
    await run_chromium(
        binary, tmp / "profile-shot", f"--screenshot={shot}", "--window-size=1280,800", url
    )
    assert _written(shot)
    print(f"dashboard screenshot: {shot}")
    return dom


async def test_dashboard_in_a_browser(chromium: str, cluster: list[Hub], tmp_path: Path) -> None:
    d1, _, d3 = cluster
    ids = [f"w-{i}" for i in range(9)]
    await start(d1, ids)
    await wait_until(lambda: settled(d1, ids, set(NODES)), 20)
    ARTIFACTS.mkdir(exist_ok=True)
    # ?once: the page closes its EventSource after the first snapshot. Headless Chromium's
    # virtual time stands still while a fetch is pending, and an open event stream is one.
    url = f"http://{address(d1)}/?once=1"

    dom = await render(chromium, tmp_path, url, ARTIFACTS / "dashboard-3-nodes.png")
    assert 'id="status" class="live once"' in dom  # a snapshot came over the EventSource
    assert page_counts(dom) == registry_counts(d1)
    assert set(page_counts(dom)) == set(NODES)
    for child_id in ids:
        assert f'data-child="{child_id}"' in dom

    await d3.stop()
    await wait_until(lambda: settled(d1, ids, {"d1", "d2"}), 30)
    dom = await render(chromium, tmp_path, url, ARTIFACTS / "dashboard-after-leave.png")
    assert page_counts(dom) == registry_counts(d1)
    assert set(page_counts(dom)) == {"d1", "d2"}
    assert 'data-node="d3"' not in dom
    assert "node left" in dom  # the recent-events list shows the leave


async def test_a_slow_client_is_dropped(cluster: list[Hub]) -> None:
    """A client whose queue is full is dropped; others and the node go on."""
    d1 = cluster[0]
    assert d1.http_server is not None
    feed = d1.http_server.feed
    fast = await SseClient.connect(address(d1))
    try:
        async with asyncio.timeout(10):
            await fast.snapshot()
        feed.queue_size = 4
        slow = feed.subscribe()  # never read: its queue fills
        for i in range(10):
            event = ChildEvent("child_restarted", f"x-{i}", "d1", 1, i, "boom")
            feed.publish(child_event_record(d1, event))
        assert slow.dropped and slow not in feed.clients
        assert feed.drops >= 1
        assert await slow.queue.get() is None  # its stream ends at once
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(10):
            while len(seen) < 10:
                name, data = await fast.message()
                if name == "event":
                    seen.append(json.loads(data))
        assert [e["child_id"] for e in seen] == [f"x-{i}" for i in range(10)]
        assert seen[0]["kind"] == "child_restarted" and seen[0]["node"] == "d1"
        assert len(feed.events) <= 200
    finally:
        await fast.close()
