"""The testing kit (``hub.testing``) on real etcd, through its own pytest fixtures.

Checks what users rely on: the session etcd answers, a cluster places children and
``wait_for_placement`` says where, ``kill`` leaves the lease to expire (children come back
about one TTL later, checkpoints survive, calls follow), ``restart`` is a new incarnation
of the same node, ``stop`` drains with handover. Two of these are the migration and call
scenarios of test_migration.py and test_calls.py, rewritten on ``processhub_cluster``.
A cluster converges to one view with one active instance per child, cleans up after a
kill, and runs on a ``processhub_fresh_etcd`` as well as on the session's etcd.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub import ChildSpec, Hub
from hub.etcd.store import EtcdConfig, Store
from hub.operate.localetcd import LocalEtcd
from hub.testing import ClusterFactory, EtcdServer, HubCluster
from integration import state_workers, workers
from strategies.migration import ColdSwap, HotSwap

pytestmark = pytest.mark.usefixtures("processhub_no_leaked_tasks", "processhub_no_leaked_leases")

SLEEPER = f"{workers.__name__}:Sleeper"
COUNTER = f"{state_workers.__name__}:Counter"
ECHO = f"{state_workers.__name__}:Echo"
TTL = 3  # the kit's default lease TTL


@pytest.fixture(autouse=True)
def _fresh_workers() -> Iterator[None]:
    workers.reset()
    state_workers.reset()
    yield
    workers.reset()
    state_workers.reset()


async def start(hub: Hub, ids: list[str], target: str = SLEEPER) -> None:
    result = await hub.start_children(
        [ChildSpec(id=c, start=target) for c in ids], wait=True, timeout=15
    )
    assert result.ok, result.errors


def busiest(where: dict[str, str]) -> str:
    """The node running the most children."""
    return max(set(where.values()), key=list(where.values()).count)


async def test_session_etcd_answers(processhub_etcd: EtcdServer, processhub_prefix: str) -> None:
    assert processhub_etcd.source in {"env", "docker", "local"}
    assert processhub_etcd.endpoint == processhub_etcd.endpoints[0]
    key = f"{processhub_prefix}/probe".encode()
    async with Store(EtcdConfig(endpoints=list(processhub_etcd.endpoints))) as store:
        await store.put(key, b"ok")
        kv = await store.get(key)
        assert kv is not None and kv.value == b"ok"
        await store.delete(key)


async def test_three_nodes_place_children_and_say_where(
    processhub_cluster: ClusterFactory,
) -> None:
    cluster = await processhub_cluster(3)
    assert cluster.node_ids == ["node-1", "node-2", "node-3"]
    ids = [f"p-{i}" for i in range(12)]
    await start(cluster.node("node-1"), ids)
    where = await cluster.wait_for_placement(ids)
    assert set(where) == set(ids)
    assert len(set(where.values())) > 1  # spread over the ring
    for hub in cluster.nodes.values():
        assert {c: hub.get_pid(c).node_id for c in ids} == where  # type: ignore[union-attr]
        assert set(hub.process_list("local")) == {c for c, n in where.items() if n == hub.node_id}
    await cluster.wait_settled()
    with pytest.raises(TimeoutError, match="nowhere: no owner"):
        await cluster.wait_for_placement(["nowhere"], timeout=0.2)
    with pytest.raises(KeyError, match="node-9"):
        cluster.node("node-9")


async def test_clusters_of_one_test_are_independent(processhub_cluster: ClusterFactory) -> None:
    first = await processhub_cluster(["a"])
    second = await processhub_cluster(["a"], hub_id="other")
    assert first.prefix != second.prefix
    await start(first.node("a"), ["only-in-first"])
    await first.wait_for_placement(["only-in-first"])
    assert second.node("a").get_pid("only-in-first") is None


async def test_kill_leaves_the_lease_to_expire(processhub_cluster: ClusterFactory) -> None:
    cluster = await processhub_cluster(3)
    ids = [f"k-{i}" for i in range(12)]
    await start(cluster.node("node-1"), ids)
    before = await cluster.wait_for_placement(ids)
    victim = busiest(before)
    survivor = next(n for n in cluster.node_ids if n != victim)

    killed_at = time.monotonic()
    await cluster.kill(victim)
    assert victim not in cluster.node_ids
    # Not revoked: the others still see the dead node until etcd expires its lease.
    assert victim in cluster.node(survivor).nodes()
    after = await cluster.wait_for_placement(ids, timeout=TTL + 10)
    recovered = time.monotonic() - killed_at

    assert victim not in after.values()
    assert all(after[c] == before[c] for c in ids if before[c] != victim)  # others untouched
    # etcd expires the lease 2/3 TTL to 1 TTL after the last keep-alive; a revoke would
    # have freed the children at once.
    assert recovered >= TTL / 3, f"children came back after {recovered:.2f}s: lease revoked?"
    moved = [c for c in ids if before[c] == victim]
    assert all(len(workers.tokens(c)) == 2 for c in moved)
    assert all(workers.tokens(c)[1] > workers.tokens(c)[0] for c in moved)
    await cluster.wait_settled(timeout=TTL + 10)
    assert victim not in cluster.node(survivor).nodes()


async def test_restart_is_a_new_incarnation_of_the_same_node(
    processhub_cluster: ClusterFactory,
) -> None:
    cluster = await processhub_cluster(3)
    ids = [f"r-{i}" for i in range(12)]
    await start(cluster.node("node-1"), ids)
    before = await cluster.wait_for_placement(ids)
    victim = busiest(before)
    old_incarnation = cluster.node(victim).incarnation

    hub = await cluster.restart(victim)  # kills the live node first
    assert hub is cluster.node(victim)
    assert hub.incarnation not in (0, old_incarnation)
    await cluster.wait_settled(timeout=TTL + 10)
    # Same node ids, same ring: every child is back where it was, on the new incarnation.
    assert await cluster.wait_for_placement(ids, timeout=TTL + 10) == before
    assert set(hub.process_list("local")) == {c for c in ids if before[c] == victim}


async def test_graceful_stop_drains_with_handover(processhub_cluster: ClusterFactory) -> None:
    """test_migration.py's graceful-stop scenario on the kit: state moves, never twice."""
    cluster = await processhub_cluster(3, migration=HotSwap())
    ids = [f"g-{i}" for i in range(12)]
    await start(cluster.node("node-1"), ids, COUNTER)
    before = await cluster.wait_for_placement(ids)
    for i, child_id in enumerate(ids):
        state_workers.INSTANCES[child_id].count = 1000 + i
    victim = busiest(before)

    await cluster.stop(victim)
    # Drained before it left: its children run elsewhere well within one lease TTL.
    after = await cluster.wait_for_placement(ids, timeout=TTL)
    assert victim not in after.values()
    assert [state_workers.INSTANCES[c].count for c in ids] == [1000 + i for i in range(12)]
    moved = [c for c in ids if before[c] == victim]
    assert all(state_workers.INSTANCES[c].ctx.state_source == "handover" for c in moved)  # type: ignore[union-attr]
    assert not state_workers.overlaps()


