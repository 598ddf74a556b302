"""Load-aware placement on real etcd: nodes publish capacity and load; BoundedLoad honours
capacity and every node agrees on the placement."""

from __future__ import annotations

import math
from contextlib import AsyncExitStack

from support.wait import wait_until

from hub import ChildSpec, Hub, HubClient
from integration import state_workers
from strategies import ConsistentHashing, PlacementInput
from strategies.bounded_load import BoundedLoad

COUNTER = f"{state_workers.__name__}:Counter"


async def test_bounded_load_honours_published_capacity(etcd_endpoint: str, hub_prefix: str) -> None:
    strategy = BoundedLoad(c=1.1)
    capacity = {"a": 100, "b": 100, "small": 25}
    async with AsyncExitStack() as stack:
        hubs = {
            name: await stack.enter_async_context(
                Hub(
                    "la",
                    endpoints=[etcd_endpoint],
                    node_id=name,
                    lease_ttl=3,
                    prefix=hub_prefix,
                    distribution=strategy,
                    capacity=cap,
                    load_interval=0.2,
                )
            )
            for name, cap in capacity.items()
        }
        hub = hubs["a"]
        ids = [f"l-{i}" for i in range(60)]
        result = await hub.start_children(
            [ChildSpec(id=c, start=COUNTER) for c in ids], wait=True, timeout=15
        )
        assert result.ok, result.errors

        def settled() -> bool:
            return all(
                (h := other.get_pid(c)) is not None
                and h.is_running
                and all(h.node_id == x.placement(c) for x in hubs.values())
                for other in hubs.values()
                for c in ids
            )

        total = sum(v / 100 for v in capacity.values())
        bounds = {
            node: math.ceil(1.1 * len(ids) * (cap / 100) / total) for node, cap in capacity.items()
        }

        def count() -> dict[str, int]:
            return {n: sum(1 for c in ids if hub.get_pid(c).node_id == n) for n in capacity}  # type: ignore[union-attr]

        # Children first land on the plain ring; the bounded placement (rebuilt at most
        # every 0.5 s while children arrive) then moves the excess off the small node.
        await wait_until(
            lambda: settled() and all(count()[n] <= bounds[n] for n in capacity),
            15,
            message="placement did not converge within the capacity bounds",
        )
        counts = count()
        assert counts["small"] < counts["a"] and counts["small"] < counts["b"]
        # Nodes publish their load; every registry sees it.
        await wait_until(
            lambda: all(hub.registry.nodes[n].info.load == counts[n] for n in capacity), 5
        )
        assert {n: hub.registry.nodes[n].info.capacity for n in capacity} == capacity


async def test_a_client_places_like_the_nodes_when_children_come_and_go(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    """Under a ChildSetAware strategy placement depends on the set of children, not only on
    the members: a HubClient (``processhub inspect``) must follow the set as the nodes do,
    not keep the placement of the members' last change."""
    strategy = BoundedLoad(c=1.0)
    options = {"endpoints": [etcd_endpoint], "prefix": hub_prefix, "distribution": strategy}
    async with AsyncExitStack() as stack:
        hubs = [
            await stack.enter_async_context(
                # No load publishing: no node record changes once they joined, so only the
                # child set can move the bounded placement.
                Hub("lc", node_id=name, lease_ttl=3, load_interval=600, **options)  # type: ignore[arg-type]
            )
            for name in ("a", "b", "c")
        ]
        client = await stack.enter_async_context(HubClient("lc", **options))  # type: ignore[arg-type]
        await wait_until(lambda: len(client.nodes()) == 3, 10)
        ids = [f"lc-{i}" for i in range(40)]
        result = await client.start_children(
            [ChildSpec(id=c, start=COUNTER) for c in ids], wait=True, timeout=15
        )
        assert result.ok, result.errors

        members = {"a": 1, "b": 1, "c": 1}
        ring = ConsistentHashing().ring(members)

        def bounded(live: list[str]) -> dict[str, str | None]:
            placer = BoundedLoad(c=1.0).placer(PlacementInput(members, sorted(live)))
            return {c: placer.owner(c) for c in live}

        def agreed(live: list[str]) -> bool:
            expected = bounded(live)
            return all(
                (h := hubs[0].get_pid(c)) is not None
                and h.is_running
                and h.node_id == hubs[0].placement(c) == client.placement(c) == expected[c]
                for c in live
            )

        # These ids are placed off their ring owner by the bound: the set matters.
        assert any(bounded(ids)[c] != ring.owner(c) for c in ids)
        await wait_until(lambda: agreed(ids), 15, message="client and nodes disagree")
        stopped = await client.stop_children(ids[:25], wait=True, timeout=10)
        assert not stopped.errors
        assert any(bounded(ids[25:])[c] != bounded(ids)[c] for c in ids[25:])
        await wait_until(
            lambda: agreed(ids[25:]), 15, message="client kept the old child set's placement"
        )
