"""Partition tolerance on real etcd: quorum gates and availability mode."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from support.checker import load_intervals, violations
from support.cluster import Cluster
from support.proxy import TcpProxy
from support.wait import wait_until

from hub import ChildSpec, ConfigError, Hub, PartitionedError
from hub.client import HubClient
from hub.core.hooks import HookHandler, HookName, PartitionChanged
from hub.etcd.store import EtcdConfig, Store
from integration import state_workers
from strategies.partition import MajorityQuorum, StaticQuorum

COUNTER = f"{state_workers.__name__}:Counter"


def make(endpoint: str, prefix: str, name: str, strategy: object, **options: object) -> Hub:
    return Hub(
        "q",
        endpoints=[endpoint],
        node_id=name,
        lease_ttl=3,
        prefix=prefix,
        partition=strategy,
        **options,
    )


@pytest.mark.parametrize(
    "strategy", [StaticQuorum(3), MajorityQuorum()], ids=["static", "majority"]
)
async def test_losing_the_quorum_stops_everything_and_refuses_starts(
    etcd_endpoint: str, hub_prefix: str, strategy: object
) -> None:
    state_workers.reset()
    seen: list[PartitionChanged] = []
    hooks = {HookName.PARTITION_CHANGED: [HookHandler("seen", seen.append)]}
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(
            make(etcd_endpoint, hub_prefix, "a", strategy, hooks=hooks)
        )
        b = await stack.enter_async_context(make(etcd_endpoint, hub_prefix, "b", strategy))
        c = make(etcd_endpoint, hub_prefix, "c", strategy)
        await c.start()
        ids = [f"q-{i}" for i in range(15)]
        result = await a.start_children(
            [ChildSpec(id=x, start=COUNTER) for x in ids], wait=True, timeout=10
        )
        assert result.ok and not a.is_partitioned()
        await c.stop()  # 2 of 3 left: below StaticQuorum(3) and below majority of 3 (2)...
        if isinstance(strategy, MajorityQuorum):
            # ...a majority of 3 is 2, so the cluster keeps running; lose one more.
            assert not a.is_partitioned()
            await b.stop()
        await wait_until(a.is_partitioned, 10, message="quorum loss not detected")
        await wait_until(lambda: not a.registry.handles, 10, message="children kept running")
        assert set(a.registry_dump()) == set(ids)  # desired state kept
        with pytest.raises(PartitionedError):
            await a.start_children([ChildSpec(id="new", start=COUNTER)])
        await wait_until(lambda: any(e.partitioned for e in seen), 5)
        # Nodes come back: the quorum clears and everything runs again.
        for name in ("b", "c") if isinstance(strategy, MajorityQuorum) else ("c",):
            await stack.enter_async_context(make(etcd_endpoint, hub_prefix, name, strategy))
        await wait_until(lambda: not a.is_partitioned(), 10)
        await wait_until(
            lambda: all((h := a.get_pid(x)) is not None and h.is_running for x in ids), 10
        )
        assert not seen[-1].partitioned


@pytest.fixture
def cluster(etcd_endpoint: str, hub_prefix: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(
        hub_id="av",
        endpoint=etcd_endpoint,
        prefix=hub_prefix,
        lease_ttl=3,
        record_dir=tmp_path,
        extra_args=["--partition", "availability"],
    )
    try:
        yield c
    finally:
        c.close()


@pytest.mark.slow  # node processes
async def test_availability_mode_keeps_running_when_cut_off_and_converges_after(
    cluster: Cluster, etcd_endpoint: str, hub_prefix: str
) -> None:
    async with TcpProxy(etcd_endpoint) as proxy:
        cut = await asyncio.to_thread(cluster.add, "cut", endpoint=proxy.endpoint)
        await asyncio.to_thread(cluster.add, "a")
        ids = [f"av-{i}" for i in range(20)]
        async with HubClient(
            "av", endpoints=[etcd_endpoint], prefix=hub_prefix, validate_targets=False
        ) as client:
            result = await client.start_children(
                [ChildSpec(id=x, start="support.recorder:Recorded") for x in ids],
                wait=True,
                timeout=20,
            )
            assert result.ok, result.errors
            on_cut = {h.child_id for h in result.started if h.node_id == "cut"}
            assert on_cut
            proxy.blackhole()
            # The other node takes the children over...
            await wait_until(
                lambda: all(
                    (h := client.get_pid(x)) is not None and h.node_id == "a" and h.is_running
                    for x in ids
                ),
                15,
            )
            # ...while the cut-off node keeps its copies running (the documented trade-off).
            intervals = load_intervals(cluster.record_dir, cluster.killed_at)
            still = {
                x for x in on_cut for i in intervals.get(x, []) if i.node == "cut" and i.end is None
            }
            assert still == on_cut and cut.alive()
            proxy.heal()
            await proxy.reset()

            def one_each() -> bool:
                found = load_intervals(cluster.record_dir, cluster.killed_at)
                problems = violations(found, expect_running=set(ids), live_pids=cluster.live_pids())
                return not [p for p in problems if "overlap" not in p]

            # After the heal the duplicates are dropped: exactly one instance per child.
            await wait_until(one_each, 20, interval=0.1, message="did not converge")


async def test_majority_reset_after_intentional_downsizing(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    state_workers.reset()
    strategy = MajorityQuorum()
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(make(etcd_endpoint, hub_prefix, "a", strategy))
        others = [make(etcd_endpoint, hub_prefix, n, strategy) for n in ("b", "c")]
        for hub in others:
            await hub.start()
        await a.start_children([ChildSpec(id="m", start=COUNTER)], wait=True, timeout=10)
        for hub in others:
            await hub.stop()  # scale 3 -> 1 on purpose
        await wait_until(a.is_partitioned, 10)
        a.reset_cluster_size(1)
        await wait_until(lambda: not a.is_partitioned(), 5, message="reset did not clear")
        await wait_until(lambda: (h := a.get_pid("m")) is not None and h.is_running, 10)
        with pytest.raises(ConfigError, match=r"partition=StaticQuorum: .* no cluster size"):
            make(etcd_endpoint, hub_prefix, "z", StaticQuorum(1)).reset_cluster_size(1)


@pytest.mark.slow  # node processes
async def test_availability_mode_through_an_etcd_outage_converges_to_one_instance(
    own_etcd: object, hub_prefix: str, tmp_path: Path
) -> None:
    etcd = own_etcd  # a private etcd we can stop
    cluster = Cluster(
        hub_id="ao",
        endpoint=etcd.endpoint,  # type: ignore[attr-defined]
        prefix=hub_prefix,
        lease_ttl=3,
        record_dir=tmp_path,
        extra_args=["--partition", "availability"],
    )
    try:
        cluster.add()
        cluster.add()
        ids = [f"o-{i}" for i in range(20)]
        async with HubClient(
            "ao",
            endpoints=[etcd.endpoint],
            prefix=hub_prefix,
            validate_targets=False,  # type: ignore[attr-defined]
        ) as client:
            result = await client.start_children(
                [ChildSpec(id=x, start="support.recorder:Recorded") for x in ids],
                wait=True,
                timeout=20,
            )
            assert result.ok
        etcd.stop()  # type: ignore[attr-defined]
        # The outage outlasts the lease TTL (a fault length, not a synchronisation).
        await asyncio.sleep(3 + 1.5)
        intervals = load_intervals(cluster.record_dir, cluster.killed_at)
        assert all(i.end is None for items in intervals.values() for i in items), (
            "availability mode stopped children during the outage"
        )
        etcd.start()  # type: ignore[attr-defined]

        def one_each() -> bool:
            found = load_intervals(cluster.record_dir, cluster.killed_at)
            return not violations(found, expect_running=set(ids), live_pids=cluster.live_pids())

        await wait_until(one_each, 30, interval=0.1, message="did not converge after etcd returned")
    finally:
        cluster.close()


async def _gate_record(etcd_endpoint: str, hub: Hub) -> dict[str, object] | None:
    async with Store(EtcdConfig(endpoints=(etcd_endpoint,))) as store:
        kv = await store.get(hub.keys.quorum(hub.node_id))
    return None if kv is None else json.loads(kv.value)


async def test_quorum_memory_is_versioned_kept_through_a_crash_and_deleted_on_leave(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    # A Deployment's pods get fresh names: keys they leave behind would pile up forever.
    options = {"endpoints": [etcd_endpoint], "prefix": hub_prefix, "lease_ttl": 3}
    crashed = Hub("gates", node_id="g1", partition=MajorityQuorum(), **options)
    async with crashed:
        await wait_until(lambda: _gate_record(etcd_endpoint, crashed), 10)
        await crashed.abort()
    record = await _gate_record(etcd_endpoint, crashed)
    assert record is not None and record["schema"] == 1 and record["max_seen"] == 1

    async with Hub("gates", node_id="g1", partition=MajorityQuorum(), **options) as back:
        # resumed from the crashed incarnation: Hub.start returns once the gate loaded it
        assert back.quorum.state.max_seen == 1
    assert await _gate_record(etcd_endpoint, back) is None  # left on purpose: forgotten

    async with Hub("gates", node_id="g2", **options) as strict:  # Strict: nothing to keep
        await wait_until(lambda: strict.quorum.state.max_seen == 1, 10)
        assert await _gate_record(etcd_endpoint, strict) is None
