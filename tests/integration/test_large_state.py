"""Worker state near etcd's size limits, on real etcd: big states survive moves and crashes.

A node taking over children used to read every child's handed-over or checkpointed state in
the reply of the very txn that acquired them. States of a few hundred KiB add up: once that
reply outgrew the etcd channel's receive limit, etcd had applied the acquire but the node
never saw the reply, adopted the children from the watch and started them *without state*.
Now the acquire only learns which state keys exist, and their values are read at the
acquire's revision in replies sized to fit (``Store.get_many``).

The hubs here accept replies of at most 4 MiB (gRPC's default; the production default is
64 MiB), so that a few MB of state show what tens of MB would in production.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter

import pytest
from support.wait import wait_until

from hub import ChildSpec, InvalidSpec
from hub.errors import RequestTooLarge
from hub.etcd.batcher import TxnBatcher
from hub.etcd.codec import encode_state
from hub.etcd.keys import Kind
from hub.etcd.store import EtcdConfig, Store, op_put, op_txn
from hub.operate.http import HubMetrics
from hub.operate.localetcd import LocalEtcd
from hub.testing import ClusterFactory
from hub.worker import Context
from strategies.migration import ColdSwap, HotSwap

SIZE = 300 * 1024
LIMIT = 4 * 1024 * 1024  # the hubs' max_response_bytes
BLOB = f"{__name__}:Blob"

#: child id -> its latest instance (every hub of a test runs in this process)
INSTANCES: dict[str, Blob] = {}


def blob_for(child_id: str, version: int = 0, size: int = SIZE) -> bytes:
    """Deterministic, child-specific content: a wrong or mixed-up state cannot pass."""
    seed = hashlib.sha256(f"{child_id}/{version}".encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


class Blob:
    """Starts from the bytes it is given, hands them over when it moves."""

    def __init__(self) -> None:
        self.ctx: Context | None = None
        self.state: bytes | None = None

    async def run(self, ctx: Context) -> None:
        self.ctx = ctx
        self.state = ctx.state if isinstance(ctx.state, bytes) else None
        INSTANCES[ctx.child_id] = self
        await asyncio.Event().wait()

    def handover_state(self) -> bytes | None:
        return self.state


@pytest.fixture(autouse=True)
def _fresh_instances() -> None:
    INSTANCES.clear()


def ctx_of(child_id: str) -> Context:
    ctx = INSTANCES[child_id].ctx
    assert ctx is not None
    return ctx


def running_on(node_id: str, child_ids: list[str]) -> bool:
    """Every child's latest instance was started by ``node_id``."""
    return all(
        (inst := INSTANCES.get(c)) is not None
        and inst.ctx is not None
        and inst.ctx.node_id == node_id
        for c in child_ids
    )


async def test_failover_restores_megabytes_of_checkpoints(
    processhub_cluster: ClusterFactory,
) -> None:
    cluster = await processhub_cluster(2, migration=ColdSwap(), max_response_bytes=LIMIT)
    ids = [f"ckpt-{i}" for i in range(40)]
    result = await cluster.node("node-1").start_children(
        [ChildSpec(id=c, start=BLOB) for c in ids], wait=True, timeout=15
    )
    assert result.ok, result.errors
    before = await cluster.wait_for_placement(ids)
    await wait_until(lambda: all(c in INSTANCES for c in ids), 10)
    victim, _ = Counter(before.values()).most_common(1)[0]
    survivor = next(n for n in cluster.node_ids if n != victim)
    moving = [c for c in ids if before[c] == victim]
    # The survivor acquires them all at once: their states outgrow one reply.
    assert len(moving) * SIZE > LIMIT
    for child_id in moving:
        INSTANCES[child_id].state = blob_for(child_id)
        await ctx_of(child_id).checkpoint(blob_for(child_id))

    await cluster.kill(victim)
    after = await cluster.wait_for_placement(ids, timeout=cluster.lease_ttl + 20)
    assert set(after.values()) == {survivor}
    await wait_until(lambda: running_on(survivor, moving), 10)
    for child_id in moving:
        assert ctx_of(child_id).state_source == "checkpoint", child_id
        assert INSTANCES[child_id].state == blob_for(child_id), child_id


async def test_a_returning_node_takes_megabytes_of_handed_over_state(
    processhub_cluster: ClusterFactory,
) -> None:
    """Pinned children wait with their handed-over state for their node, which then
    acquires them all in one round: every one starts with the newest of its two states."""
    cluster = await processhub_cluster(
        ["node-1", "node-2"], migration=HotSwap(), max_response_bytes=LIMIT
    )
    hub = cluster.node("node-2")
    ids = [f"hot-{i}" for i in range(16)]
    specs = [ChildSpec(id=c, start=BLOB, nodes=("node-1", "node-3")) for c in ids]
    result = await hub.start_children(specs, wait=True, timeout=15)
    assert result.ok, result.errors
    assert set((await cluster.wait_for_placement(ids)).values()) == {"node-1"}
    await wait_until(lambda: all(c in INSTANCES for c in ids), 10)
    for child_id in ids:  # an older checkpoint, and newer state to hand over
        await ctx_of(child_id).checkpoint(blob_for(child_id, 0))
        INSTANCES[child_id].state = blob_for(child_id, 1)
    assert len(ids) * 2 * SIZE > LIMIT

    await cluster.stop("node-1")  # drain: every child hands its state over, and waits
    async with Store(hub.config.etcd) as store:
        assert await store.count_prefix(hub.keys.family(Kind.HANDOVER)) == len(ids)
    await cluster.add_node("node-3")
    assert set((await cluster.wait_for_placement(ids, timeout=20)).values()) == {"node-3"}
    await wait_until(lambda: running_on("node-3", ids), 10)
    for child_id in ids:
        assert ctx_of(child_id).state_source == "handover", child_id
        assert INSTANCES[child_id].state == blob_for(child_id, 1), child_id