async def test_kill_keeps_checkpoints_but_not_unsaved_state(
    processhub_cluster: ClusterFactory,
) -> None:
    """test_migration.py's cold-swap crash scenario, with a kill that leaves the lease."""
    cluster = await processhub_cluster(["a", "b"], migration=ColdSwap())
    ids = [f"c-{i}" for i in range(12)]
    await start(cluster.node("a"), ids, COUNTER)
    before = await cluster.wait_for_placement(ids)
    for i, child_id in enumerate(ids):
        instance = state_workers.INSTANCES[child_id]
        instance.count = 1000 + i
        if i % 2 == 0:
            assert instance.ctx is not None
            await instance.ctx.checkpoint({"count": instance.count})
    victim = busiest(before)

    await cluster.kill(victim)
    after = await cluster.wait_for_placement(ids, timeout=TTL + 10)
    for i, child_id in enumerate(ids):
        instance = state_workers.INSTANCES[child_id]
        if before[child_id] != victim:
            assert instance.count == 1000 + i and after[child_id] == before[child_id]
        elif i % 2 == 0:
            assert instance.count == 1000 + i
            assert instance.ctx is not None and instance.ctx.state_source == "checkpoint"
        else:
            assert instance.count == 0
    assert not state_workers.overlaps()


async def test_a_call_follows_its_child_off_a_killed_node(
    processhub_cluster: ClusterFactory,
) -> None:
    """test_calls.py's failover scenario on the kit: a call in flight across the crash
    gets its reply from the new owner, within the caller's timeout."""
    cluster: HubCluster = await processhub_cluster(3)
    ids = [f"e-{i}" for i in range(9)]
    await start(cluster.node("node-1"), ids, ECHO)
    before = await cluster.wait_for_placement(ids)
    victim = busiest(before)
    caller = cluster.node(next(n for n in cluster.node_ids if n != victim))
    child_id = next(c for c in ids if before[c] == victim)
    assert (await caller.call(child_id, "ping"))["node"] == victim

    await cluster.kill(victim)
    reply = await caller.call(child_id, "ping", timeout=TTL + 10)
    assert reply["node"] != victim
    assert reply["node"] == (await cluster.wait_for_placement([child_id]))[child_id]


