"""Cluster-wide dashboard events: any node's ``/api/events`` reports what happens to every
child, wherever it runs, derived from owner-record transitions (``hub.operate.events``).

The first tests drive a :class:`~hub.core.registry.Registry` with hand-made watch batches (no
etcd); the others run three in-process hubs on one etcd prefix and read a node's SSE
stream about children it never runs.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from support.wait import wait_until

from hub import ChildSpec, Hub
from hub.core.registry import Registry
from hub.etcd.codec import encode_owner, encode_spec
from hub.etcd.keys import KeySpace
from hub.etcd.store import Event
from hub.model import OwnerRecord, OwnerState
from hub.operate.events import ChildEvent, ChildEvents
from hub.testing import HubCluster

NODES = ("ea", "eb", "ec")
SLEEPER = "integration.workers:Sleeper"
CRASH = "integration.workers:Crash"


# -- derivation, from hand-made watch batches ------------------------------------------------


class Batches:
    """Feeds a registry owner and spec writes as the watch would deliver them."""

    def __init__(self) -> None:
        self.keys = KeySpace("h", "/t")
        self.registry = Registry(self.keys)
        self.events = ChildEvents(self.registry, limit=3)
        self.seen: list[ChildEvent] = []
        self.registry.owner_observers.append(
            lambda changes: self.seen.extend(self.events.owner_changes(changes))
        )
        self.registry.observers.append(
            lambda ids, _nodes, full: self.seen.extend(self.events.children_changed(ids, full))
        )
        self.revision = itertools.count(10)
        self.created: dict[str, int] = {}

    def spec(self, child_id: str) -> Event:
        revision = next(self.revision)
        value = encode_spec(ChildSpec(id=child_id, start="a.b:C"), 0.0)
        return Event(self.keys.spec(child_id), value, False, revision, revision, 0)

    def unspec(self, child_id: str) -> Event:
        return Event(self.keys.spec(child_id), b"", True, 0, next(self.revision), 0)

    def owner(
        self, child_id: str, node: str, state: OwnerState, restarts: int = 0, last: str = ""
    ) -> Event:
        """A write of ``owners/{id}``; the first one after an unown creates the key."""
        revision = next(self.revision)
        created = self.created.setdefault(child_id, revision)
        record = OwnerRecord(node, 7, state, 0.0, restarts, last)
        return Event(self.keys.owner(child_id), encode_owner(record), False, created, revision, 7)

    def unown(self, child_id: str) -> Event:
        self.created.pop(child_id, None)
        return Event(self.keys.owner(child_id), b"", True, 0, next(self.revision), 0)

    def apply(self, *events: Event) -> list[tuple[Any, ...]]:
        """Apply one batch; the events it produced as (kind, child, node, extra...)."""
        self.seen.clear()
        self.registry.apply(events, max(e.mod_revision for e in events))
        return [_short(e) for e in self.seen]


def _short(event: ChildEvent) -> tuple[Any, ...]:
    if event.kind == "child_moved":
        return (event.kind, event.child_id, event.from_node, event.node)
    if event.kind in ("child_restarted", "child_failed"):
        return (event.kind, event.child_id, event.node, event.restarts, event.reason)
    return (event.kind, event.child_id, event.node)


def test_lifecycle_of_one_child() -> None:
    b = Batches()
    R, S = OwnerState.RUNNING, OwnerState.STARTING
    assert b.apply(b.spec("c"), b.owner("c", "n1", S)) == []  # acquired, not running yet
    assert b.apply(b.owner("c", "n1", R)) == [("child_started", "c", "n1")]
    assert b.apply(b.owner("c", "n1", R)) == []  # the same state written again
    assert b.apply(b.owner("c", "n1", OwnerState.RESTARTING, 1, "boom")) == [
        ("child_restarted", "c", "n1", 1, "boom")
    ]
    assert b.apply(b.owner("c", "n1", R, 1)) == []  # back up after the restart
    assert b.apply(b.unown("c")) == []  # released, spec still there: between owners
    assert b.apply(b.owner("c", "n2", S), b.owner("c", "n2", R)) == [
        ("child_moved", "c", "n1", "n2")
    ]
    assert b.apply(b.owner("c", "n2", OwnerState.FAILED, 0, "bad")) == [
        ("child_failed", "c", "n2", 0, "bad")
    ]
    # A stop deletes the spec, then the owner releases: stopped where it ran.
    assert b.apply(b.unspec("c")) == []
    assert b.apply(b.unown("c")) == [("child_stopped", "c", "n2")]


def test_spec_deleted_while_between_owners_is_a_stop() -> None:
    b = Batches()
    b.apply(b.spec("c"), b.owner("c", "n1", OwnerState.STARTING))
    b.apply(b.owner("c", "n1", OwnerState.RUNNING))
    assert b.apply(b.unown("c")) == []
    assert b.apply(b.unspec("c")) == [("child_stopped", "c", "n1")]
    # spec and owner deleted in one txn: one batch, one stop
    b.apply(b.spec("d"), b.owner("d", "n1", OwnerState.STARTING))
    b.apply(b.owner("d", "n1", OwnerState.RUNNING))
    assert b.apply(b.unspec("d"), b.unown("d")) == [("child_stopped", "d", "n1")]


def test_an_owner_that_never_ran_it_is_not_the_origin() -> None:
    b = Batches()
    b.apply(b.spec("c"), b.owner("c", "n1", OwnerState.STARTING))
    b.apply(b.owner("c", "n1", OwnerState.RUNNING), b.unown("c"))
    b.apply(b.owner("c", "n2", OwnerState.STARTING), b.unown("c"))  # n2 lost it at once
    b.apply(b.owner("c", "n3", OwnerState.STARTING))
    assert b.apply(b.owner("c", "n3", OwnerState.RUNNING)) == [("child_moved", "c", "n1", "n3")]
    # released and taken again by the node that ran it: a start, not a move
    b.apply(b.unown("c"), b.owner("c", "n3", OwnerState.STARTING))
    assert b.apply(b.owner("c", "n3", OwnerState.RUNNING)) == [("child_started", "c", "n3")]


def test_memory_of_children_between_owners_is_bounded() -> None:
    b = Batches()  # limit=3
    ids = [f"c{i}" for i in range(5)]
    for child_id in ids:
        b.apply(b.spec(child_id), b.owner(child_id, "n1", OwnerState.STARTING))
        b.apply(b.owner(child_id, "n1", OwnerState.RUNNING))
    b.apply(*(b.unown(c) for c in ids))
    assert len(b.events._between) == 3
    starts = [b.owner(c, "n2", OwnerState.STARTING) for c in ids]
    running = [b.owner(c, "n2", OwnerState.RUNNING) for c in ids]
    assert b.apply(*starts, *running) == [
        ("child_started", "c0", "n2"),  # forgotten: the oldest two
        ("child_started", "c1", "n2"),
        ("child_moved", "c2", "n1", "n2"),
        ("child_moved", "c3", "n1", "n2"),
        ("child_moved", "c4", "n1", "n2"),
    ]


def test_a_relist_is_no_news() -> None:
    b = Batches()
    b.apply(b.spec("c"), b.owner("c", "n1", OwnerState.STARTING))
    b.seen.clear()
    kvs = [b.owner("c", "n1", OwnerState.RUNNING)]
    b.registry.reset(kvs, 99)  # type: ignore[arg-type]  # an Event quacks like a KeyValue
    assert b.seen == []


# -- three hubs on one etcd ------------------------------------------------------------------


@pytest.fixture
async def cluster(etcd_endpoint: str, hub_prefix: str) -> AsyncIterator[dict[str, Hub]]:
    async with HubCluster(
        [etcd_endpoint], prefix=hub_prefix, hub_id="ev", nodes=NODES, http="127.0.0.1:0"
    ) as nodes:
        yield {node_id: nodes[node_id] for node_id in NODES}


class Stream:
    """An ``/api/events`` client that collects ``event`` messages in the background."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.snapshots: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def open(cls, hub: Hub) -> Stream:
        assert hub.http_server is not None
        host, _, port = hub.http_server.address.rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port), limit=1 << 24)
        writer.write(b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        return cls(reader, writer)

    async def pump(self) -> None:
        while True:
            block = (await self.reader.readuntil(b"\n\n")).decode()
            name, data = "message", ""
            for line in block.splitlines():
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data += line[5:].strip()
            if name == "snapshot":
                self.snapshots.append(json.loads(data))
            elif name == "event":
                self.events.append(json.loads(data))

    def about(self, child_id: str) -> list[tuple[str, str | None, str]]:
        return [
            (e["kind"], e.get("from_node"), e["node"])
            for e in self.events
            if e.get("child_id") == child_id
        ]

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def feed_kinds(hub: Hub, child_id: str) -> list[str]:
    """The kinds of ``hub``'s recent events about ``child_id``, in order."""
    assert hub.http_server is not None
    return [e["kind"] for e in hub.http_server.feed.events if e.get("child_id") == child_id]


async def test_a_move_between_two_other_nodes_shows_on_the_third(
    cluster: dict[str, Hub],
) -> None:
    ea, eb, ec = (cluster[n] for n in NODES)
    stream = await Stream.open(ea)
    try:
        async with asyncio.TaskGroup() as tg:
            pump = tg.create_task(stream.pump())
            await wait_until(lambda: bool(stream.snapshots), 5)

            spec = ChildSpec(id="roam", start=SLEEPER, nodes=("eb",))
            result = await ea.start_children([spec], wait=True, timeout=10)
            assert [h.node_id for h in result.started] == ["eb"]
            first_token = result.started[0].fencing_token
            moved = await ea.move("roam", "ec")
            assert moved is not None and moved.node_id == "ec"

            expected = [("child_started", None, "eb"), ("child_moved", "eb", "ec")]
            await wait_until(lambda: stream.about("roam") == expected, 10)
            started, move = (e for e in stream.events if e.get("child_id") == "roam")
            assert started["token"] == first_token < move["token"] == moved.fencing_token
            assert started["observer"] == move["observer"] == "ea"
            assert not ea.supervisor.is_running("roam")  # ea never ran it: no local hooks

            # Each node reports each event once, the nodes that ran it included.
            for hub in (ea, eb, ec):
                await wait_until(
                    lambda h=hub: feed_kinds(h, "roam") == ["child_started", "child_moved"], 5
                )

            # The recent list a new client gets holds the same events.
            late = await Stream.open(ea)
            try:
                late_pump = tg.create_task(late.pump())
                await wait_until(lambda: bool(late.snapshots), 5)
                recent = [
                    (e["kind"], e.get("from_node"), e["node"])
                    for e in late.snapshots[0]["events"]
                    if e.get("child_id") == "roam"
                ]
                assert recent == expected
                late_pump.cancel()
            finally:
                await late.close()

            await ea.stop_children(["roam"], wait=True, timeout=10)
            await wait_until(
                lambda: stream.about("roam")[-1:] == [("child_stopped", None, "ec")], 10
            )
            pump.cancel()
    finally:
        await stream.close()


async def test_restarts_failures_and_a_leaving_node_show_everywhere(
    cluster: dict[str, Hub],
) -> None:
    ea, ec = cluster["ea"], cluster["ec"]
    crashing = ChildSpec(id="crashy", start=CRASH, nodes=("eb",), max_restarts=2)
    staying = ChildSpec(id="pinned", start=SLEEPER, nodes=("ec", "eb"))
    result = await ea.start_children([crashing, staying], wait=False)
    assert result.ok

    def kinds(child_id: str) -> list[str]:
        return feed_kinds(ea, child_id)

    # Crash, restart twice, then parked as failed: all on eb, seen by ea.
    await wait_until(lambda: "child_failed" in kinds("crashy"), 15)
    assert ea.http_server is not None
    crashy = [e for e in ea.http_server.feed.events if e.get("child_id") == "crashy"]
    restarts = [e["restarts"] for e in crashy if e["kind"] == "child_restarted"]
    assert restarts == [1, 2]
    assert {e["node"] for e in crashy} == {"eb"}
    assert crashy[-1]["kind"] == "child_failed" and "restart intensity" in crashy[-1]["reason"]

    # ec leaves: its child moves to eb (its next pin); ea sees the leave and the move.
    await wait_until(lambda: kinds("pinned") == ["child_started"], 10)
    await ec.stop()
    await wait_until(lambda: kinds("pinned") == ["child_started", "child_moved"], 15)
    move = [e for e in ea.http_server.feed.events if e.get("child_id") == "pinned"][-1]
    assert (move["from_node"], move["node"]) == ("ec", "eb")
    assert any(e["kind"] == "node_left" and e["node"] == "ec" for e in ea.http_server.feed.events)
