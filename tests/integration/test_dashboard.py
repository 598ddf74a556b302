"""The live dashboard (``GET /``) and its Server-Sent Events feed (``GET /api/events``) on a
3-node in-process cluster (real etcd); the last test keeps the page open in headless Chromium
(Debian's ``chromium`` and ``chromedriver``, installed with apt when missing, driven by
Selenium), reads the DOM it builds, kills a node and watches the same page follow the failover.

Screenshots land in ``tests/artifacts/`` (git-ignored).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest
from support.wait import wait_until

from hub import ChildSpec, Hub
from hub.operate.events import ChildEvent
from hub.operate.http import child_event_record, children_view
from hub.testing import HubCluster

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

COUNTER = "hub.operate.demo:Counter"
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
    async with HubCluster(
        [etcd_endpoint], prefix=hub_prefix, hub_id="d", nodes=NODES, http="127.0.0.1:0"
    ) as nodes:
        yield [nodes[node_id] for node_id in NODES]


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


@dataclass(frozen=True)
class BrowserKit:
    chromium: str
    chromedriver: str


def _unavailable(message: str) -> NoReturn:
    if _in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _browser_kit() -> BrowserKit:
    """Debian's chromium and chromedriver (installed with apt when missing), for Selenium."""
    if importlib.util.find_spec("selenium") is None:
        _unavailable(
            "selenium is not installed (it is in the test extra: pip install -e '.[test]')"
        )
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium and driver:
        return BrowserKit(chromium, driver)
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
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium and driver:
        print(f"installed chromium and chromedriver in {time.monotonic() - began:.1f}s")
        return BrowserKit(chromium, driver)
    missing = " and ".join(
        n for n, p in (("chromium", chromium), ("chromedriver", driver)) if not p
    )
    _unavailable(f"{missing} not available and could not be installed ({problem or 'not found'})")


@pytest.fixture(scope="module")
def browser_kit() -> BrowserKit:
    return _browser_kit()


def _open_browser(kit: BrowserKit) -> WebDriver:
    """Headless Chromium under Debian's chromedriver (blocking: call it in a thread).

    Both paths are given, so Selenium Manager is never run (and ``SE_OFFLINE`` is set).
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = kit.chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-proxy-server",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,800",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=kit.chromedriver))
    try:
        driver.set_page_load_timeout(15)
        driver.set_script_timeout(5)
    except BaseException:
        driver.quit()
        raise
    return driver


@asynccontextmanager
async def browser(kit: BrowserKit) -> AsyncIterator[WebDriver]:
    """One headless browser for the test; quit whatever happens. Every driver call blocks,
    so it runs in a thread: the hubs share the test's event loop."""
    driver = await asyncio.to_thread(_open_browser, kit)
    try:
        yield driver
    finally:
        await asyncio.to_thread(driver.quit)


# What the page shows, read from its live DOM in one script call.
_READ_PAGE = """
var cols = Array.prototype.slice.call(document.querySelectorAll("#nodes .node"));
var items = Array.prototype.slice.call(document.querySelectorAll("#events li"));
return {
  status: document.getElementById("status").className,
  marker: window.__marker === undefined ? null : window.__marker,
  columns: cols.map(function (c) {
    return {
      node: c.getAttribute("data-node"),
      count: Number(c.getAttribute("data-count")),
      unassigned: c.classList.contains("unassigned"),
      children: Array.prototype.slice.call(c.querySelectorAll("[data-child]")).map(
        function (k) { return k.getAttribute("data-child"); })
    };
  }),
  events: items.map(function (li) { return [li.className, li.textContent]; })
};
"""


@dataclass(frozen=True)
class PageView:
    status: str
    marker: object
    #: column (node id, or "unassigned") -> the child ids shown in it
    columns: dict[str, list[str]]
    #: column -> its ``data-count``
    counts: dict[str, int]
    #: ``(li class, text)`` per recent event, newest first
    events: list[tuple[str, str]]

    def node_of(self) -> dict[str, str]:
        """child id -> the column it is shown in."""
        return {c: node for node, kids in self.columns.items() for c in kids}

    def has_event(self, kind: str, text: str) -> bool:
        return any(cls == f"k-{kind}" and text in body for cls, body in self.events)


