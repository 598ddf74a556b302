"""Load-aware placement on real etcd: nodes publish capacity and load; BoundedLoad honours
capacity and every node agrees on the placement."""

from __future__ import annotations

import math
from contextlib import AsyncExitStack

from support.wait import wait_until

from hub import ChildSpec, Hub
from integration import state_workers
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
