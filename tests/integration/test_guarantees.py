"""The guarantees of DESIGN.md, each proven against real etcd with real node processes.

Node processes run ``processhub node`` with the recorder worker (tests/support/recorder.py),
which logs every activation and deactivation with its fencing token. The checker
(tests/support/checker.py) fails on any overlap of two active instances of one child and
on any child left without exactly one instance once the cluster is stable.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from support.checker import load_intervals, state_violations, violations
from support.cluster import Cluster
from support.proxy import TcpProxy
from support.wait import wait_until

from hub import ChildSpec
from hub.client import HubClient
from hub.operate.localetcd import LocalEtcd
from strategies import ConsistentHashing

pytestmark = pytest.mark.slow

TTL = 3
TARGET = "support.recorder:Recorded"


def specs(ids: list[str]) -> list[ChildSpec]:
    return [ChildSpec(id=child_id, start=TARGET) for child_id in ids]


@pytest.fixture
def cluster(etcd_endpoint: str, hub_prefix: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(
        hub_id="g", endpoint=etcd_endpoint, prefix=hub_prefix, lease_ttl=TTL, record_dir=tmp_path
    )
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
async def client(etcd_endpoint: str, hub_prefix: str) -> AsyncIterator[HubClient]:
    async with HubClient(
        "g", endpoints=[etcd_endpoint], prefix=hub_prefix, validate_targets=False
    ) as c:
        yield c


def running_on(client: HubClient, child_ids: set[str], live: set[str]) -> bool:
    """Every child has a running handle on a live node."""
    handles = client.registry.handles
    return all(
        (h := handles.get(c)) is not None and h.is_running and h.node_id in live for c in child_ids
    )


def check(cluster: Cluster, expect: set[str]) -> None:
    intervals = load_intervals(cluster.record_dir, cluster.killed_at)
    problems = violations(intervals, expect_running=expect, live_pids=cluster.live_pids())
    assert not problems, "\n".join(problems[:20])


async def wait_checked(
    cluster: Cluster, client: HubClient, expect: set[str], timeout: float
) -> None:
    live = {n.node_id for n in cluster.live()}
    await wait_until(
        lambda: running_on(client, expect, live),
        timeout,
        message=f"children not all running on {sorted(live)}",
    )

    def recorded_ok() -> bool:
        intervals = load_intervals(cluster.record_dir, cluster.killed_at)
        return not violations(intervals, expect_running=expect, live_pids=cluster.live_pids())

    # The registry can run a hair ahead of the workers' own start records.
    try:
        await wait_until(recorded_ok, 10, interval=0.1, message="records not settled")
    finally:
        check(cluster, expect)  # on timeout, fail with the checker's own findings


async def test_kill9_moves_children_within_ttl_without_overlap(
    cluster: Cluster, client: HubClient
) -> None:
    for _ in range(3):
        cluster.add()
    ids = [f"k-{i}" for i in range(60)]
    result = await client.start_children(specs(ids), wait=True, timeout=20)
    assert result.ok, result.errors
    victim = max(cluster.nodes, key=lambda n: sum(1 for h in result.started if h.node_id == n))
    moved = {h.child_id for h in result.started if h.node_id == victim}
    assert moved
    cluster.kill(victim)
    killed = time.monotonic()
    await wait_checked(cluster, client, set(ids), timeout=TTL + 10)
    # Every child of the dead node runs elsewhere about one TTL after the crash.
    assert time.monotonic() - killed < TTL + 5
    for child_id in moved:
        assert client.get_pid(child_id).node_id != victim  # type: ignore[union-attr]


async def test_churn_never_two_instances(cluster: Cluster, client: HubClient) -> None:
    """Nodes started, stopped and kill -9'd while children are started and stopped."""
    rng = random.Random(20261128)
    for _ in range(3):
        cluster.add()
    expected: set[str] = set()
    next_id = 0
    for step in range(14):
        live = [n.node_id for n in cluster.live()]
        action = rng.choice(["start", "start", "stop", "add", "terminate", "kill"])
        if action == "start":
            ids = [f"c-{next_id + i}" for i in range(rng.randint(5, 25))]
            next_id += len(ids)
            result = await client.start_children(specs(ids), timeout=10)
            assert not result.errors, result.errors
            expected.update(ids)
        elif action == "stop" and expected:
            ids = rng.sample(sorted(expected), k=min(len(expected), rng.randint(1, 10)))
            result = await client.stop_children(ids)
            assert not result.errors, result.errors
            expected.difference_update(ids)
        elif action == "add" or len(live) <= 2:
            cluster.add()
        elif action == "terminate":
            assert cluster.terminate(rng.choice(live)) == 0
        else:
            cluster.kill(rng.choice(live))
        # Churn: no waiting for stability between steps; a short pause sets the pace.
        await asyncio.sleep(rng.uniform(0.05, 0.5))
        print(f"step {step}: {action}; live={len(cluster.live())} expected={len(expected)}")
    await wait_checked(cluster, client, expected, timeout=TTL + 20)