async def test_a_cluster_converges_to_one_view_with_one_instance_each(
    processhub_etcd: EtcdServer, processhub_prefix: str
) -> None:
    async with HubCluster(processhub_etcd.endpoints, prefix=processhub_prefix, nodes=3) as cluster:
        assert cluster.node_ids == ["node-1", "node-2", "node-3"]
        ids = [f"v-{i}" for i in range(9)]
        await start(cluster["node-2"], ids)
        where = await cluster.wait_converged()
        assert set(where) == set(ids)
        assert cluster.views() == {node_id: where for node_id in cluster.node_ids}
        assert cluster.instances() == {c: [n] for c, n in where.items()}
        cluster.check_at_most_one_instance()
        victim = busiest(where)
        lease = cluster.node(victim).incarnation
        await cluster.kill(victim)
        after = await cluster.wait_converged(timeout=TTL + 10)
        assert victim not in after.values() and set(after) == set(ids)
    # close() revoked the lease the killed node left behind (the rest revoked their own).
    async with Store(EtcdConfig(endpoints=list(processhub_etcd.endpoints))) as store:
        assert await store.lease_ttl(lease) == -1


async def test_a_cluster_on_a_fresh_etcd_of_its_own(
    processhub_fresh_etcd: LocalEtcd, processhub_cluster: ClusterFactory
) -> None:
    """The kit composes: processhub_cluster(endpoints=...) on processhub_fresh_etcd."""
    cluster = await processhub_cluster(2, endpoints=[processhub_fresh_etcd.endpoint])
    assert cluster.endpoints == [processhub_fresh_etcd.endpoint]
    await start(cluster.node("node-1"), ["fresh"])
    assert set(await cluster.wait_for_placement(["fresh"])) == {"fresh"}


ROOT = Path(__file__).resolve().parents[2]


def test_the_guide_shows_the_example_as_it_is() -> None:
    example = (ROOT / "examples" / "hub_cluster.py").read_text()
    assert example in (ROOT / "docs" / "testing.md").read_text()


async def test_the_documented_example_runs(
    processhub_etcd: EtcdServer, processhub_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/testing.md's examples/hub_cluster.py works."""
    root = str(ROOT)
    sys.path.insert(0, root)
    try:
        from examples.hub_cluster import main
    finally:
        sys.path.remove(root)
    await main(processhub_etcd.endpoints, prefix=processhub_prefix)
    assert "crashed:" in capsys.readouterr().out
