"""Replication on real etcd (ProcessHub 8a scenarios 8 and 17, and its open bug #15)."""

from __future__ import annotations

from typing import Any

from support.wait import wait_until

from hub import ChildSpec
from hub.testing import HubCluster
from integration import state_workers
from strategies import ConsistentHashing, Guarantee
from strategies.redundancy import Replication

COUNTER = f"{state_workers.__name__}:Counter"


def cluster(endpoint: str, prefix: str, names: list[str], redundancy: Any) -> HubCluster:
    return HubCluster([endpoint], prefix=prefix, hub_id="rp", nodes=names, redundancy=redundancy)


def matches_ring(c: HubCluster, ids: list[str], factor: int, mode: str) -> bool:
    """Every child has exactly its ring's replica set, primary first, with the right roles,
    and the live worker instances agree (exactly one active under active/passive)."""
    live = c.node_ids
    hub = c[live[0]]
    ring = ConsistentHashing().ring({n: 1 for n in live})
    n = min(factor, len(live))
    for child_id in ids:
        expected = ring.owners(child_id, n)
        instances = hub.get_pids(child_id)
        if not instances or instances[0].node_id != expected[0]:
            return False  # the primary (active) comes first and is the ring's first node
        if {h.node_id for h in instances} != set(expected) or len(instances) != n:
            return False
        if not instances[0].is_primary or not instances[0].is_running:
            return False
        workers = [state_workers.BY_NODE.get((child_id, node)) for node in expected]
        if any(w is None or not w.active for w in workers):
            return False
        roles = [w.ctx.role for w in workers]  # type: ignore[union-attr]
        want = ["active"] * n if mode == "active_active" else ["active"] + ["passive"] * (n - 1)
        if roles != want:
            return False
    return True


async def test_active_active_cluster_size_replication(etcd_endpoint: str, hub_prefix: str) -> None:
    state_workers.reset()
    async with cluster(etcd_endpoint, hub_prefix, ["a", "b", "c"], Replication("cluster")) as c:
        ids = [f"aa-{i}" for i in range(30)]
        result = await c["a"].start_children(
            [ChildSpec(id=x, start=COUNTER) for x in ids], wait=True, timeout=15
        )
        assert result.ok, result.errors
        await wait_until(lambda: matches_ring(c, ids, 3, "active_active"), 15)
        # every node's registry agrees
        for hub in c.nodes.values():
            assert all(len(hub.get_pids(x)) == 3 for x in ids)


async def test_active_passive_roles_follow_joins_leaves_and_crashes(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    """ProcessHub #15 (modes wrong after joins and leaves) must not exist here."""
    state_workers.reset()
    redundancy = Replication(2, mode="active_passive")
    async with cluster(etcd_endpoint, hub_prefix, ["a", "b", "c"], redundancy) as c:
        ids = [f"ap-{i}" for i in range(30)]
        result = await c["a"].start_children(
            [ChildSpec(id=x, start=COUNTER, metadata={"tag": "rooms"}) for x in ids],
            wait=True,
            timeout=15,
        )
        assert result.ok, result.errors
        await wait_until(lambda: matches_ring(c, ids, 2, "active_passive"), 15)
        assert all(len(v) == 2 for v in c["b"].tag_query("rooms").values())
        await c.add_node("d")  # join
        await wait_until(lambda: matches_ring(c, ids, 2, "active_passive"), 15, message="join")
        await c.stop("b")  # graceful leave
        await wait_until(lambda: matches_ring(c, ids, 2, "active_passive"), 15, message="leave")
        await c.stop("c", drain=False)  # abrupt: lease revoked, no hand-over
        await wait_until(lambda: matches_ring(c, ids, 2, "active_passive"), 15, message="crash")
        active = [
            (x, n)
            for (x, n), w in state_workers.BY_NODE.items()
            if w.active and w.ctx.role == "active"  # type: ignore[union-attr]
        ]
        assert sorted(x for x, _ in active) == sorted(ids)  # exactly one active each


async def test_promotion_keeps_the_passive_replica_state(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    state_workers.reset()
    redundancy = Replication(2, mode="active_passive")
    async with cluster(etcd_endpoint, hub_prefix, ["a", "b"], redundancy) as c:
        result = await c["a"].start_children(
            [ChildSpec(id="p", start=COUNTER)], wait=True, timeout=10
        )
        assert result.ok
        await wait_until(lambda: matches_ring(c, ["p"], 2, "active_passive"), 10)
        primary = c["a"].active_replica("p").node_id  # type: ignore[union-attr]
        standby = "b" if primary == "a" else "a"
        state_workers.BY_NODE[("p", standby)].count = 77
        await c.stop(primary, drain=False)
        await wait_until(
            lambda: (
                (w := state_workers.BY_NODE.get(("p", standby))) is not None
                and w.active
                and w.ctx.role == "active"
            ),
            10,
        )  # type: ignore[union-attr]
        promoted = state_workers.BY_NODE[("p", standby)]
        assert promoted.count == 77 and promoted.ctx.state_source == "promotion"  # type: ignore[union-attr]
        assert c[standby].active_replica("p").node_id == standby  # type: ignore[union-attr]


class TwoInstances:
    """A redundancy strategy written from the Protocol alone: no base class, not a
    Replication. The hub must ask its ``count``, not check its class."""

    guarantees: frozenset[Guarantee] = frozenset()  # two active instances: not one owner
    mode = "active_active"

    def count(self, members: int) -> int:
        return 2


async def test_a_custom_redundancy_strategy_runs_the_instances_its_count_says(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    state_workers.reset()
    async with cluster(etcd_endpoint, hub_prefix, ["a", "b", "c"], TwoInstances()) as c:
        ids = [f"two-{i}" for i in range(12)]
        result = await c["a"].start_children(
            [ChildSpec(id=x, start=COUNTER) for x in ids], wait=True, timeout=15
        )
        assert result.ok, result.errors
        await wait_until(lambda: matches_ring(c, ids, 2, "active_active"), 15)
        for hub in c.nodes.values():
            assert all(len(hub.get_pids(x)) == 2 for x in ids)


async def test_a_cluster_replicated_child_shrunk_to_one_node_keeps_no_stale_replica(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    """Replication("cluster") at one member is one instance per child: the survivor's
    replicas are promoted (keeping their state), and no replica record is left behind."""
    state_workers.reset()
    async with cluster(etcd_endpoint, hub_prefix, ["a", "b"], Replication("cluster")) as c:
        ids = [f"sh-{i}" for i in range(12)]
        result = await c["a"].start_children(
            [ChildSpec(id=x, start=COUNTER) for x in ids], wait=True, timeout=15
        )
        assert result.ok, result.errors
        await wait_until(lambda: matches_ring(c, ids, 2, "active_active"), 15)
        survivor = c["a"]
        promoted = [x for x in ids if survivor.active_replica(x).node_id == "b"]  # type: ignore[union-attr]
        assert promoted, "the ring put no primary on b"
        for x in promoted:
            state_workers.BY_NODE[(x, "a")].count = 41
        await c["b"].stop(drain=False)  # abrupt: lease revoked, no hand-over

        def one_instance_each() -> bool:
            for x in ids:
                instances = survivor.get_pids(x)
                if len(instances) != 1 or instances[0].node_id != "a":
                    return False
                if not (instances[0].is_primary and instances[0].is_running):
                    return False
            return not survivor.registry.replicas

        await wait_until(one_instance_each, 15)
        for x in promoted:
            worker = state_workers.BY_NODE[(x, "a")]
            assert worker.active and worker.count == 41
            assert worker.ctx.fencing_token > 0  # type: ignore[union-attr]
