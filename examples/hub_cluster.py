"""Three in-process nodes on one etcd: place children, crash a node, watch them come back.

Run it with ``python examples/hub_cluster.py`` (needs ``processhub[testing]``: it starts a
throwaway etcd, or uses ``$ETCD_ENDPOINTS``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from hub import ChildSpec
from hub.testing import HubCluster, etcd_for_tests

WORKER = "hub.operate.demo:Counter"  # any "module:attr" with an async run(ctx)


async def main(endpoints: Sequence[str], prefix: str = "/hub-cluster-example") -> None:
    async with HubCluster(endpoints, prefix=prefix, nodes=3) as cluster:
        ids = [f"room-{i}" for i in range(6)]
        result = await cluster.node("node-1").start_children(
            [ChildSpec(id=room, start=WORKER) for room in ids], wait=True, timeout=10
        )
        assert result.ok, result.errors
        before = await cluster.wait_converged()  # {"room-0": "node-2", ...}, on every node
        print("placed:", before)

        victim = before["room-0"]
        await cluster.kill(victim)  # a crash: no drain, its lease has to expire
        after = await cluster.wait_converged(timeout=cluster.lease_ttl + 10)
        print(f"after {victim} crashed:", after)
        assert victim not in after.values()
        # Every wait checked this on each look; check it once more ourselves.
        cluster.check_at_most_one_instance()
        assert cluster.views() == {node_id: after for node_id in cluster.node_ids}


if __name__ == "__main__":
    with etcd_for_tests() as etcd:
        asyncio.run(main(etcd.endpoints))
