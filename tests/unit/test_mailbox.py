"""Mailboxes: ordered delivery, concurrency limit, backpressure, failure isolation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from support.wait import wait_until

from hub.errors import ChildNotRunning, HandlerError, MailboxFull, NotCallable
from hub.messaging.mailbox import Mailbox


class Recorder:
    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.running = 0
        self.peak = 0

    async def handle_call(self, message: Any) -> Any:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await self.gate.wait()
            if message == "boom":
                raise KeyError("nope")
            self.seen.append(message)
            return message * 2
        finally:
            self.running -= 1

    async def handle_cast(self, message: Any) -> None:
        self.seen.append(message)


class Parallel(Recorder):
    max_concurrency = 3


async def run_box(box: Mailbox) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(box.run())  # test-owned; cancelled below


async def test_messages_are_handled_one_at_a_time_in_order() -> None:
    worker = Recorder()
    box = Mailbox("c", "n", worker)
    task = await run_box(box)
    try:
        for i in range(5):
            box.cast(i)
        assert await box.call(10, timeout=1) == 20
        assert worker.seen == [0, 1, 2, 3, 4, 10]
        assert worker.peak == 1
    finally:
        task.cancel()


async def test_concurrency_limit_is_honoured() -> None:
    worker = Parallel()
    worker.gate.clear()
    box = Mailbox("c", "n", worker)
    task = await run_box(box)
    try:
        calls = [asyncio.ensure_future(box.call(i, timeout=2)) for i in range(6)]
        await wait_until(lambda: worker.running >= 3, 2)
        assert worker.running == 3
        worker.gate.set()
        assert sorted(await asyncio.gather(*calls)) == [0, 2, 4, 6, 8, 10]
        assert worker.peak == 3
    finally:
        task.cancel()


async def test_full_mailbox_refuses_casts_and_makes_calls_wait() -> None:
    worker = Recorder()
    worker.gate.clear()
    box = Mailbox("c", "n", worker, capacity=2)
    task = await run_box(box)
    try:
        first = asyncio.ensure_future(box.call("a", timeout=2))
        await wait_until(lambda: worker.running >= 1, 2)
        box.cast("x")
        box.cast("y")
        with pytest.raises(MailboxFull):
            box.cast("z")
        with pytest.raises(TimeoutError):
            await box.call("late", timeout=0.1)  # waits for room, then gives up
        worker.gate.set()
        assert await first == "aa"
    finally:
        task.cancel()


async def test_handler_errors_are_typed_and_isolated() -> None:
    box = Mailbox("c", "n", Recorder())
    task = await run_box(box)
    try:
        with pytest.raises(HandlerError) as info:
            await box.call("boom", timeout=1)
        assert info.value.remote_type == "KeyError"
        assert await box.call(3, timeout=1) == 6  # the mailbox keeps working
    finally:
        task.cancel()


async def test_closing_fails_what_was_not_delivered() -> None:
    worker = Recorder()
    worker.gate.clear()
    box = Mailbox("c", "n", worker)
    task = await run_box(box)
    first = asyncio.ensure_future(box.call(1, timeout=2))
    queued = asyncio.ensure_future(box.call(2, timeout=2))
    await wait_until(lambda: worker.running >= 1, 2)
    box.close()
    task.cancel()
    for fut in (first, queued):
        with pytest.raises(ChildNotRunning):
            await fut
    with pytest.raises(ChildNotRunning):
        box.cast(3)


def test_workers_without_handlers_are_not_callable() -> None:
    class Silent:
        pass

    assert not Mailbox.accepts(Silent())
    box = Mailbox("c", "n", Silent())
    with pytest.raises(NotCallable):
        box.cast(1)
