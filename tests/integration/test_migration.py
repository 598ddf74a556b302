"""Migration on real etcd: hot swap hands state over, checkpoints survive and are fenced.

Several in-process hubs form one cluster; the stateful workers (``state_workers``) log
every activation so tests can also check that no child ever had two active instances.
"""

from __future__ import annotations

from typing import Any

import pytest
from support.wait import wait_until

from hub import ChildSpec, Hub, InvalidSpec, StaleFence, UnknownChild, UnknownNode
from hub.etcd.keys import Kind
from hub.etcd.store import Store
from hub.testing import HubCluster
from integration import state_workers
from strategies.migration import ColdSwap, HotSwap

COUNTER = f"{state_workers.__name__}:Counter"
DOUBLING = f"{state_workers.__name__}:Doubling"
BYTES = f"{state_workers.__name__}:BytesState"


@pytest.fixture(autouse=True)
def _fresh_workers() -> None:
    state_workers.reset()


def cluster(endpoint: str, prefix: str, names: list[str], migration: Any) -> HubCluster:
    return HubCluster([endpoint], prefix=prefix, hub_id="m", nodes=names, migration=migration)


def converged(hub: Hub, ids: list[str]) -> bool:
    """Every child runs where the ring places it, and its worker is active."""
    handles = hub.registry.handles
    return all(
        (h := handles.get(c)) is not None
        and h.is_running
        and h.node_id == hub.placement(c)
        and (inst := state_workers.INSTANCES.get(c)) is not None
        and inst.active
        and inst.ctx is not None
        and inst.ctx.fencing_token == h.fencing_token
        for c in ids
    )


async def start_counting(hub: Hub, ids: list[str], target: str = COUNTER) -> dict[str, str]:
    result = await hub.start_children(
        [ChildSpec(id=c, start=target) for c in ids], wait=True, timeout=15
    )
    assert result.ok, result.errors
    await wait_until(lambda: converged(hub, ids), 10)
    for i, child_id in enumerate(ids):
        state_workers.INSTANCES[child_id].count = 1000 + i
    return {h.child_id: h.node_id for h in result.started}


async def handover_keys(hub: Hub) -> int:
    async with Store(hub.config.etcd) as store:
        return await store.count_prefix(hub.keys.family(Kind.HANDOVER))


