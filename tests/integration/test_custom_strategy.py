"""User-written strategies (examples/custom_*.py), one per family, drive a real cluster;
docs/strategies.md shows each file as it is."""

from __future__ import annotations

import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from support.wait import wait_until

from hub import ChildSpec, Hub, PartitionedError
from integration import state_workers
from strategies import (
    ConsistentHashing,
    DistributionStrategy,
    MigrationStrategy,
    PartitionStrategy,
    PlacementInput,
    RedundancyStrategy,
)

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from examples.custom_migration import EnvironmentHandover  # noqa: E402
from examples.custom_partition import Witness  # noqa: E402
from examples.custom_redundancy import GrowingStandbys  # noqa: E402
from examples.custom_strategy import Rendezvous  # noqa: E402

COUNTER = f"{state_workers.__name__}:Counter"
EXAMPLES = ["custom_strategy", "custom_redundancy", "custom_migration", "custom_partition"]


@pytest.mark.parametrize("example", EXAMPLES)
def test_the_guide_shows_the_example_as_it_is(example: str) -> None:
    guide = (ROOT / "docs" / "strategies.md").read_text()
    source = (ROOT / "examples" / f"{example}.py").read_text()
    assert f"```python\n{source}```\n" in guide


def test_every_example_is_in_the_guide() -> None:
    assert sorted(p.stem for p in (ROOT / "examples").glob("custom_*.py")) == sorted(EXAMPLES)


def make(endpoint: str, prefix: str, name: str, **options: Any) -> Hub:
    return Hub("cx", endpoints=[endpoint], node_id=name, lease_ttl=3, prefix=prefix, **options)


async def test_a_custom_distribution_strategy_places_every_child(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    strategy = Rendezvous()
    assert isinstance(strategy, DistributionStrategy)
    async with AsyncExitStack() as stack:
        hubs = [
            await stack.enter_async_context(
                Hub(
                    "cs",
                    endpoints=[etcd_endpoint],
                    node_id=name,
                    lease_ttl=3,
                    prefix=hub_prefix,
                    distribution=strategy,
                )
            )
            for name in ("n1", "n2", "n3")
        ]
        ids = [f"r-{i}" for i in range(60)]
        result = await hubs[0].start_children(
            [ChildSpec(id=c, start=f"{state_workers.__name__}:Counter") for c in ids],
            wait=True,
            timeout=10,
        )
        assert result.ok
        expected = strategy.placer(PlacementInput({"n1": 1, "n2": 1, "n3": 1}))
        assert {h.child_id: h.node_id for h in result.started} == {
            c: expected.owner(c) for c in ids
        }
        assert len({h.node_id for h in result.started}) == 3
        await hubs[2].stop()
        after = strategy.placer(PlacementInput({"n1": 1, "n2": 1}))
        await wait_until(
            lambda: all(
                (h := hubs[0].get_pid(c)) is not None
                and h.is_running
                and h.node_id == after.owner(c)
                for c in ids
            ),
            10,
        )


async def test_a_custom_redundancy_strategy_follows_the_cluster_size(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    state_workers.reset()
    strategy = GrowingStandbys()
    assert isinstance(strategy, RedundancyStrategy)
    async with AsyncExitStack() as stack:
        hubs = {
            name: await stack.enter_async_context(
                make(etcd_endpoint, hub_prefix, name, redundancy=strategy)
            )
            for name in ("n1", "n2", "n3")
        }
        ids = [f"s-{i}" for i in range(10)]
        result = await hubs["n1"].start_children(
            [ChildSpec(id=c, start=COUNTER) for c in ids], wait=True, timeout=10
        )
        assert result.ok, result.errors

        def instances(live: list[str]) -> bool:
            ring = ConsistentHashing().ring(dict.fromkeys(live, 1))
            count = strategy.count(len(live))
            for child_id in ids:
                expected = ring.owners(child_id, count)
                if [h.node_id for h in hubs[live[0]].get_pids(child_id)] != list(expected):
                    return False
                workers = [state_workers.BY_NODE.get((child_id, n)) for n in expected]
                if any(w is None or not w.active for w in workers):
                    return False
                roles = [w.ctx.role for w in workers]  # type: ignore[union-attr]
                if roles != ["active"] + ["passive"] * (count - 1):
                    return False
            return True

        # Three members: one standby each. Two: none, the standbys stop.
        await wait_until(lambda: instances(["n1", "n2", "n3"]), 15, message="no standbys")
        await hubs["n3"].stop()
        await wait_until(lambda: instances(["n1", "n2"]), 15, message="standbys kept")


async def test_a_custom_migration_configuration_hands_state_over(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    state_workers.reset()
    strategy = EnvironmentHandover.read({"HANDOVER_STATE_TIMEOUT": "2", "HANDOVER_TTL": "30"})
    assert isinstance(strategy, MigrationStrategy)
    async with AsyncExitStack() as stack:
        first = await stack.enter_async_context(
            make(etcd_endpoint, hub_prefix, "n1", migration=strategy)
        )
        ids = [f"m-{i}" for i in range(6)]
        result = await first.start_children(
            [ChildSpec(id=c, start=COUNTER) for c in ids], wait=True, timeout=10
        )
        assert result.ok, result.errors
        for number, child_id in enumerate(ids):
            state_workers.INSTANCES[child_id].count = 100 + number
        second = await stack.enter_async_context(
            make(etcd_endpoint, hub_prefix, "n2", migration=strategy)
        )
        await first.stop()  # every child moves to n2, its count with it

        def moved_with_state() -> bool:
            for number, child_id in enumerate(ids):
                worker = state_workers.BY_NODE.get((child_id, "n2"))
                if worker is None or not worker.active or worker.count != 100 + number:
                    return False
            return True

        await wait_until(moved_with_state, 15, message="state did not travel")
        assert {h.node_id for c in ids if (h := second.get_pid(c)) is not None} == {"n2"}
        assert state_workers.overlaps() == []


async def test_a_custom_partition_strategy_stops_what_cannot_see_the_witness(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    state_workers.reset()
    strategy = Witness("w")
    assert isinstance(strategy, PartitionStrategy)
    async with AsyncExitStack() as stack:
        a = make(etcd_endpoint, hub_prefix, "a", partition=strategy)
        witness = make(etcd_endpoint, hub_prefix, "w", partition=strategy)
        await witness.start()
        await stack.enter_async_context(a)
        await wait_until(lambda: not a.is_partitioned(), 10, message="a never saw the witness")
        ids = [f"p-{i}" for i in range(10)]
        result = await a.start_children(
            [ChildSpec(id=c, start=COUNTER) for c in ids], wait=True, timeout=10
        )
        assert result.ok, result.errors
        await witness.stop()
        await wait_until(a.is_partitioned, 10, message="the witness left, a kept running")
        await wait_until(lambda: not a.registry.handles, 10, message="children kept running")
        with pytest.raises(PartitionedError, match="witness 'w' is not a member"):
            await a.start_children([ChildSpec(id="late", start=COUNTER)])
        await stack.enter_async_context(make(etcd_endpoint, hub_prefix, "w", partition=strategy))
        await wait_until(
            lambda: all((h := a.get_pid(c)) is not None and h.is_running for c in ids), 15
        )
