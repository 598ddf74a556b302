"""Children parked by their restart intensity, owners and replicas alike, on real etcd.

A child whose worker restarts more than ``max_restarts`` times within ``max_seconds`` is
parked on its node. For the primary that is the owner record turning ``failed``; these
tests check that its ``restarts`` is the supervisor's own count (not the node's lagging
registry), and that a parked *replica* is just as visible — its replica record says
``failed``, the ``ChildFailed`` hook fires and the failures metric counts it — while it is
not restarted and promotion is unaffected.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from support.wait import wait_until

from hub import ChildSpec, Hub, OwnerState, StoreUnavailable
from hub.core.hooks import ChildFailed, HookHandler, HookName
from hub.core.registry import Registry
from hub.etcd.codec import decode_owner, decode_replica
from hub.etcd.ops import Put, Txn
from hub.etcd.store import Event
from hub.model import OwnerRecord
from hub.operate.events import ChildEvent, ChildEvents
from hub.operate.http import HubMetrics
from hub.testing import HubCluster
from strategies import ConsistentHashing
from strategies.redundancy import Replication

from . import parked_workers

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")

W = parked_workers.__name__
TIMEOUT = 15.0
FAILURES = "processhub_child_failures_total"


@pytest.fixture(autouse=True)
def _reset_workers() -> Any:
    parked_workers.reset()
    yield
    parked_workers.reset()


#: node id -> the ChildFailed events its hooks saw (filled as each node starts)
FAILED: dict[str, list[ChildFailed]] = {}


def record_failures(hub: Hub) -> None:
    """Give a new node its metrics and a hook recording its ChildFailed events in FAILED."""
    HubMetrics.of(hub)
    FAILED[hub.node_id] = []
    hub.hooks.register(HookName.CHILD_FAILED, HookHandler("test", FAILED[hub.node_id].append))


def hubs(endpoint: str, prefix: str, names: Sequence[str], **kw: Any) -> HubCluster:
    """One hub per name, each seeing all members, recording failures (``async with``)."""
    return HubCluster(
        [endpoint], prefix=prefix, hub_id="pk", nodes=names, prepare=record_failures, **kw
    )


def failures(hub: Hub) -> float:
    value = HubMetrics.of(hub).registry.get_sample_value(FAILURES)
    assert value is not None
    return value


async def owner_in_etcd(hub: Hub, child_id: str) -> OwnerRecord | None:
    kv = await hub.store.get(hub.keys.owner(child_id))
    return decode_owner(kv.key, kv.value) if kv is not None else None


async def replica_role_in_etcd(hub: Hub, child_id: str, node_id: str) -> str | None:
    kv = await hub.store.get(hub.keys.replica(child_id, node_id))
    return decode_replica(kv.key, kv.value).role if kv is not None else None


class HeldRegistry:
    """Holds a hub's watch batches back from its registry, then applies them in order: the
    registry lags behind etcd for as long as the test wants."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.apply = registry.apply
        self.batches: list[tuple[list[Event], int]] = []

    def hold(self) -> None:
        setattr(self.registry, "apply", self._buffer)  # noqa: B010 - shadows the method

    def release(self) -> None:
        delattr(self.registry, "apply")
        batches, self.batches = self.batches, []
        for events, revision in batches:
            self.apply(events, revision)

    def _buffer(self, events: Sequence[Event], revision: int) -> None:
        self.batches.append((list(events), revision))


# -- owners: restarts in the failed record -------------------------------------------------


@pytest.mark.parametrize("max_restarts", [0, 1, 4])
async def test_a_failed_owner_record_counts_every_restart_even_with_a_lagging_registry(
    etcd_endpoint: str, hub_prefix: str, max_restarts: int
) -> None:
    """The registry holds the record as it was before the crash loop began (restarts 0);
    the failed record must still say how often the worker was restarted."""
    async with hubs(etcd_endpoint, hub_prefix, ["n1"]) as nodes:
        hub = nodes["n1"]
        spec = ChildSpec("loop", f"{W}:CrashAfterGate", max_restarts=max_restarts, max_seconds=60)
        assert (await hub.start_child(spec, wait=True, timeout=TIMEOUT)).ok
        held = HeldRegistry(hub.registry)
        held.hold()
        try:
            parked_workers.gate("loop").set()

            async def failed_in_etcd() -> bool:
                record = await owner_in_etcd(hub, "loop")
                return record is not None and record.state is OwnerState.FAILED

            await wait_until(failed_in_etcd, TIMEOUT, message="the loop was not parked")
        finally:
            held.release()
        record = await owner_in_etcd(hub, "loop")
        assert record is not None and record.state is OwnerState.FAILED
        assert record.restarts == max_restarts, record
        assert parked_workers.runs("loop", "n1") == max_restarts + 1
        assert "restart intensity exceeded" in record.last_exit
        await wait_until(
            lambda: (h := hub.get_pid("loop")) is not None and h.restarts == max_restarts,
            TIMEOUT,
        )


