"""The readiness handshake (hub._tasks.start) and named components (ComponentGroup)."""

from __future__ import annotations

import asyncio

import pytest

from hub._tasks import ComponentGroup, TaskStatus, start
from hub.errors import HubFailed


async def test_start_returns_the_value_the_component_signals() -> None:
    stop = asyncio.Event()

    async def component(status: TaskStatus[str]) -> None:
        status.started("ready at 7")
        await stop.wait()

    async with asyncio.TaskGroup() as tg:
        assert await start(tg, component, name="c") == "ready at 7"
        stop.set()


async def test_start_waits_for_readiness_not_for_the_task() -> None:
    steps: list[str] = []
    gate = asyncio.Event()

    async def component(status: TaskStatus[None]) -> None:
        steps.append("preparing")
        await gate.wait()
        status.started(None)
        steps.append("running")

    async with asyncio.TaskGroup() as tg:
        tg.create_task(_set_after_yield(gate))
        await start(tg, component, name="c")
        steps.append("caller resumed")
    assert steps[0] == "preparing" and "caller resumed" in steps


async def _set_after_yield(event: asyncio.Event) -> None:
    await asyncio.sleep(0)
    event.set()


async def test_a_crash_before_readiness_comes_out_of_start_not_the_group() -> None:
    sibling_done = asyncio.Event()

    async def crashing(status: TaskStatus[None]) -> None:
        raise ValueError("bad config")

    async def sibling() -> None:
        await asyncio.sleep(0)
        sibling_done.set()

    async with asyncio.TaskGroup() as tg:  # exits normally: the group was not aborted
        tg.create_task(sibling())
        with pytest.raises(ValueError, match="bad config"):
            await start(tg, crashing, name="c")
    assert sibling_done.is_set()


async def test_returning_without_signalling_is_a_runtime_error() -> None:
    async def lazy(status: TaskStatus[None]) -> None:
        return None

    async with asyncio.TaskGroup() as tg:
        with pytest.raises(RuntimeError, match="without signalling readiness"):
            await start(tg, lazy, name="lazy")


async def test_a_crash_after_readiness_belongs_to_the_group() -> None:
    crash = asyncio.Event()

    async def component(status: TaskStatus[None]) -> None:
        status.started(None)
        await crash.wait()
        raise ValueError("late")

    with pytest.raises(ExceptionGroup) as info:
        async with asyncio.TaskGroup() as tg:
            await start(tg, component, name="c")
            crash.set()
    assert info.group_contains(ValueError, match="late")


async def test_cancelling_the_waiting_caller_cancels_the_component() -> None:
    entered = asyncio.Event()
    cleaned_up = asyncio.Event()

    async def slow(status: TaskStatus[None]) -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        finally:
            cleaned_up.set()

    async with asyncio.TaskGroup() as tg:
        waiter = tg.create_task(start(tg, slow, name="slow"))
        await entered.wait()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
    assert cleaned_up.is_set()


# -- ComponentGroup ------------------------------------------------------------------------


async def test_a_component_failing_after_start_is_recorded_not_propagated() -> None:
    crash = asyncio.Event()
    other_cancelled = asyncio.Event()

    async def failing(status: TaskStatus[None]) -> None:
        status.started(None)
        await crash.wait()
        raise KeyError("lost")

    async def other() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            other_cancelled.set()

    async with asyncio.TaskGroup() as tg:
        group = ComponentGroup(tg, "owner")
        group.spawn("other", other)
        await group.start("failing", failing)
        crash.set()
        await group.failed.wait()
        assert not other_cancelled.is_set()  # the owner decides the order, not the group
        await group.cancel("other")
    assert other_cancelled.is_set()
    assert isinstance(group.failure, HubFailed)
    assert group.failure.component == "failing"
    assert isinstance(group.failure.__cause__, KeyError)


async def test_a_spawned_component_failure_is_recorded_and_reported() -> None:
    reported: list[str] = []

    async def broken() -> None:
        raise OSError("disk")

    async with asyncio.TaskGroup() as tg:
        group = ComponentGroup(tg, "owner", on_failure=lambda: reported.append("!"))
        group.spawn("broken", broken)
        await group.failed.wait()
    assert reported == ["!"]
    assert group.failure is not None and group.failure.component == "broken"


async def test_start_when_set_waits_for_the_event_and_unwraps_early_errors() -> None:
    ready = asyncio.Event()
    stop = asyncio.Event()

    async def run() -> None:
        ready.set()
        await stop.wait()

    async def fail_early() -> None:
        raise ConnectionError("etcd down")

    async with asyncio.TaskGroup() as tg:
        group = ComponentGroup(tg, "owner")
        await group.start_when_set("informer", run, ready)
        assert "informer" in group
        with pytest.raises(ConnectionError, match="etcd down"):  # not an ExceptionGroup
            await group.start_when_set("other", fail_early, asyncio.Event())
        stop.set()
        await group.cancel_all()
    assert group.failure is None