async def test_a_state_too_large_to_read_parks_its_child_as_failed(
    processhub_cluster: ClusterFactory,
) -> None:
    """No retry can read a value larger than the receive limit: the child is marked
    failed with the reason, the others start, and the node goes quiet (no livelock)."""
    cluster = await processhub_cluster(1, max_response_bytes=1024 * 1024)
    hub = cluster.node("node-1")
    huge = blob_for("huge", size=1200 * 1024)  # written by a node accepting more, say
    async with Store(hub.config.etcd) as store:
        await store.put(hub.keys.checkpoint("huge"), encode_state(huge, 1, 0.0))
        await store.put(hub.keys.checkpoint("fine"), encode_state(b"ok", 1, 0.0))
    await hub.start_children([ChildSpec(id=c, start=BLOB) for c in ("huge", "fine")])

    def parked() -> bool:
        handle = hub.get_pid("huge")
        return handle is not None and handle.state.value == "failed"

    await wait_until(parked, 10)
    handle = hub.get_pid("huge")
    assert handle is not None and "max_response_bytes" in handle.last_exit
    await cluster.wait_for_placement(["fine"])
    await wait_until(lambda: "fine" in INSTANCES, 10)
    assert INSTANCES["fine"].state == b"ok"
    assert "huge" not in INSTANCES
    await cluster.wait_settled()  # nothing left to retry
    assert hub.reconciler.unreadable_states == 1
    metric = HubMetrics.of(hub).registry.get_sample_value("processhub_unreadable_states")
    assert metric == 1  # what /metrics reports
    reader = EtcdConfig(endpoints=hub.config.etcd.endpoints)  # the default 64 MiB limit
    async with Store(reader) as store:  # the state is kept for a later owner
        kv = await store.get(hub.keys.checkpoint("huge"))
    assert kv is not None and kv.value == encode_state(huge, 1, 0.0)


async def test_state_too_large_for_etcd_is_refused_when_written(
    processhub_cluster: ClusterFactory,
) -> None:
    cluster = await processhub_cluster(2, migration=HotSwap())
    result = await cluster.node("node-1").start_child(
        ChildSpec(id="big", start=BLOB), wait=True, timeout=10
    )
    assert result.ok, result.errors
    owner = (await cluster.wait_for_placement(["big"]))["big"]
    await wait_until(lambda: "big" in INSTANCES, 10)
    ctx = ctx_of("big")
    with pytest.raises(InvalidSpec, match="larger than the 1048576 bytes"):
        await ctx.checkpoint(b"x" * 1024 * 1024)
    await ctx.checkpoint(b"small")  # the refusal wedged nothing

    INSTANCES["big"].state = b"y" * 1024 * 1024  # too large to hand over: moves without it
    await cluster.stop(owner)
    survivor = cluster.node_ids[0]
    await cluster.wait_for_placement(["big"])
    await wait_until(lambda: running_on(survivor, ["big"]), 10)
    assert ctx_of("big").state_source == "checkpoint"
    assert INSTANCES["big"].state == b"small"


@pytest.mark.etcd  # starts an etcd of its own
async def test_batches_fit_an_etcd_with_a_smaller_request_limit() -> None:
    """An etcd refusing requests above 256 KiB: the batcher's 1 MiB batches are split
    until they fit, later ones are cut smaller, and only an operation too large on its own
    fails."""
    with LocalEtcd(extra_args=["--max-request-bytes", str(256 * 1024)]) as etcd:
        async with Store(EtcdConfig(endpoints=(etcd.endpoint,))) as store:
            batcher = TxnBatcher(store)
            async with asyncio.TaskGroup() as tg:
                runner = tg.create_task(batcher.run())
                value = b"v" * (60 * 1024)
                small = [
                    batcher.submit(op_txn([], [op_put(f"/b/{i}".encode(), value)]), b"/b/%d" % i)
                    for i in range(12)
                ]
                big = batcher.submit(op_txn([], [op_put(b"/b/big", b"v" * 300 * 1024)]), b"/b/big")
                results = await asyncio.gather(*small, big, return_exceptions=True)
                runner.cancel()
            assert all(not isinstance(r, BaseException) and r.succeeded for r in results[:12])
            assert isinstance(results[12], RequestTooLarge)
            assert batcher.max_bytes < 256 * 1024
            stored, _ = await store.list_prefix(b"/b/")
            assert sorted(kv.key for kv in stored) == sorted(b"/b/%d" % i for i in range(12))
