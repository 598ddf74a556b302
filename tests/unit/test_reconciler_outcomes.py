"""The reconciler against in-memory fakes of the batcher, session and supervisor (no etcd).

* Per-key outcomes: a child whose write keeps failing waits out its own backoff and does
  not hold back another child's next action (the old round-wide retry pause did).
* A cluster that shrinks to one member under ``Replication("cluster")`` switches to one
  instance per child: the local replica is promoted, its key deleted by the acquire txn,
  so no stale replica stays visible.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any, cast

from support.wait import wait_until

from hub.core.outcome import Retry
from hub.core.reconciler import Reconciler
from hub.core.registry import Registry
from hub.core.supervisor import Supervisor
from hub.core.workqueue import Backoff
from hub.errors import StoreUnavailable
from hub.etcd.batcher import TxnBatcher
from hub.etcd.codec import ReplicaRecord, encode_node, encode_owner, encode_replica, encode_spec
from hub.etcd.keys import KeySpace
from hub.etcd.ops import Delete, Txn
from hub.etcd.session import Session
from hub.etcd.store import Event, Op, TxnResult
from hub.model import ChildSpec, NodeInfo, OwnerRecord, OwnerState
from strategies.base import RedundancyStrategy
from strategies.distribution import ConsistentHashing
from strategies.redundancy import Replication

TIMEOUT = 5.0  # ceiling for every wait; these tests normally finish in milliseconds
LEASE = 7
KEYS = KeySpace("h", "/t")


class FakeBatcher:
    """Resolves each submission on the next loop iteration; keys in ``failing`` fail."""

    def __init__(self) -> None:
        self.submitted: list[bytes] = []
        self.ops: list[Op] = []
        self.failing: set[bytes] = set()
        self.revision = 1000

    def submit(self, op: Op, key: bytes, size: int = 0) -> asyncio.Future[TxnResult]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[TxnResult] = loop.create_future()
        self.submitted.append(key)
        self.ops.append(op)
        if key in self.failing:
            loop.call_soon(fut.set_exception, StoreUnavailable("etcd is down"))
        else:
            self.revision += 1
            loop.call_soon(fut.set_result, TxnResult(True, self.revision))
        return fut

    def count(self, key: bytes) -> int:
        return Counter(self.submitted)[key]

    def deleted_with(self, key: bytes) -> list[bytes]:
        """The keys deleted by the submissions about ``key``."""
        return [
            inner.key
            for submitted, op in zip(self.submitted, self.ops, strict=True)
            if submitted == key and isinstance(op, Txn)
            for inner in op.success
            if isinstance(inner, Delete)
        ]

    def pending(self) -> int:
        return 0


class FakeSession:
    lease_id = LEASE
    store: Any = None  # nothing here reads state or grants handover leases


class FakeSupervisor:
    """Workers are entries: child id -> (fencing token, role)."""

    def __init__(self) -> None:
        self.workers: dict[str, tuple[int, str]] = {}

    def start(self, spec: ChildSpec, *, fencing_token: int, role: str = "active", **_: Any) -> None:
        self.workers[spec.id] = (fencing_token, role)

    def is_running(self, child_id: str) -> bool:
        return child_id in self.workers

    def child_ids(self) -> frozenset[str]:
        return frozenset(self.workers)

    async def stop_many(self, child_ids: Iterable[str], **_: Any) -> dict[str, Any]:
        for child_id in child_ids:
            self.workers.pop(child_id, None)
        return {}

    async def stop_all(self) -> None:
        self.workers.clear()


def put(key: bytes, value: bytes, revision: int, lease: int = 0) -> Event:
    return Event(key, value, False, revision, revision, lease)


def delete(key: bytes, revision: int) -> Event:
    return Event(key, b"", True, 0, revision, 0)


def node(node_id: str, lease: int, revision: int) -> Event:
    return put(KEYS.node(node_id), encode_node(NodeInfo(node_id, lease)), revision, lease)


def spec(child_id: str, revision: int) -> Event:
    return put(KEYS.spec(child_id), encode_spec(ChildSpec(child_id, "m:f"), 0.0), revision)


@asynccontextmanager
async def running(
    registry: Registry,
    batcher: FakeBatcher,
    supervisor: FakeSupervisor,
    redundancy: RedundancyStrategy | None = None,
) -> AsyncIterator[Reconciler]:
    reconciler = Reconciler(
        node_id="n1",
        keys=KEYS,
        registry=registry,
        session=cast(Session, FakeSession()),
        batcher=cast(TxnBatcher, batcher),
        supervisor=cast(Supervisor, supervisor),
        distribution=ConsistentHashing(),
        redundancy=redundancy,
        # Long enough that a retry inside the test would be a bug.
        backoff=Backoff(base=60.0, cap=60.0, jitter=0.0),
    )
    registry.listener = reconciler
    reconciler.registry_changed(set(), nodes_changed=True, full=True)  # as after a relist
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(reconciler.run())
        try:
            yield reconciler
        finally:
            task.cancel()


async def test_a_failing_write_does_not_delay_another_childs_next_action(
    no_leaked_tasks: None,
) -> None:
    registry = Registry(KEYS)
    registry.apply([node("n1", LEASE, 1), spec("a", 2), spec("b", 3)], 3)
    batcher, supervisor = FakeBatcher(), FakeSupervisor()
    batcher.failing.add(KEYS.owner("a"))
    async with running(registry, batcher, supervisor) as reconciler:
        await wait_until(lambda: supervisor.is_running("b"), TIMEOUT)
        assert batcher.count(KEYS.owner("a")) == 1
        # b changes right away (its spec is deleted): it must be released now, not when
        # a's retry comes up.
        registry.apply([delete(KEYS.spec("b"), 10)], 10)
        await wait_until(lambda: batcher.count(KEYS.owner("b")) == 2, TIMEOUT)
        assert not supervisor.is_running("b")
        assert "b" not in reconciler.owned
        assert batcher.count(KEYS.owner("a")) == 1, "a was retried before its backoff"
        assert reconciler.queue.failures("a") == 1
        assert not reconciler.is_idle()  # a's retry is still pending


async def test_the_acquire_executor_reports_one_outcome_per_child(no_leaked_tasks: None) -> None:
    registry = Registry(KEYS)
    registry.apply([node("n1", LEASE, 1), spec("a", 2), spec("b", 3)], 3)
    batcher, supervisor = FakeBatcher(), FakeSupervisor()
    batcher.failing.add(KEYS.owner("a"))
    async with running(registry, batcher, supervisor) as reconciler:
        outcomes = await reconciler.executor.acquire(["a", "b"])
        assert set(outcomes) == {"a"}  # b is done
        assert isinstance(outcomes["a"], Retry)
        assert supervisor.workers["b"][0] == reconciler.owned["b"]
        assert "a" not in reconciler.owned


async def test_a_cluster_shrunk_to_one_member_promotes_the_local_replica(
    no_leaked_tasks: None,
) -> None:
    registry = Registry(KEYS)
    owner = encode_owner(OwnerRecord("n2", 200, OwnerState.RUNNING, 0.0))
    replica = encode_replica(ReplicaRecord("n1", LEASE, "passive", 0.0))
    registry.apply(
        [
            node("n1", LEASE, 1),
            node("n2", 200, 2),
            spec("c", 3),
            put(KEYS.owner("c"), owner, 4, 200),
            put(KEYS.replica("c", "n1"), replica, 5, LEASE),
        ],
        5,
    )
    batcher, supervisor = FakeBatcher(), FakeSupervisor()
    supervisor.workers["c"] = (0, "passive")
    async with running(registry, batcher, supervisor, Replication("cluster")) as reconciler:
        await wait_until(reconciler.is_idle, TIMEOUT)
        assert reconciler.replicated
        assert supervisor.workers["c"] == (0, "passive")  # a replica, as it should be
        # n2 dies: its node key and owner key expire together.
        registry.apply([delete(KEYS.node("n2"), 20), delete(KEYS.owner("c"), 20)], 20)
        assert not reconciler.replicated
        await wait_until(lambda: supervisor.workers.get("c", (0, ""))[0] > 0, TIMEOUT)
        token, role = supervisor.workers["c"]
        assert role == "active" and token == reconciler.owned["c"]
        assert batcher.count(KEYS.owner("c")) == 1
        # The acquire txn withdrew the replica key: no stale replica for get_pids.
        assert batcher.deleted_with(KEYS.owner("c")) == [KEYS.replica("c", "n1")]
        assert batcher.count(KEYS.replica("c", "n1")) == 0


async def test_a_leftover_replica_this_node_cannot_own_is_withdrawn(
    no_leaked_tasks: None,
) -> None:
    """One member left, but another (dead, not yet expired) incarnation still holds the
    owner key: the local replica goes down and its key is deleted."""
    registry = Registry(KEYS)
    owner = encode_owner(OwnerRecord("n2", 200, OwnerState.RUNNING, 0.0))
    replica = encode_replica(ReplicaRecord("n1", LEASE, "passive", 0.0))
    registry.apply(
        [
            node("n1", LEASE, 1),
            spec("c", 3),
            put(KEYS.owner("c"), owner, 4, 200),
            put(KEYS.replica("c", "n1"), replica, 5, LEASE),
        ],
        5,
    )
    batcher, supervisor = FakeBatcher(), FakeSupervisor()
    supervisor.workers["c"] = (0, "passive")
    async with running(registry, batcher, supervisor, Replication("cluster")) as reconciler:
        assert not reconciler.replicated
        await wait_until(lambda: batcher.count(KEYS.replica("c", "n1")) == 1, TIMEOUT)
        assert "c" not in supervisor.workers
        assert batcher.deleted_with(KEYS.replica("c", "n1")) == [KEYS.replica("c", "n1")]
        await wait_until(reconciler.is_idle, TIMEOUT)
        assert batcher.count(KEYS.owner("c")) == 0
