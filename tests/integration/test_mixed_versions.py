"""A rolling update to a future release and a rollback, with old and new nodes side by side.

docs/deployment.md section 5 says a mixed fleet is safe because every record in etcd is
versioned protobuf (a newer ``schema`` and fields a node does not know are fine), ownership
is decided by etcd, and ``processhub nodes`` shows each node's version. Here that is tried
with real node processes:

* *old* nodes run this release; *future* nodes also load ``--app support.future_version``
  (tests/support/future_version.py), which makes them report version ``0.2.0-future`` and
  write every record with ``schema`` 2 and an extra field 101 this release does not know;
* every node runs the tenants front (``examples.tenants.app``) and ``--migration hot``;
  children are ``support.recorder:RecordedTenant`` (the tenants worker recording each
  activation for the at-most-one checker, tests/support/checker.py), hit through the
  fronts of all nodes while the fleet changes, so node-to-node calls cross versions;
* three old nodes are replaced by three future ones one at a time (start a future node,
  wait until it is ready, SIGTERM an old one, which must exit 0), then one future node is
  rolled back to an old one.

Checked: every child keeps running with exactly the counts it was hit with (each move is a
hand-over that starts where its predecessor stopped), never two instances at once, hand-overs
happened in both directions (old to future, future to old) and calls too, ``processhub nodes
--json`` shows both versions while mixed, no node or client skipped a record as undecodable,
and the raw values in etcd really are schema 2 with the unknown field when a future node wrote
them (and schema 1 without it otherwise).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.unknown_fields import UnknownFieldSet
from support.checker import load_intervals, violations
from support.cluster import REPO, Cluster, NodeProcess, http_json
from support.traffic import Traffic
from support.wait import wait_until, wait_until_sync

import hub
from hub import ChildSpec
from hub._proto import processhub_pb2 as pb
from hub.client import HubClient
from hub.etcd.keys import KeySpace, Kind
from hub.etcd.store import Event

pytestmark = pytest.mark.slow

HUB = "mixed"
TTL = 5
RECORDED = "support.recorder:RecordedTenant"
CHILDREN = 24
OLD_APPS = ("examples.tenants.app",)
FUTURE_APPS = ("support.future_version", "examples.tenants.app")
# What support.future_version writes. Not imported from there: importing it patches the
# codec of the importing process, and this process plays an old client.
OLD_VERSION = hub.__version__
FUTURE_VERSION = "0.2.0-future"
FUTURE_SCHEMA = 2
UNKNOWN_FIELD = (101, 2, f"written by {FUTURE_VERSION}".encode())  # number, wire type, data
RECORDS: dict[Kind, Any] = {
    Kind.NODE: pb.NodeInfo,
    Kind.SPEC: pb.ChildSpec,
    Kind.OWNER: pb.Owner,
    Kind.HANDOVER: pb.State,
    Kind.CHECKPOINT: pb.State,
}
# What a node logs when it skips a record it cannot read (hub/core/registry.py,
# hub/core/worker_state.py).
REFUSALS = ("undecodable", "ignoring handover state", "ignoring checkpoint state", "Traceback")


def version_of(node_id: str) -> str:
    """Node ids say what the node runs: ``old-N`` or ``future-N``."""
    return node_id.split("-", 1)[0]


# -- the fleet ----------------------------------------------------------------------------


@dataclass(eq=False)
class Node:
    """One node process and the address of its tenants front."""

    node: NodeProcess
    front: str

    @property
    def name(self) -> str:
        return self.node.node_id


@dataclass
class Fleet:
    """The node processes of the test, old and future, in the order they started."""

    cluster: Cluster
    nodes: list[Node] = field(default_factory=list)

    def start(self, name: str) -> Node:
        """Start ``old-N`` or ``future-N``; wait until it is ready and its front listens."""
        apps = FUTURE_APPS if version_of(name) == "future" else OLD_APPS
        process = self.cluster.add(name, apps=apps)

        def front() -> str | None:
            lines = (e for e in process.history if e.get("event") == "tenants_http")
            return next((str(e["address"]) for e in lines), None)

        wait_until_sync(lambda: front() is not None, 30, message=f"{name}: no tenants front")
        address = front()
        assert address is not None
        node = Node(process, address)
        self.nodes.append(node)
        return node

    def named(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def live(self) -> list[Node]:
        return [n for n in self.nodes if n.node.alive()]


# -- traffic through the fronts -----------------------------------------------------------


# -- raw records --------------------------------------------------------------------------


class RawRecords:
    """Every value written under the hub's keys while the test runs, as etcd stored it."""

    def __init__(self, client: HubClient, keys: KeySpace) -> None:
        self.client = client
        self.keys = keys
        self.puts: list[tuple[Kind, str, Event]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RawRecords:
        start = self.client.revision + 1  # everything after what the client has listed

        async def collect() -> None:
            async with self.client.store.watch(self.keys.root, start) as stream:
                async for batch in stream:
                    for event in batch.events:
                        split = self.keys.split(event.key)
                        if split is not None and not event.is_delete:
                            self.puts.append((split[0], split[1], event))

        self._task = asyncio.create_task(collect())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        if self._task.done():
            self._task.result()  # the watch broke: what it saw is not every record
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def decoded(self) -> Iterator[tuple[Kind, str, Event, Any]]:
        for kind, ident, event in self.puts:
            if kind in RECORDS:
                message = RECORDS[kind]()
                message.ParseFromString(event.value)
                yield kind, ident, event, message


def unknown_fields(message: Any) -> list[tuple[int, int, Any]]:
    return [(f.field_number, f.wire_type, f.data) for f in UnknownFieldSet(message)]


def check_raw_records(raw: RawRecords, spec_writers: dict[str, str]) -> dict[str, set[Kind]]:
    """Each record carries the schema and fields of the version of the node that wrote it.

    The writer of ``nodes/`` and ``owners/`` is named in the record; of ``handover/`` and
    ``checkpoints/`` by its token (the create revision of the writer's ``owners/`` key); of
    ``specs/`` by ``spec_writers``. Returns, per version, the kinds it was seen writing.
    """
    owner_at: dict[tuple[str, int], str] = {}
    for kind, ident, event, message in raw.decoded():
        if kind is Kind.OWNER:
            owner_at[(ident, event.create_revision)] = message.node_id
    written: dict[str, set[Kind]] = {"old": set(), "future": set()}
    problems = []
    for kind, ident, _, message in raw.decoded():
        if kind in (Kind.NODE, Kind.OWNER):
            writer = message.node_id
        elif kind is Kind.SPEC:
            writer = spec_writers[ident]
        else:
            writer = owner_at.get((ident, message.token), "")
            if not writer:
                problems.append(f"{kind.value}/{ident}: token {message.token} owned by nobody")
                continue
        future = version_of(writer) == "future"
        expected = (
            (FUTURE_SCHEMA, [UNKNOWN_FIELD]) if future else (1, [])  # what this release writes
        )
        found = (message.schema, unknown_fields(message))
        if found != expected:
            problems.append(f"{kind.value}/{ident} by {writer}: {found}, expected {expected}")
        if kind is Kind.NODE:
            version = FUTURE_VERSION if future else OLD_VERSION
            if message.version != version:
                problems.append(f"nodes/{ident}: version {message.version!r}")
        written[version_of(writer)].add(kind)
    assert not problems, "\n".join(problems[:20])
    return written


# -- checks -------------------------------------------------------------------------------


def running_on(client: HubClient, child_ids: list[str], nodes: set[str]) -> bool:
    handles = client.registry.handles
    return all(
        (h := handles.get(c)) is not None and h.is_running and h.node_id in nodes for c in child_ids
    )


def recorder_problems(cluster: Cluster, recorded: list[str]) -> list[str]:
    intervals = load_intervals(cluster.record_dir, cluster.killed_at)
    return violations(intervals, expect_running=set(recorded), live_pids=cluster.live_pids())


async def settle(fleet: Fleet, client: HubClient, children: list[str], recorded: list[str]) -> None:
    """Every child runs on a live node, and the recorder shows exactly one instance each."""
    live = {n.name for n in fleet.live()}
    await wait_until(
        lambda: running_on(client, children, live),
        60,
        message=f"children not all running on {sorted(live)}",
    )
    try:  # the registry can run a hair ahead of the workers' own start records
        await wait_until(lambda: not recorder_problems(fleet.cluster, recorded), 20, 0.1)
    finally:
        problems = recorder_problems(fleet.cluster, recorded)
        assert not problems, "\n".join(problems[:20])


def handovers(record_dir: Path) -> list[tuple[str, str]]:
    """(from node, to node) of every move; each must have handed the exact counts over."""
    starts: dict[str, list[dict[str, Any]]] = {}
    stops: dict[tuple[str, int, int], list[int]] = {}
    for path in record_dir.glob("*.log"):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            if event["ev"] == "start":
                starts.setdefault(event["child"], []).append(event)
            else:
                stops[(event["child"], event["pid"], event["token"])] = event["counts"]
    moves = []
    for child, items in starts.items():
        items.sort(key=lambda e: e["t"])
        for earlier, later in itertools.pairwise(items):
            stopped = stops.get((child, earlier["pid"], earlier["token"]))
            assert later["source"] == "handover", (child, earlier, later)
            assert later["counts"] == stopped, (child, earlier, later, stopped)
            moves.append((earlier["node"], later["node"]))
    return moves


def cli_versions(endpoint: str, prefix: str) -> dict[str, str]:
    """``processhub nodes --json`` (a subprocess of this release): node id -> version."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROCESSHUB_")}
    argv = ["nodes", "--hub", HUB, "--endpoints", endpoint, "--prefix", prefix, "--json"]
    proc = subprocess.run(
        [sys.executable, "-m", "hub.operate.cli", *argv],
        capture_output=True,
        text=True,
        timeout=40,
        env=env,
        cwd=REPO,
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return {row["node_id"]: row["version"] for row in json.loads(proc.stdout)["nodes"]}


def assert_fleet_shown(endpoint: str, prefix: str, fleet: Fleet) -> set[str]:
    expected = {
        n.name: FUTURE_VERSION if version_of(n.name) == "future" else OLD_VERSION
        for n in fleet.live()
    }
    shown = cli_versions(endpoint, prefix)
    assert shown == expected
    return set(shown.values())


def corrupt_records(node: Node) -> float:
    """``processhub_registry_corrupt_records`` of a node (its ``/metrics``)."""
    http = next(e["http"] for e in node.node.history if e.get("event") == "ready")
    status, text = http_json("GET", http, "/metrics")
    assert status == 200, text
    samples = [
        line
        for line in str(text).splitlines()
        if line.startswith("processhub_registry_corrupt_records_total")
    ]
    assert len(samples) == 1, samples
    return float(samples[0].rsplit(" ", 1)[1])


def refusals_logged(record_dir: Path) -> list[str]:
    return [
        f"{path.name}: {line}"
        for path in sorted(record_dir.glob("*.stderr"))
        for line in path.read_text().splitlines()
        if any(word in line for word in REFUSALS)
    ]


async def cross_calls(fleet: Fleet, client: HubClient, tenants: list[str]) -> set[tuple[str, str]]:
    """A read through every live node's front of a tenant on a node of the other version,
    and one from this (old) client to a tenant on a future node: (caller, callee) versions."""
    routes = set()
    owners = {t: client.get_pid(f"tenant-{t}").node_id for t in tenants}  # type: ignore[union-attr]
    for node in fleet.live():
        other = [t for t, owner in owners.items() if version_of(owner) != version_of(node.name)]
        if not other:
            continue
        status, body = await asyncio.to_thread(http_json, "GET", node.front, f"/tenants/{other[0]}")
        assert status == 200, body
        assert body["node"] == owners[other[0]], body
        routes.add((version_of(node.name), version_of(body["node"])))
    on_future = [t for t, owner in owners.items() if version_of(owner) == "future"]
    if on_future:
        reply = await client.call(f"tenant-{on_future[0]}", {"op": "get"}, timeout=10)
        assert version_of(reply["node"]) == "future", reply
        routes.add(("client", "future"))
    return routes


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def fleet(etcd_endpoint: str, hub_prefix: str, tmp_path: Path) -> Iterator[Fleet]:
    cluster = Cluster(
        hub_id=HUB,
        endpoint=etcd_endpoint,
        prefix=hub_prefix,
        lease_ttl=TTL,
        record_dir=tmp_path,
        extra_args=["--migration", "hot", "--http", "127.0.0.1:0"],
        apps=OLD_APPS,
        env={"TENANTS_HTTP": "127.0.0.1:0"},
    )
    try:
        yield Fleet(cluster)
    finally:
        cluster.close()


@pytest.fixture
async def client(etcd_endpoint: str, hub_prefix: str) -> AsyncIterator[HubClient]:
    async with HubClient(
        HUB, endpoints=[etcd_endpoint], prefix=hub_prefix, validate_targets=False
    ) as c:
        yield c


# -- the test -----------------------------------------------------------------------------


@dataclass
class Rollout:
    """The steps of the test, each checked as it completes."""

    fleet: Fleet
    client: HubClient
    traffic: Traffic
    recorded: list[str]
    endpoint: str
    prefix: str
    #: the versions ``processhub nodes`` showed at each mixed step
    mixed: list[set[str]] = field(default_factory=list)
    #: (caller, callee) versions of the explicit cross-version reads
    calls: set[tuple[str, str]] = field(default_factory=set)

    async def settle(self) -> set[str]:
        """Every child runs with its counts; returns the versions ``processhub nodes`` shows."""
        children = [f"tenant-{t}" for t in self.traffic.tenants]
        await settle(self.fleet, self.client, children, self.recorded)
        assert not self.traffic.problems, self.traffic.problems[:10]
        return await asyncio.to_thread(assert_fleet_shown, self.endpoint, self.prefix, self.fleet)

    async def join(self, name: str) -> Node:
        node = await asyncio.to_thread(self.fleet.start, name)
        self.traffic.enter(node)
        return node

    async def retire(self, node: Node) -> None:
        """SIGTERM (out of service first): it must exit 0 once its children moved."""
        assert await asyncio.to_thread(corrupt_records, node) == 0, node.name
        self.traffic.leave(node)
        assert await asyncio.to_thread(node.node.terminate) == 0, node.name

    async def check_mixed(self) -> None:
        self.mixed.append(await self.settle())
        self.calls |= await cross_calls(self.fleet, self.client, self.traffic.tenants)


async def test_rolling_update_to_a_future_version_and_back(
    fleet: Fleet, client: HubClient, etcd_endpoint: str, hub_prefix: str
) -> None:
    async with RawRecords(client, KeySpace(HUB, hub_prefix)) as raw:
        old = [await asyncio.to_thread(fleet.start, f"old-{i}") for i in (1, 2, 3)]
        recorded = [f"tenant-r{i}" for i in range(CHILDREN)]
        specs = [ChildSpec(id=c, start=RECORDED, metadata={"tag": "tenant"}) for c in recorded]
        result = await client.start_children(specs, wait=True, timeout=30)
        assert result.ok, result.errors
        spec_writers = dict.fromkeys(recorded, "old-test-client")
        traffic = Traffic(list(old))
        for child_id in recorded:  # every bucket has counts to hand over
            await asyncio.to_thread(traffic.add, child_id.removeprefix("tenant-"), old[0])
        rollout = Rollout(fleet, client, traffic, recorded, etcd_endpoint, hub_prefix)

        with traffic.running():
            # The rolling update: future-N joins and is ready, then old-N drains and exits.
            for i, leaving in enumerate(old, 1):
                new = await rollout.join(f"future-{i}")
                if i == 1:  # tenants whose specs a node's front writes, one of each version
                    await asyncio.to_thread(traffic.add, "fresh-future", new)
                    await asyncio.to_thread(traffic.add, "fresh-old", leaving)
                    spec_writers["tenant-fresh-future"] = new.name
                    spec_writers["tenant-fresh-old"] = leaving.name
                await rollout.check_mixed()
                await rollout.retire(leaving)
                if i < len(old):
                    await rollout.check_mixed()
            assert await rollout.settle() == {FUTURE_VERSION}
            # Rollback: one future node back to this release while the others stay future.
            await rollout.join("old-4")
            await rollout.check_mixed()
            await rollout.retire(fleet.named("future-1"))
            await rollout.check_mixed()
            answered = traffic.answered
            await asyncio.to_thread(wait_until_sync, lambda: traffic.answered > answered + 50, 30)

    # Calls and state: every tenant answers, with exactly the hits it was counted.
    assert not traffic.problems, traffic.problems[:10]
    live = fleet.live()
    assert sorted(n.name for n in live) == ["future-2", "future-3", "old-4"]
    for tenant, hits in traffic.hits.items():
        status, state = await asyncio.to_thread(
            http_json, "GET", live[0].front, f"/tenants/{tenant}"
        )
        assert status == 200, (tenant, state)
        assert state["hits"] == hits and state["node"] in {n.name for n in live}, (tenant, state)
    # Never two instances; each move a hand-over of the exact counts, in both directions.
    problems = recorder_problems(fleet.cluster, recorded)
    assert not problems, "\n".join(problems[:20])
    moves = handovers(fleet.cluster.record_dir)
    directions = {(version_of(a), version_of(b)) for a, b in moves}
    assert {("old", "future"), ("future", "old")} <= directions, directions
    # Calls crossed versions both ways between nodes (the fronts), and this client reached
    # children on future nodes.
    routes = {(version_of(a), version_of(b)) for a, b in traffic.routes}
    assert {("old", "future"), ("future", "old")} <= routes, routes
    assert {("old", "future"), ("future", "old"), ("client", "future")} <= rollout.calls
    # `processhub nodes` showed both versions at every mixed step.
    assert len(rollout.mixed) == 7, rollout.mixed  # 5 during the update, 2 in the rollback
    assert all(seen == {OLD_VERSION, FUTURE_VERSION} for seen in rollout.mixed), rollout.mixed
    # Nobody skipped a record: this client, the live nodes (each stopped node was checked
    # before its SIGTERM), and no node logged a refusal.
    assert client.registry.corrupt == 0
    for node in live:
        assert await asyncio.to_thread(corrupt_records, node) == 0, node.name
    assert not refusals_logged(fleet.cluster.record_dir)
    # The raw values: future nodes wrote schema 2 with the unknown field, old ones did not.
    written = check_raw_records(raw, spec_writers)
    every = {Kind.NODE, Kind.SPEC, Kind.OWNER, Kind.HANDOVER, Kind.CHECKPOINT}
    assert written["future"] == every, written
    assert written["old"] == every, written
    print(
        f"mixed rollout: {len(moves)} hand-overs {sorted(directions)}; "
        f"{traffic.answered} hits answered; {len(raw.puts)} records written"
    )