async def test_hot_swap_on_join_hands_state_to_the_new_node(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    async with cluster(etcd_endpoint, hub_prefix, ["a", "b"], HotSwap()) as c:
        hub = c["a"]
        ids = [f"h-{i}" for i in range(40)]
        before = await start_counting(hub, ids)
        await c.add_node("c")

        def moved_to_c() -> bool:
            # Converged on the new ring: a look taken before "a" placed anything on "c"
            # would pass converged() on the old ring.
            return converged(hub, ids) and any(
                (h := hub.get_pid(cid)) is not None and h.node_id == "c" for cid in ids
            )

        await wait_until(moved_to_c, 15, message="no convergence on join")
        moved = [cid for cid in ids if hub.get_pid(cid).node_id != before[cid]]  # type: ignore[union-attr]
        assert moved
        assert all(hub.get_pid(cid).node_id == "c" for cid in moved)  # type: ignore[union-attr]
        for i, child_id in enumerate(ids):
            inst = state_workers.INSTANCES[child_id]
            assert inst.count == 1000 + i, child_id
            if child_id in moved:
                assert inst.ctx is not None and inst.ctx.state_source == "handover"
        assert not state_workers.overlaps()

        # Every consumed handover key is deleted with the new owner's "running" write.
        async def none_left() -> bool:
            return await handover_keys(hub) == 0

        await wait_until(none_left, 5, message="handover keys left in etcd")


async def test_graceful_stop_hands_state_over(etcd_endpoint: str, hub_prefix: str) -> None:
    async with cluster(etcd_endpoint, hub_prefix, ["a", "b", "c"], HotSwap()) as c:
        hub = c["a"]
        ids = [f"g-{i}" for i in range(30)]
        before = await start_counting(hub, ids)
        assert "c" in before.values()
        await c.stop("c")
        await wait_until(lambda: converged(hub, ids), 10)
        assert all(hub.get_pid(cid).node_id != "c" for cid in ids)  # type: ignore[union-attr]
        assert [state_workers.INSTANCES[cid].count for cid in ids] == [1000 + i for i in range(30)]
        assert not state_workers.overlaps()


async def test_cold_swap_moves_without_state_but_checkpoints_survive(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    async with cluster(etcd_endpoint, hub_prefix, ["a", "b"], ColdSwap()) as c:
        hub = c["a"]
        ids = [f"c-{i}" for i in range(20)]
        before = await start_counting(hub, ids)
        checkpointed = ids[:10]
        for child_id in checkpointed:
            inst = state_workers.INSTANCES[child_id]
            assert inst.ctx is not None
            await inst.ctx.checkpoint({"count": inst.count})
        victim = "b" if "b" in before.values() else "a"
        survivor = c["a" if victim == "b" else "b"]
        await c.stop(victim, drain=False)  # gone without handing anything over
        await wait_until(lambda: converged(survivor, ids), 10)
        for i, child_id in enumerate(ids):
            inst = state_workers.INSTANCES[child_id]
            if before[child_id] != victim:
                assert inst.count == 1000 + i  # never moved
            elif child_id in checkpointed:
                assert inst.count == 1000 + i and inst.ctx.state_source == "checkpoint"  # type: ignore[union-attr]
            else:
                assert inst.count == 0 and inst.ctx.state is None  # type: ignore[union-attr]
        assert not state_workers.overlaps()


async def test_checkpoint_of_a_stale_instance_is_refused(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    async with cluster(etcd_endpoint, hub_prefix, ["a", "b"], HotSwap()) as c:
        hub = c["a"]
        ids = [f"s-{i}" for i in range(12)]
        before = await start_counting(hub, ids)
        stale = {cid: state_workers.INSTANCES[cid].ctx for cid in ids}
        await c.add_node("c")
        await wait_until(lambda: converged(hub, ids), 15)
        moved = [cid for cid in ids if hub.get_pid(cid).node_id != before[cid]]  # type: ignore[union-attr]
        assert moved
        old_ctx = stale[moved[0]]
        assert old_ctx is not None
        with pytest.raises(StaleFence):
            await old_ctx.checkpoint({"count": -1})
        new_ctx = state_workers.INSTANCES[moved[0]].ctx
        assert new_ctx is not None and new_ctx.fencing_token > old_ctx.fencing_token
        await new_ctx.checkpoint({"count": 5})  # the current owner may write


async def test_alter_handover_state_and_bytes_state(etcd_endpoint: str, hub_prefix: str) -> None:
    async with cluster(etcd_endpoint, hub_prefix, ["a", "b"], HotSwap()) as c:
        hub = c["a"]
        doubled = [f"d-{i}" for i in range(12)]
        before = await start_counting(hub, doubled, DOUBLING)
        result = await hub.start_children(
            [ChildSpec(id=f"b-{i}", start=BYTES) for i in range(12)], wait=True, timeout=15
        )
        assert result.ok
        await wait_until(lambda: converged(hub, [f"b-{i}" for i in range(12)]), 10)
        for i in range(12):
            state_workers.INSTANCES[f"b-{i}"].blob = b"\x00\xff" * (i + 1)  # type: ignore[attr-defined]
        blob_before = {h.child_id: h.node_id for h in result.started}
        await c.add_node("c")
        await wait_until(lambda: converged(hub, doubled + list(blob_before)), 15)
        for i, child_id in enumerate(doubled):
            moved = hub.get_pid(child_id).node_id != before[child_id]  # type: ignore[union-attr]
            assert state_workers.INSTANCES[child_id].count == (1000 + i) * (2 if moved else 1)
        for i in range(12):
            child_id = f"b-{i}"
            if hub.get_pid(child_id).node_id != blob_before[child_id]:  # type: ignore[union-attr]
                assert state_workers.INSTANCES[child_id].blob == b"\x00\xff" * (i + 1)  # type: ignore[attr-defined]


async def test_stopping_a_child_forgets_its_state(etcd_endpoint: str, hub_prefix: str) -> None:
    async with cluster(etcd_endpoint, hub_prefix, ["a"], HotSwap()) as c:
        hub = c["a"]
        await start_counting(hub, ["x"])
        ctx = state_workers.INSTANCES["x"].ctx
        assert ctx is not None
        await ctx.checkpoint({"count": 99})
        result = await hub.stop_children(["x"], wait=True)
        assert result.ok
        state_workers.reset()
        await start_counting(hub, ["x"])
        assert state_workers.INSTANCES["x"].ctx.state is None  # type: ignore[union-attr]


# -- operator moves: move, pin, drain -------------------------------------------------------


async def test_move_pins_a_child_with_its_state_and_unpin_returns_it(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    async with cluster(etcd_endpoint, hub_prefix, ["a", "b", "c"], HotSwap()) as c:
        hub = c["a"]
        ids = [f"mv-{i}" for i in range(9)]
        before = await start_counting(hub, ids)
        child_id = ids[0]
        target = next(n for n in ("a", "b", "c") if n != before[child_id])
        handle = await hub.move(child_id, target, timeout=10)
        assert handle is not None and handle.node_id == target
        await wait_until(lambda: converged(hub, ids), 10)
        inst = state_workers.INSTANCES[child_id]
        assert inst.count == 1000 and inst.ctx.state_source == "handover"  # type: ignore[union-attr]
        assert hub.child_lookup(child_id)[0].nodes == (target,)  # type: ignore[index]
        await c.add_node("d")  # a join never moves a pinned child
        await wait_until(lambda: converged(hub, ids), 10)
        assert hub.get_pid(child_id).node_id == target  # type: ignore[union-attr]
        await hub.unpin(child_id)
        await wait_until(
            lambda: hub.child_lookup(child_id)[0].nodes == () and converged(hub, ids),  # type: ignore[index]
            10,
        )
        assert state_workers.INSTANCES[child_id].count == 1000
        assert not state_workers.overlaps()


async def test_move_and_pin_refuse_unknown_names(etcd_endpoint: str, hub_prefix: str) -> None:
    async with cluster(etcd_endpoint, hub_prefix, ["a"], HotSwap()) as c:
        hub = c["a"]
        await start_counting(hub, ["x"])
        with pytest.raises(UnknownNode):
            await hub.move("x", "nope")
        with pytest.raises(UnknownChild):
            await hub.pin("missing", ["a"])
        with pytest.raises(InvalidSpec):
            await hub.pin("x", ["not a node id"])
        assert hub.get_pid("x").node_id == "a"  # type: ignore[union-attr]


async def test_child_pinned_to_a_dead_node_waits_and_comes_back(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    """Unlike ProcessHub's Guided, children of a gone node never silently vanish."""
    async with cluster(etcd_endpoint, hub_prefix, ["a", "b"], ColdSwap()) as c:
        hub = c["a"]
        result = await hub.start_children(
            [ChildSpec(id="g", start=COUNTER, nodes=("b",))], wait=True, timeout=10
        )
        assert result.ok and result.started[0].node_id == "b"
        await c.stop("b")
        await wait_until(lambda: hub.get_pid("g") is None, 10)
        assert "g" in hub.registry_dump()  # still desired, waiting for its node
        assert hub.placement("g") is None
        await c.add_node("b")
        await wait_until(lambda: converged(hub, ["g"]), 10)
        assert hub.get_pid("g").node_id == "b"  # type: ignore[union-attr]


async def test_drain_moves_everything_off_a_node_with_state(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    async with cluster(etcd_endpoint, hub_prefix, ["a", "b", "c"], HotSwap()) as c:
        hub = c["a"]
        ids = [f"dr-{i}" for i in range(30)]
        before = await start_counting(hub, ids)
        assert "b" in before.values()
        await hub.drain("b", timeout=20)
        assert c["b"].left.is_set()
        await wait_until(lambda: converged(hub, ids), 10)
        assert all(hub.get_pid(cid).node_id != "b" for cid in ids)  # type: ignore[union-attr]
        assert [state_workers.INSTANCES[cid].count for cid in ids] == [1000 + i for i in range(30)]
        assert not state_workers.overlaps()
        assert "b" not in hub.registry.leave_requests  # the request was withdrawn
        with pytest.raises(UnknownNode):
            await hub.drain("nope")
