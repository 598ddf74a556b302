"""ProcessHub's integration scenarios (PROCESSHUB.md 8a) that the other files do not cover,
ported to an etcd-backed cluster of in-process hubs."""

from __future__ import annotations

from contextlib import AsyncExitStack

from support.wait import wait_until

from hub import ChildSpec, Hub
from hub.core.hooks import ChildRestarted, HookHandler, HookName
from integration import state_workers

COUNTER = f"{state_workers.__name__}:Counter"
CRASH_ONCE = f"{state_workers.__name__}:CrashOnce"


def make(endpoint: str, prefix: str, name: str, **options: object) -> Hub:
    return Hub("sc", endpoints=[endpoint], node_id=name, lease_ttl=3, prefix=prefix, **options)


async def test_1000_children_start_and_stop_with_every_registry_in_sync(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    """8a scenarios 1-2: start 1000 with a tag, every node's registry equal (metadata
    included); stop them all, every registry empty."""
    async with AsyncExitStack() as stack:
        hubs = [
            await stack.enter_async_context(make(etcd_endpoint, hub_prefix, n))
            for n in ("a", "b", "c")
        ]
        ids = [f"s-{i}" for i in range(1000)]
        result = await hubs[0].start_children(
            [ChildSpec(id=c, start=COUNTER) for c in ids],
            wait=True,
            timeout=30,
            metadata={"tag": "bulk"},
        )
        assert result.ok, result.errors[:3]

        def dump(hub: Hub) -> dict[str, tuple[str, dict[str, object]]]:
            return {
                cid: (next(iter(nodes)), meta)
                for cid, (_spec, nodes, meta) in hub.registry_dump().items()
                if nodes
            }

        await wait_until(lambda: all(len(dump(h)) == 1000 for h in hubs), 15)
        reference = dump(hubs[0])
        assert all(dump(h) == reference for h in hubs[1:])
        assert all(meta == {"tag": "bulk"} for _, meta in reference.values())
        assert set(hubs[2].tag_query("bulk")) == set(ids)
        stopped = await hubs[1].stop_children(ids, wait=True, timeout=30)
        assert stopped.ok and len(stopped.stopped) == 1000
        await wait_until(lambda: all(not h.registry_dump() for h in hubs), 10)


async def test_crashed_children_restart_in_place_and_report_it(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    """8a scenario 7: every child crashes once; each restarts on its node (same fencing
    token, restarts == 1) and the restart hook fires once per child."""
    state_workers.CrashOnce.crashed.clear()
    restarted: list[ChildRestarted] = []
    hooks = {HookName.CHILD_RESTARTED: [HookHandler("r", restarted.append)]}
    async with AsyncExitStack() as stack:
        hubs = [
            await stack.enter_async_context(make(etcd_endpoint, hub_prefix, n, hooks=hooks))
            for n in ("a", "b")
        ]
        ids = [f"x-{i}" for i in range(100)]
        result = await hubs[0].start_children(
            [ChildSpec(id=c, start=CRASH_ONCE) for c in ids], wait=True, timeout=15
        )
        assert result.ok
        first = {h.child_id: (h.node_id, h.fencing_token) for h in result.started}
        await wait_until(lambda: len(restarted) == 100, 15)
        assert sorted(e.child_id for e in restarted) == sorted(ids)

        def restarted_in_place() -> bool:
            return all(
                (h := hubs[1].get_pid(c)) is not None
                and h.is_running
                and h.restarts == 1
                and (h.node_id, h.fencing_token) == first[c]
                for c in ids
            )

        await wait_until(restarted_in_place, 10)