async def test_partitioned_node_fences_itself_before_others_take_over(
    cluster: Cluster, client: HubClient, etcd_endpoint: str
) -> None:
    """A node cut off from etcd (silently) stops its children before its lease expires."""
    async with TcpProxy(etcd_endpoint) as proxy:
        # Node start-up blocks; run it off the loop so the proxy keeps forwarding.
        cut = await asyncio.to_thread(cluster.add, "cut", endpoint=proxy.endpoint)
        await asyncio.to_thread(cluster.add, "a")
        await asyncio.to_thread(cluster.add, "b")
        ids = [f"p-{i}" for i in range(45)]
        result = await client.start_children(specs(ids), wait=True, timeout=20)
        assert result.ok, result.errors
        on_cut = {h.child_id for h in result.started if h.node_id == "cut"}
        assert on_cut
        proxy.blackhole()
        await wait_until(
            lambda: running_on(client, set(ids), {"a", "b"}),
            TTL + 10,
            message="survivors did not take over",
        )
        # The partitioned node is alive the whole time: only its self-fencing prevents two
        # instances (the checker counts its still-running workers too).
        assert cut.alive()
        await wait_checked(cluster, client, set(ids), timeout=10)
        proxy.heal()
        await proxy.reset()  # drop the frozen connections so the node reconnects at once
        await wait_checked(cluster, client, set(ids), timeout=TTL + 20)


async def test_etcd_outage_longer_than_ttl_fences_all_and_recovers(
    own_etcd: LocalEtcd, hub_prefix: str, tmp_path: Path
) -> None:
    cluster = Cluster(
        hub_id="o",
        endpoint=own_etcd.endpoint,
        prefix=hub_prefix,
        lease_ttl=TTL,
        record_dir=tmp_path,
    )
    try:
        cluster.add()
        cluster.add()
        ids = [f"o-{i}" for i in range(20)]
        async with HubClient(
            "o", endpoints=[own_etcd.endpoint], prefix=hub_prefix, validate_targets=False
        ) as client:
            result = await client.start_children(specs(ids), wait=True, timeout=20)
            assert result.ok, result.errors
        own_etcd.stop()
        stopped = time.monotonic()

        def all_fenced() -> bool:
            intervals = load_intervals(tmp_path, cluster.killed_at)
            return all(i.end is not None for items in intervals.values() for i in items)

        await wait_until(all_fenced, TTL + 5, message="workers kept running without etcd")
        intervals = load_intervals(tmp_path, cluster.killed_at)
        latest_stop = max(i.end for items in intervals.values() for i in items)  # type: ignore[type-var]
        # Self-fencing happens before the lease could have expired in etcd.
        assert latest_stop - stopped < TTL
        # The scenario is an outage *longer than the TTL*: keep etcd down until then. This
        # sleep sets the length of the fault, it does not synchronise anything.
        await asyncio.sleep(max(0.0, stopped + TTL + 1 - time.monotonic()))
        own_etcd.start()
        async with HubClient(
            "o", endpoints=[own_etcd.endpoint], prefix=hub_prefix, validate_targets=False
        ) as client:
            await wait_checked(cluster, client, set(ids), timeout=TTL * 3 + 20)
    finally:
        cluster.close()


async def test_full_restart_brings_back_every_dynamic_child(
    cluster: Cluster, client: HubClient
) -> None:
    first = [cluster.add() for _ in range(3)]
    ids = [f"d-{i}" for i in range(40)]
    result = await client.start_children(specs(ids), wait=True, timeout=20)
    assert result.ok, result.errors
    first[0].terminate()
    cluster.kill(first[1].node_id)
    first[2].terminate()
    assert not cluster.live()
    await wait_until(lambda: not client.registry.handles, TTL + 10, message="owners did not expire")
    assert set(client.registry.specs) == set(ids)  # desired state survived
    for _ in range(3):
        cluster.add()
    await wait_checked(cluster, client, set(ids), timeout=TTL + 20)


