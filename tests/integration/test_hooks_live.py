"""Hooks on a live cluster (real etcd, in-process hubs): they fire where documented, alter
hooks change what starts, and a failing hook never breaks the node."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from support.wait import wait_until

from hub import ChildSpec, Hub
from hub.core.hooks import (
    ChildrenMigrated,
    ChildrenRegistered,
    ChildrenUnregistered,
    ChildStarted,
    ChildStarting,
    ChildStopped,
    HookHandler,
    HookName,
    NodeJoined,
    NodeLeft,
)
from integration import state_workers
from strategies.migration import HotSwap

COUNTER = f"{state_workers.__name__}:Counter"


class Log:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def __call__(self, payload: Any) -> None:
        self.events.append(payload)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def hub(endpoint: str, prefix: str, name: str, **options: Any) -> Hub:
    return Hub("k", endpoints=[endpoint], node_id=name, lease_ttl=3, prefix=prefix, **options)


async def test_lifecycle_and_registry_hooks_fire_where_documented(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    state_workers.reset()
    log_a, log_b = Log(), Log()
    spec_hooks = {name: [HookHandler("log", log_a)] for name in HookName if not name.is_alter}
    async with hub(etcd_endpoint, hub_prefix, "a", hooks=spec_hooks, migration=HotSwap()) as a:
        async with hub(etcd_endpoint, hub_prefix, "b", migration=HotSwap()) as b:
            for name in HookName:
                if not name.is_alter:
                    b.hooks.register(name, HookHandler("log", log_b))  # at runtime
            await wait_until(lambda: any(e.node_id == "b" for e in log_a.of(NodeJoined)), 5)
            ids = [f"k-{i}" for i in range(20)]
            result = await a.start_children(
                [ChildSpec(id=c, start=COUNTER) for c in ids], wait=True, timeout=10
            )
            assert result.ok
            on_a = {h.child_id for h in result.started if h.node_id == "a"}
            # Registry hooks fire on every node; child hooks only where the child runs.
            for log in (log_a, log_b):
                await wait_until(
                    lambda log=log: (
                        {h.child_id for e in log.of(ChildrenRegistered) for h in e.handles}
                        >= set(ids)
                    ),
                    5,
                )
            await wait_until(lambda: {e.child_id for e in log_a.of(ChildStarted)} == on_a, 5)
            assert all(e.node_id == "a" for e in log_a.of(ChildStarted))
            assert {e.child_id for e in log_b.of(ChildStarted)} == set(ids) - on_a
            await a.stop_children(ids[:5], wait=True)
            await wait_until(
                lambda: (
                    {c for e in log_b.of(ChildrenUnregistered) for c, _ in e.children}
                    >= set(ids[:5])
                ),
                5,
            )
            stopped_here = {c for c in ids[:5] if c in on_a}

            def reasons() -> dict[str, str]:
                return {e.child_id: e.reason for e in log_a.of(ChildStopped)}

            await wait_until(lambda: stopped_here <= set(reasons()), 5)
            assert all(reasons()[c] == "stopped" for c in stopped_here)
        # b left gracefully: a saw it leave, with b's children, and the moves.
        await wait_until(lambda: bool(log_a.of(NodeLeft)), 5)
        (left,) = log_a.of(NodeLeft)
        assert left.node_id == "b" and left.graceful is True
        migrated = [e for e in log_b.of(ChildrenMigrated)]
        assert {c for e in migrated for c in e.targets} == set(ids[5:]) - on_a
        assert all(target == "a" for e in migrated for target in e.targets.values())


async def test_alter_hook_starts_a_migrated_child_with_other_args(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    """ProcessHub issue #14: a migrated copy can start with different args."""
    state_workers.reset()

    def switch_mode(payload: ChildStarting) -> ChildStarting:
        if not payload.migrated:
            return payload
        return replace(payload, spec=replace(payload.spec, args={"mode": "after-move"}))

    alter = {HookName.CHILD_DATA_ALTER: [HookHandler("mode", switch_mode)]}
    async with hub(etcd_endpoint, hub_prefix, "a", migration=HotSwap(), hooks=alter) as a:
        result = await a.start_children(
            [ChildSpec(id=f"m-{i}", start=COUNTER, args={"mode": "first"}) for i in range(12)],
            wait=True,
            timeout=10,
        )
        assert result.ok
        async with hub(etcd_endpoint, hub_prefix, "b", migration=HotSwap(), hooks=alter) as b:
            await wait_until(
                lambda: any(h.node_id == "b" and h.is_running for h in b.registry.handles.values()),
                10,
            )
            moved = [c for c, h in b.registry.handles.items() if h.node_id == "b"]
            await wait_until(lambda: all(state_workers.INSTANCES[c].active for c in moved), 5)
            for child_id in moved:
                ctx = state_workers.INSTANCES[child_id].ctx
                assert ctx is not None and ctx.args == {"mode": "after-move"}
            stay = [c for c, h in a.registry.handles.items() if h.node_id == "a"]
            assert all(state_workers.INSTANCES[c].ctx.args == {"mode": "first"} for c in stay)  # type: ignore[union-attr]
            # the stored spec is unchanged: the alteration is local to this start
            assert a.child_lookup(moved[0])[0].args == {"mode": "first"}  # type: ignore[index]


async def test_a_raising_or_slow_hook_never_breaks_the_node(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    def boom(payload: Any) -> None:
        raise RuntimeError("hook bug")

    async def slow(payload: Any) -> None:
        await asyncio.Event().wait()

    def broken_alter(payload: ChildStarting) -> ChildStarting:
        raise RuntimeError("alter bug")

    bad = {
        HookName.CHILD_STARTED: [HookHandler("boom", boom, priority=10), HookHandler("slow", slow)],
        HookName.CHILDREN_REGISTERED: [HookHandler("boom", boom)],
        HookName.CHILD_DATA_ALTER: [HookHandler("alter", broken_alter)],
    }
    async with hub(etcd_endpoint, hub_prefix, "a", hooks=bad, hook_timeout=0.2) as a:
        result = await a.start_children(
            [ChildSpec(id=f"b-{i}", start=COUNTER) for i in range(10)], wait=True, timeout=10
        )
        assert result.ok and len(result.started) == 10
        await wait_until(lambda: a.hooks.stats.timed_out >= 1, 5)
        assert a.hooks.stats.failed >= 10
        assert (await a.stop_children([f"b-{i}" for i in range(10)], wait=True)).ok


async def test_node_left_lists_a_crashed_nodes_children_with_no_other_hook(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    """The lease expiry deletes the node and its owner keys in one revision: node_left must
    still name the children, though nothing asked for children_unregistered."""
    state_workers.reset()
    log = Log()
    hooks = {HookName.NODE_LEFT: [HookHandler("log", log)]}
    async with hub(etcd_endpoint, hub_prefix, "a", hooks=hooks) as a:
        b = hub(etcd_endpoint, hub_prefix, "b")
        await b.start()
        try:
            ids = [f"crash-{i}" for i in range(12)]
            result = await a.start_children(
                [ChildSpec(id=c, start=COUNTER) for c in ids], wait=True, timeout=10
            )
            assert result.ok, result.errors
            on_b = {h.child_id for h in result.started if h.node_id == "b"}
            assert on_b  # the ring gives b some of them
        finally:
            await b.abort()  # a crash: the lease is left to expire
        await wait_until(lambda: bool(log.of(NodeLeft)), 10, message="node_left did not fire")
        (left,) = log.of(NodeLeft)
        assert left.node_id == "b" and left.graceful is False
        assert set(left.child_ids) == on_b