async def test_failed_owner_records_count_every_restart_under_load(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    """Many loops on two nodes at once, nothing held back: every record is exact."""
    loops = {f"loop-{i}": i % 4 for i in range(24)}  # child id -> max_restarts
    async with hubs(etcd_endpoint, hub_prefix, ["n1", "n2"]) as nodes:
        for child_id in loops:
            parked_workers.gate(child_id).set()
        result = await nodes["n1"].start_children(
            [
                ChildSpec(c, f"{W}:CrashAfterGate", max_restarts=n, max_seconds=60)
                for c, n in loops.items()
            ]
        )
        assert result.ok, result.errors
        hub = nodes["n1"]

        async def all_failed() -> bool:
            for child_id in loops:
                record = await owner_in_etcd(hub, child_id)
                if record is None or record.state is not OwnerState.FAILED:
                    return False
            return True

        await wait_until(all_failed, TIMEOUT, message="not every loop was parked")
        counts = {c: (await owner_in_etcd(hub, c)).restarts for c in loops}  # type: ignore[union-attr]
        assert counts == loops


# -- replicas: a parked standby -------------------------------------------------------------


def ring_order(names: Sequence[str], child_id: str) -> list[str]:
    """The replica set of ``child_id`` on these members, primary first."""
    return list(ConsistentHashing().ring({n: 1 for n in names}).owners(child_id, len(names)))


def standby_spec(child_id: str, crash_on: str) -> ChildSpec:
    return ChildSpec(
        child_id,
        f"{W}:CrashAsReplicaOn",
        args={"node": crash_on},
        max_restarts=2,
        max_seconds=60,
    )


def instance_state(hub: Hub, child_id: str, node_id: str) -> OwnerState | None:
    handle = hub.registry.instances(child_id).get(node_id)
    return handle.state if handle is not None else None


async def test_a_parked_replica_is_recorded_reported_and_not_restarted(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    redundancy = Replication(2, mode="active_passive")
    async with hubs(etcd_endpoint, hub_prefix, ["a", "b"], redundancy=redundancy) as nodes:
        primary, standby = ring_order(["a", "b"], "svc")
        # What the primary's dashboard reports: events derived from its own registry.
        seen: list[ChildEvent] = []
        derive = ChildEvents(nodes[primary].registry)
        nodes[primary].registry.owner_observers.append(
            lambda changes: seen.extend(derive.owner_changes(changes))
        )
        result = await nodes[primary].start_child(standby_spec("svc", standby), wait=True)
        assert result.ok, result.errors

        async def parked() -> bool:
            return await replica_role_in_etcd(nodes[primary], "svc", standby) == "failed"

        await wait_until(parked, TIMEOUT, message="the parked replica is not recorded")
        # Cluster-wide: every node's registry (what ls, inspect and get_pids read) shows it.
        await wait_until(
            lambda: all(
                instance_state(h, "svc", standby) is OwnerState.FAILED for h in nodes.nodes.values()
            ),
            TIMEOUT,
        )
        handles = nodes[primary].get_pids("svc")
        assert [(h.node_id, h.state, h.fencing_token) for h in handles] == [
            (primary, OwnerState.RUNNING, handles[0].fencing_token),
            (standby, OwnerState.FAILED, 0),
        ]
        assert handles[0].is_primary and handles[1].role == "failed"
        # Reported on its node only: the hook (token 0: no owner key) and the metric.
        assert [(e.child_id, e.fencing_token) for e in FAILED[standby]] == [("svc", 0)]
        assert "restart intensity exceeded" in FAILED[standby][0].reason
        assert FAILED[primary] == []
        assert failures(nodes[standby]) == 1 and failures(nodes[primary]) == 0
        assert parked_workers.runs("svc", standby) == 3  # the first run and two restarts
        # Not restarted, however often the standby's node looks at it again.
        for _ in range(3):
            nodes[standby].reconciler.mark_all()
            await wait_until(lambda: all(h.is_settled() for h in nodes.nodes.values()), TIMEOUT)
            assert not nodes[standby].supervisor.is_running("svc")
        assert parked_workers.runs("svc", standby) == 3
        assert await replica_role_in_etcd(nodes[primary], "svc", standby) == "failed"
        assert len(FAILED[standby]) == 1
        replica_failures = [(e.kind, e.node, e.token) for e in seen if e.kind == "child_failed"]
        assert replica_failures == [("child_failed", standby, 0)]  # reported once, elsewhere
        # The primary is untouched.
        assert parked_workers.runs("svc", primary) == 1
        assert nodes[standby].supervisor.role("svc") is None
        assert nodes[primary].supervisor.is_running("svc")


async def test_a_healthy_standby_is_promoted_and_a_parked_one_stays_parked(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    names = ["a", "b", "c"]
    redundancy = Replication(3, mode="active_passive")
    async with hubs(etcd_endpoint, hub_prefix, names, redundancy=redundancy) as nodes:
        primary, healthy, sick = ring_order(names, "svc")
        result = await nodes[primary].start_child(standby_spec("svc", sick), wait=True)
        assert result.ok, result.errors
        await wait_until(
            lambda: (
                all(
                    instance_state(h, "svc", sick) is OwnerState.FAILED
                    for h in nodes.nodes.values()
                )
                and instance_state(nodes[primary], "svc", healthy) is OwnerState.RUNNING
            ),
            TIMEOUT,
            message="the sick standby was not parked",
        )
        survivors = [healthy, sick]
        assert ring_order(survivors, "svc") == survivors  # the healthy standby comes first
        await nodes.stop(primary)
        await wait_until(
            lambda: (
                (h := nodes[sick].get_pid("svc")) is not None
                and h.node_id == healthy
                and h.is_running
            ),
            TIMEOUT,
            message="the healthy standby was not promoted",
        )
        await wait_until(lambda: all(nodes[n].is_settled() for n in survivors), TIMEOUT)
        assert nodes[healthy].supervisor.role("svc") == "active"
        assert not nodes[sick].supervisor.is_running("svc")
        assert parked_workers.runs("svc", sick) == 3
        assert await replica_role_in_etcd(nodes[healthy], "svc", sick) == "failed"
        assert [e.child_id for e in FAILED[sick]] == ["svc"]
        assert FAILED[healthy] == []


async def test_parking_ends_when_the_standby_takes_over(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    """As the new owner a parked standby starts afresh (active here) and leaves no failed
    replica record behind; handing the child back makes it a standby again, started anew."""
    redundancy = Replication(2, mode="active_passive")
    async with hubs(etcd_endpoint, hub_prefix, ["a", "b"], redundancy=redundancy) as nodes:
        primary, standby = ring_order(["a", "b"], "svc")
        # What the primary's dashboard reports: events derived from its own registry.
        seen: list[ChildEvent] = []
        derive = ChildEvents(nodes[primary].registry)
        nodes[primary].registry.owner_observers.append(
            lambda changes: seen.extend(derive.owner_changes(changes))
        )
        result = await nodes[primary].start_child(standby_spec("svc", standby), wait=True)
        assert result.ok, result.errors
        await wait_until(
            lambda: instance_state(nodes[standby], "svc", standby) is OwnerState.FAILED,
            TIMEOUT,
        )
        await nodes.stop(primary)
        await wait_until(
            lambda: (
                (h := nodes[standby].get_pid("svc")) is not None
                and h.node_id == standby
                and h.is_running
            ),
            TIMEOUT,
            message="the parked standby did not take over",
        )
        assert nodes[standby].supervisor.role("svc") == "active"
        assert await replica_role_in_etcd(nodes[standby], "svc", standby) is None
        assert [h.node_id for h in nodes[standby].get_pids("svc")] == [standby]
        # The old primary returns and takes the child back: the node is a standby again,
        # started afresh (and, still unable to run as one there, parked again).
        returned = await nodes.add_node(primary)

        async def parked_again() -> bool:
            return await replica_role_in_etcd(returned, "svc", standby) == "failed"

        await wait_until(parked_again, TIMEOUT, message="the standby did not come back")
        await wait_until(
            lambda: (
                (h := returned.get_pid("svc")) is not None and h.node_id == primary and h.is_running
            ),
            TIMEOUT,
        )
        assert parked_workers.runs("svc", standby) == 3 + 1 + 3
        assert [e.fencing_token for e in FAILED[standby]] == [0, 0]


async def test_a_failed_owner_record_lost_to_an_etcd_error_is_written_again(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    """The first write of the `failed` record fails (an etcd hiccup): the retry writes the
    same record — `failed`, with the restart count — not a `running` one, and not never."""
    async with hubs(etcd_endpoint, hub_prefix, ["n1"]) as nodes:
        hub = nodes["n1"]
        spec = ChildSpec("loop", f"{W}:CrashAfterGate", max_restarts=2, max_seconds=60)
        assert (await hub.start_child(spec, wait=True, timeout=TIMEOUT)).ok
        owner_key = hub.keys.owner("loop")
        submit = hub.batcher.submit
        refused: list[OwnerRecord] = []

        def failing_once(op: Any, key: bytes, size: int = 0) -> Any:
            if key == owner_key and not refused and isinstance(op, Txn):
                put = op.success[0]
                assert isinstance(put, Put)
                record = decode_owner(put.key, put.value)
                if record.state is OwnerState.FAILED:
                    refused.append(record)
                    future = asyncio.get_running_loop().create_future()
                    future.set_exception(StoreUnavailable("injected: etcd hiccup"))
                    return future
            return submit(op, key, size)

        hub.batcher.submit = failing_once  # type: ignore[method-assign]
        parked_workers.gate("loop").set()

        async def failed_in_etcd() -> bool:
            record = await owner_in_etcd(hub, "loop")
            return record is not None and record.state is OwnerState.FAILED

        await wait_until(failed_in_etcd, TIMEOUT, message="the failed record never landed")
        assert len(refused) == 1  # the first write was lost; a retry wrote it
        record = await owner_in_etcd(hub, "loop")
        assert record is not None and record.restarts == 2, record
        assert "restart intensity exceeded" in record.last_exit
