"""call/cast across nodes on real etcd (issue 4): routing, ordering, typed errors, stale
handles, and calls that follow a child while it moves."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

import pytest
from support.wait import wait_until

from hub import ChildSpec, Hub
from hub.client import HubClient
from hub.errors import (
    CallError,
    ChildNotFound,
    HandlerError,
    NotCallable,
    NotSerializable,
    PayloadTooLarge,
    RpcAuthError,
    StaleHandle,
)
from hub.messaging.rpc import RpcConfig
from integration import state_workers
from strategies.migration import HotSwap

ECHO = f"{state_workers.__name__}:Echo"
COUNTER = f"{state_workers.__name__}:Counter"


def make(endpoint: str, prefix: str, name: str, **options: Any) -> Hub:
    return Hub("ca", endpoints=[endpoint], node_id=name, lease_ttl=3, prefix=prefix, **options)


async def start(hub: Hub, ids: list[str], target: str = ECHO) -> None:
    result = await hub.start_children(
        [ChildSpec(id=c, start=target) for c in ids], wait=True, timeout=10
    )
    assert result.ok, result.errors


async def test_calls_reach_local_and_remote_children_in_order(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    state_workers.reset()
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(make(etcd_endpoint, hub_prefix, "a"))
        await stack.enter_async_context(make(etcd_endpoint, hub_prefix, "b"))
        ids = [f"e-{i}" for i in range(10)]
        await start(a, ids)
        nodes = {a.get_pid(c).node_id for c in ids}  # type: ignore[union-attr]
        assert nodes == {"a", "b"}  # both local and remote calls below
        for child_id in ids:
            reply = await a.call(child_id, {"hello": child_id})
            assert reply["echo"] == {"hello": child_id}
            assert reply["node"] == a.get_pid(child_id).node_id  # type: ignore[union-attr]
            for _ in range(5):
                await a.cast(child_id, 2)
            assert await a.call(child_id, "count") == 10  # casts were handled first, in order
        # a client that hosts nothing calls through RPC too
        async with HubClient("ca", endpoints=[etcd_endpoint], prefix=hub_prefix) as client:
            assert (await client.call(ids[0], [1, 2]))["echo"] == [1, 2]


async def test_typed_errors(etcd_endpoint: str, hub_prefix: str) -> None:
    state_workers.reset()
    rpc = RpcConfig(max_message_bytes=64 * 1024)
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(make(etcd_endpoint, hub_prefix, "a", rpc=rpc))
        await stack.enter_async_context(make(etcd_endpoint, hub_prefix, "b", rpc=rpc))
        await start(a, [f"t-{i}" for i in range(6)])
        await start(a, ["plain"], COUNTER)
        remote = next(c for c in (f"t-{i}" for i in range(6)) if a.get_pid(c).node_id == "b")  # type: ignore[union-attr]
        with pytest.raises(HandlerError) as info:
            await a.call(remote, "boom")
        assert info.value.remote_type == "ValueError" and "exploded" in info.value.remote_message
        assert info.value.child_id == remote and info.value.node_id == "b"
        with pytest.raises(NotCallable):
            await a.call("plain", "hi")
        with pytest.raises(ChildNotFound):
            await a.call("nobody", "hi")
        with pytest.raises(NotSerializable):
            await a.call(remote, {1, 2})
        with pytest.raises(PayloadTooLarge):
            await a.call(remote, "x" * (100 * 1024))
        assert (await a.call(remote, "still fine"))["echo"] == "still fine"


async def test_a_stale_handle_never_reaches_the_new_instance(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    state_workers.reset()
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(
            make(etcd_endpoint, hub_prefix, "a", migration=HotSwap())
        )
        await stack.enter_async_context(make(etcd_endpoint, hub_prefix, "b", migration=HotSwap()))
        await start(a, ["s"])
        old = a.get_pid("s")
        assert old is not None
        assert (await a.call(old, "x"))["token"] == old.fencing_token
        target = "b" if old.node_id == "a" else "a"
        new = await a.move("s", target)
        assert new is not None and new.fencing_token > old.fencing_token
        with pytest.raises(StaleHandle):
            await a.call(old, "x")
        assert (await a.call("s", "x"))["token"] == new.fencing_token


async def test_calls_follow_a_child_through_moves_and_failover(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    """Every call gets a reply or a typed error, none hangs past its timeout."""
    state_workers.reset()
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(
            make(etcd_endpoint, hub_prefix, "a", migration=HotSwap())
        )
        b = make(etcd_endpoint, hub_prefix, "b", migration=HotSwap())
        await b.start()
        ids = [f"m-{i}" for i in range(20)]
        await start(a, ids)
        outcomes: dict[str, int] = {"ok": 0, "error": 0}
        stop = asyncio.Event()

        async def caller(child_id: str) -> None:
            while not stop.is_set():
                loop = asyncio.get_running_loop()
                began = loop.time()
                try:
                    await a.call(child_id, "ping", timeout=3)
                    outcomes["ok"] += 1
                except CallError:
                    outcomes["error"] += 1
                assert loop.time() - began < 3.5, "a call outlived its timeout"

        async with asyncio.TaskGroup() as tg:
            for child_id in ids:
                tg.create_task(caller(child_id))
            await wait_until(lambda: outcomes["ok"] > 100, 10)
            c = await stack.enter_async_context(
                make(etcd_endpoint, hub_prefix, "c", migration=HotSwap())
            )  # rebalance: hot-swap moves while calls are in flight
            await wait_until(lambda: outcomes["ok"] > 400, 10)
            await b.stop(drain=False)  # failover without hand-over
            before = outcomes["ok"]
            await wait_until(lambda: outcomes["ok"] > before + 300, 15)
            stop.set()
        assert outcomes["ok"] > 700
        del c


async def test_a_token_protects_node_rpc(etcd_endpoint: str, hub_prefix: str) -> None:
    state_workers.reset()
    secured = RpcConfig(token="s3cret")
    async with make(etcd_endpoint, hub_prefix, "a", rpc=secured) as a:
        await start(a, ["p"])
        async with HubClient(
            "ca", endpoints=[etcd_endpoint], prefix=hub_prefix, rpc=RpcConfig(token="wrong")
        ) as intruder:
            with pytest.raises(RpcAuthError):
                await intruder.call("p", "x", timeout=2)
        async with HubClient(
            "ca", endpoints=[etcd_endpoint], prefix=hub_prefix, rpc=secured
        ) as friend:
            assert (await friend.call("p", "x"))["echo"] == "x"


async def test_calls_go_to_the_active_replica_or_to_all(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    from strategies.redundancy import Replication

    state_workers.reset()
    redundancy = Replication(2, mode="active_passive")
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(
            make(etcd_endpoint, hub_prefix, "a", redundancy=redundancy)
        )
        await stack.enter_async_context(make(etcd_endpoint, hub_prefix, "b", redundancy=redundancy))
        await start(a, ["r"])
        await wait_until(lambda: len(a.get_pids("r")) == 2, 10)
        active = a.active_replica("r")
        assert active is not None
        assert (await a.call("r", "x"))["node"] == active.node_id
        replies = await a.call("r", "x", all_replicas=True)
        assert set(replies) == {"a", "b"}
        assert {r["node"] for r in replies.values()} == {"a", "b"}
