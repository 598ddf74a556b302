"""Lifecycle: a component failing while its owner runs stops it and is a typed error.

The owner here is a stand-in with the same ``async with`` as Hub and HubClient
(hub.api.facade); tests/integration/test_hub_failed.py runs the real ones on etcd.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

import pytest

from hub._tasks import ComponentGroup
from hub.api.lifecycle import Lifecycle
from hub.errors import HubFailed


class Owner:
    """Two components, ``worker`` (fails when ``crash`` is set) and ``idle``."""

    def __init__(self, *, fail_at_start: bool = False) -> None:
        self.lifecycle = Lifecycle("owner", startup_timeout=5.0)
        self.crash = asyncio.Event()
        self.steps: list[str] = []
        self.fail_at_start = fail_at_start

    async def up(self, group: ComponentGroup) -> None:
        async def worker() -> None:
            await self.crash.wait()
            raise RuntimeError("component bug")

        async def idle() -> None:
            try:
                await asyncio.Event().wait()
            finally:
                self.steps.append("idle stopped")

        group.spawn("worker", worker)
        group.spawn("idle", idle)
        await asyncio.sleep(0)  # let both enter their bodies
        if self.fail_at_start:
            raise OSError("cannot bind")
        self.steps.append("up")

    async def down(self, group: ComponentGroup) -> None:
        self.steps.append("down")
        await group.cancel("idle")
        self.steps.append("down done")

    async def __aenter__(self) -> Owner:
        await self.lifecycle.start(self.up, self.down)
        self.lifecycle.enter_body()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.lifecycle.exit_body(exc, self.lifecycle.stop)


async def test_a_failure_interrupts_the_body_with_hub_failed_after_an_ordered_stop() -> None:
    owner = Owner()
    reached_end = False
    with pytest.raises(HubFailed) as info:
        async with owner:
            owner.crash.set()
            await asyncio.Event().wait()  # interrupted here
            reached_end = True
    assert not reached_end
    assert info.value.component == "worker"
    assert isinstance(info.value.__cause__, RuntimeError)
    assert owner.steps == ["up", "down", "idle stopped", "down done"]
    assert owner.lifecycle.failed.is_set() and owner.lifecycle.failure is info.value
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # nothing left pending on the caller


async def test_without_async_with_nothing_is_cancelled_and_stop_reports_once() -> None:
    owner = Owner()
    await owner.lifecycle.start(owner.up, owner.down)
    owner.crash.set()
    await owner.lifecycle.failed.wait()  # this task is not cancelled by the failure
    with pytest.raises(HubFailed, match="worker"):
        await owner.lifecycle.stop()
    await owner.lifecycle.stop()  # reported once
    assert owner.steps[-1] == "down done"


async def test_a_startup_failure_comes_out_of_start_after_down() -> None:
    owner = Owner(fail_at_start=True)
    with pytest.raises(OSError, match="cannot bind"):
        await owner.lifecycle.start(owner.up, owner.down)
    assert owner.steps == ["down", "idle stopped", "down done"]
    assert not owner.lifecycle.is_started
    await owner.lifecycle.stop()  # nothing more to report


async def test_the_bodys_own_error_wins_when_it_was_not_interrupted() -> None:
    owner = Owner()
    with pytest.raises(ZeroDivisionError):
        async with owner:
            raise ZeroDivisionError
    assert owner.steps[-1] == "down done"
    assert owner.lifecycle.failure is None


async def test_an_outer_cancellation_stays_a_cancellation() -> None:
    owner = Owner()
    entered = asyncio.Event()

    async def body() -> None:
        async with owner:
            entered.set()
            await asyncio.Event().wait()

    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(body())
        await entered.wait()
        task.cancel()
    assert task.cancelled()
    assert owner.steps[-1] == "down done"