async def test_join_moves_only_ring_moves_and_placement_matches_ring(
    cluster: Cluster, client: HubClient
) -> None:
    for i in (1, 2, 3):
        cluster.add(f"n{i}")
    ids = [f"b-{i}" for i in range(300)]
    result = await client.start_children(specs(ids), wait=True, timeout=30)
    assert result.ok, result.errors
    before = {h.child_id: h.node_id for h in result.started}
    ring3 = ConsistentHashing().ring({"n1": 1, "n2": 1, "n3": 1})
    assert before == {c: ring3.owner(c) for c in ids}
    cluster.add("n4")
    ring4 = ConsistentHashing().ring({"n1": 1, "n2": 1, "n3": 1, "n4": 1})
    expected = {c: ring4.owner(c) for c in ids}

    def placed() -> bool:
        handles = client.registry.handles
        return all(
            (h := handles.get(c)) is not None and h.is_running and h.node_id == n
            for c, n in expected.items()
        )

    await wait_until(placed, 15, message="placement did not converge to the ring")
    moved = [c for c in ids if expected[c] != before[c]]
    assert all(expected[c] == "n4" for c in moved)  # only moves onto the new node
    assert 0.15 < len(moved) / len(ids) < 0.35
    check(cluster, set(ids))


async def test_hot_swap_churn_keeps_state_and_never_overlaps(
    etcd_endpoint: str, hub_prefix: str, tmp_path: Path
) -> None:
    """Handover under joins, graceful leaves and kill -9: state moves with children (and
    survives crashes through checkpoints), and never two instances run at once."""
    cluster = Cluster(
        hub_id="hs",
        endpoint=etcd_endpoint,
        prefix=hub_prefix,
        lease_ttl=TTL,
        record_dir=tmp_path,
        extra_args=["--migration", "hot"],
    )
    try:
        for _ in range(3):
            cluster.add()
        ids = [f"s-{i}" for i in range(30)]
        async with HubClient(
            "hs", endpoints=[etcd_endpoint], prefix=hub_prefix, validate_targets=False
        ) as client:
            result = await client.start_children(
                [ChildSpec(id=c, start="support.recorder:Stateful") for c in ids],
                wait=True,
                timeout=20,
            )
            assert result.ok, result.errors
            rng = random.Random(7)
            for action in ["add", "terminate", "add", "kill", "add", "terminate"]:
                await asyncio.sleep(rng.uniform(0.3, 0.8))  # let state accumulate (fault pacing)
                live = [n.node_id for n in cluster.live()]
                if action == "add":
                    await asyncio.to_thread(cluster.add)
                elif action == "terminate":
                    assert await asyncio.to_thread(cluster.terminate, rng.choice(live)) == 0
                else:
                    cluster.kill(rng.choice(live))
            await wait_checked(cluster, client, set(ids), timeout=TTL + 20)
        problems = state_violations(tmp_path)
        assert not problems, "\n".join(problems[:20])
        logs = [path.read_text() for path in sorted(tmp_path.glob("*.log"))]  # noqa: ASYNC240
        handed = [line for text in logs for line in text.splitlines() if "handover" in line]
        assert handed, "no child was ever handed over"
    finally:
        cluster.close()


async def test_replica_is_promoted_after_kill9_of_the_active_one(
    etcd_endpoint: str, hub_prefix: str, tmp_path: Path
) -> None:
    """Active/passive replication: kill -9 the node running most active replicas; passives
    are promoted one TTL later, and never two active instances at once."""
    cluster = Cluster(
        hub_id="rp",
        endpoint=etcd_endpoint,
        prefix=hub_prefix,
        lease_ttl=TTL,
        record_dir=tmp_path,
        extra_args=["--replicas", "2", "--replica-mode", "active_passive"],
    )
    try:
        for _ in range(3):
            cluster.add()
        ids = [f"r-{i}" for i in range(30)]
        async with HubClient(
            "rp", endpoints=[etcd_endpoint], prefix=hub_prefix, validate_targets=False
        ) as client:
            result = await client.start_children(specs(ids), wait=True, timeout=20)
            assert result.ok, result.errors
            await wait_until(lambda: all(len(client.get_pids(c)) == 2 for c in ids), 10)
            victim = max(
                cluster.nodes, key=lambda n: sum(1 for h in result.started if h.node_id == n)
            )
            cluster.kill(victim)
            await wait_checked(cluster, client, set(ids), timeout=TTL + 15)
            await wait_until(
                lambda: all(
                    len(client.get_pids(c)) == 2
                    and all(h.node_id != victim for h in client.get_pids(c))
                    for c in ids
                ),
                15,
                message="replicas not restored on the survivors",
            )
    finally:
        cluster.close()
