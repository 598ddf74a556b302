"""Informer on the in-memory FakeKV: list then watch, resume at the last revision without
applying anything twice, relist when that revision was compacted — without etcd."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import pytest
from support.wait import wait_until

from hub.etcd.informer import Informer
from hub.etcd.kv import Event, KeyValue
from hub.etcd.ops import op_put
from hub.testing import FakeKV

pytestmark = pytest.mark.timeout(30)

TIMEOUT = 5.0


class Cache:
    """A sink that keeps the state and records every call."""

    def __init__(self) -> None:
        self.state: dict[bytes, bytes] = {}
        self.resets: list[int] = []  # revision of each listing
        self.applied: list[tuple[bytes, int]] = []  # (key, mod_revision) of each event
        self.revisions: list[int] = []

    def reset(self, kvs: Sequence[KeyValue], revision: int) -> None:
        self.state = {kv.key: kv.value for kv in kvs}
        self.resets.append(revision)

    def apply(self, events: Sequence[Event], revision: int) -> None:
        for ev in events:
            self.applied.append((ev.key, ev.mod_revision))
            if ev.is_delete:
                self.state.pop(ev.key, None)
            else:
                self.state[ev.key] = ev.value
        self.revisions.append(revision)


@asynccontextmanager
async def informing(kv: FakeKV, cache: Cache, prefix: bytes = b"/i/") -> AsyncIterator[Informer]:
    informer = Informer(kv, prefix, cache, progress_interval=0.05, stall_timeout=2.0)
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(informer.run())
        try:
            await asyncio.wait_for(informer.synced.wait(), TIMEOUT)
            yield informer
        finally:
            task.cancel()


async def caught_up(kv: FakeKV, cache: Cache, informer: Informer) -> None:
    """Wait until the cache holds what the store holds under the prefix."""
    expected = {k: v for k, v in kv.dump().items() if k.startswith(informer.prefix)}
    await wait_until(lambda: cache.state == expected, TIMEOUT, message=f"{cache.state}")


async def test_it_lists_then_watches_from_the_listing() -> None:
    kv, cache = FakeKV(), Cache()
    await kv.put(b"/i/a", b"1")
    await kv.put(b"/other", b"not mine")
    listed_at = kv.revision
    async with informing(kv, cache) as informer:
        assert cache.resets == [listed_at] and cache.state == {b"/i/a": b"1"}
        await kv.put(b"/i/b", b"2")
        await kv.txn((), [op_put(b"/i/a", b"3"), op_put(b"/i/c", b"4")])
        await kv.delete(b"/i/b")
        await caught_up(kv, cache, informer)
        assert informer.revision == kv.revision
    assert cache.revisions == [listed_at + 1, listed_at + 2, listed_at + 3]
    assert cache.resets == [listed_at]  # one listing: everything else came by watch


async def test_a_broken_stream_resumes_without_applying_anything_twice() -> None:
    kv, cache = FakeKV(), Cache()
    async with informing(kv, cache) as informer:
        await kv.txn((), [op_put(b"/i/a", b"1"), op_put(b"/i/b", b"1")])
        await caught_up(kv, cache, informer)
        # The informer resumes at this revision *inclusive*: etcd replays it, and the
        # pairs already applied must be dropped.
        kv.break_watches()
        await wait_until(lambda: informer.reconnects == 1, TIMEOUT)
        await kv.put(b"/i/c", b"2")
        await caught_up(kv, cache, informer)
    assert Counter(cache.applied).most_common(1)[0][1] == 1
    assert len(cache.applied) == 3
    assert informer.relists == 0 and len(cache.resets) == 1


async def test_changes_while_disconnected_arrive_after_it() -> None:
    kv, cache = FakeKV(), Cache()
    async with informing(kv, cache) as informer:
        await kv.put(b"/i/a", b"1")
        await caught_up(kv, cache, informer)
        # FakeKV calls never yield to the loop: these writes land before the informer
        # notices its stream broke.
        kv.break_watches()
        await kv.put(b"/i/a", b"2")
        await kv.put(b"/i/b", b"3")
        await caught_up(kv, cache, informer)
    assert informer.relists == 0 and informer.reconnects >= 1
    assert cache.applied == [(b"/i/a", 2), (b"/i/a", 3), (b"/i/b", 4)]


async def test_a_compacted_resume_point_means_a_fresh_listing() -> None:
    kv, cache = FakeKV(), Cache()
    async with informing(kv, cache) as informer:
        await kv.put(b"/i/a", b"1")
        await kv.put(b"/i/gone", b"x")
        await caught_up(kv, cache, informer)
        seen = informer.revision
        kv.break_watches()  # as above, nothing below lets the informer run
        await kv.delete(b"/i/gone")
        await kv.put(b"/i/b", b"2")
        await kv.put(b"/i/b", b"3")
        await kv.compact(kv.revision)  # the resume point is history now
        assert informer.revision == seen
        await wait_until(lambda: informer.relists == 1, TIMEOUT)
        await caught_up(kv, cache, informer)
        assert cache.state == {b"/i/a": b"1", b"/i/b": b"3"}
        assert cache.resets[1] > seen
        await kv.put(b"/i/c", b"4")  # and it watches again from the new listing
        await caught_up(kv, cache, informer)
    assert len(cache.resets) == 2