async def read_page(driver: WebDriver) -> PageView:
    raw: dict[str, Any] = await asyncio.to_thread(driver.execute_script, _READ_PAGE)
    columns = raw["columns"]
    return PageView(
        status=raw["status"],
        marker=raw["marker"],
        columns={c["node"]: list(c["children"]) for c in columns},
        counts={c["node"]: int(c["count"]) for c in columns if not c["unassigned"]},
        events=[(cls, text) for cls, text in raw["events"]],
    )


def page_counts(view: PageView) -> dict[str, int]:
    """Children per node as the page shows them, like :func:`registry_counts`."""
    return {node: count for node, count in view.counts.items() if count > 0}


async def page_until(
    driver: WebDriver, check: Callable[[PageView], bool], timeout: float, what: str
) -> PageView:
    """Poll the page's DOM (no reload) until ``check`` holds; the view that passed."""
    seen: list[PageView] = []

    async def shows() -> bool:
        view = await read_page(driver)
        seen[:] = [view]
        return check(view)

    try:
        await wait_until(shows, timeout, interval=0.1)
    except AssertionError:
        last = seen[-1] if seen else None
        await asyncio.to_thread(driver.save_screenshot, str(ARTIFACTS / "dashboard-failure.png"))
        raise AssertionError(f"the page never showed {what} in {timeout}s; last: {last}") from None
    return seen[-1]


def _written(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def _screenshot(driver: WebDriver, shot: Path) -> bool:
    shot.unlink(missing_ok=True)
    return driver.save_screenshot(str(shot)) and _written(shot)


async def screenshot(driver: WebDriver, shot: Path) -> None:
    assert await asyncio.to_thread(_screenshot, driver, shot), f"no screenshot at {shot}"
    print(f"dashboard screenshot: {shot}")


@pytest.mark.slow  # a browser
@pytest.mark.timeout(60)  # a hard bound; the waits inside add up to less
async def test_dashboard_in_a_browser(
    browser_kit: BrowserKit, cluster: list[Hub], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One live page follows the cluster: right numbers, then a killed node's failover."""
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never download
    d1, _, d3 = cluster
    server = d1.http_server
    assert server is not None
    ids = [f"w-{i}" for i in range(9)]
    await start(d1, ids)
    await wait_until(lambda: settled(d1, ids, set(NODES)), 15)
    ARTIFACTS.mkdir(exist_ok=True)

    async with browser(browser_kit) as driver:
        await asyncio.to_thread(driver.get, f"http://{address(d1)}/")  # live: no ?once

        def all_three(view: PageView) -> bool:
            return (
                view.status == "live"
                and page_counts(view) == registry_counts(d1)
                and set(view.columns) == set(NODES)
                and view.node_of() == {c: d1.registry.handles[c].node_id for c in ids}
            )

        await page_until(driver, all_three, 10, "the 3-node registry")
        await screenshot(driver, ARTIFACTS / "dashboard-3-nodes.png")

        await asyncio.to_thread(driver.execute_script, "window.__marker = 1;")
        streams = set(server.feed.clients)
        assert len(streams) == 1  # the page's EventSource
        on_d3 = [c for c in ids if d1.registry.handles[c].node_id == "d3"]
        assert on_d3

        await d3.abort()  # a crash: no drain, its lease is left to expire (lease_ttl=3)
        await wait_until(lambda: settled(d1, ids, {"d1", "d2"}), 15)

        def failed_over(view: PageView) -> bool:
            where = {c: d1.registry.handles[c].node_id for c in ids}
            return (
                page_counts(view) == registry_counts(d1)
                and set(view.columns) == {"d1", "d2"}
                and view.node_of() == where
                and view.has_event("node_left", "d3 left (lease expired)")
                and all(view.has_event("child_moved", f"{c} moved d3 → {where[c]}") for c in on_d3)
            )

        view = await page_until(driver, failed_over, 10, "d3's children moved to d1/d2")
        await screenshot(driver, ARTIFACTS / "dashboard-after-kill.png")
        assert view.marker == 1, "the page reloaded"
        assert view.status == "live"
        assert set(server.feed.clients) == streams  # the same event stream carried it all


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
