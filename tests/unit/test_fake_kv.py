"""hub.testing.FakeKV: the KV conformance suite, then what only the fake offers."""

from __future__ import annotations

import asyncio

import pytest
from support.kv_conformance import Backend, KVConformance, next_events

from hub.errors import StoreTimeout, StoreUnavailable
from hub.etcd.kv import ResponseTooLarge
from hub.etcd.ops import cmp_create, op_put
from hub.testing import FakeKV, ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def kv(clock: ManualClock) -> FakeKV:
    return FakeKV(clock=clock)


class TestFakeKV(KVConformance):
    @pytest.fixture
    def backend(self, kv: FakeKV, clock: ManualClock) -> Backend:
        async def expire(lease_id: int, ttl: int) -> None:
            clock.advance(ttl)
            assert kv.expire_leases() == 1

        return Backend(kv, b"/conformance/", expire)


async def test_an_empty_store_is_at_revision_one(kv: FakeKV) -> None:
    assert kv.revision == 1
    assert await kv.put(b"k", b"v") == 2
    assert (await kv.txn([cmp_create(b"k", "=", 0)], [op_put(b"k", b"x")])).revision == 2


async def test_keepalives_hold_a_lease_past_its_first_ttl(kv: FakeKV, clock: ManualClock) -> None:
    lease_id, ttl = await kv.lease_grant(3)
    await kv.put(b"k", b"v", lease=lease_id)
    for _ in range(5):
        clock.advance(ttl - 0.5)
        assert await kv.lease_keepalive(lease_id) == ttl
    assert kv.leases() == {lease_id: ttl}
    clock.advance(ttl)
    assert await kv.get(b"k") is None  # expiry is noticed by the next call
    assert kv.leases() == {}


async def test_an_outage_fails_calls_and_breaks_watches(kv: FakeKV) -> None:
    async with kv.watch(b"/", 0) as stream:
        with kv.outage():
            with pytest.raises(StoreUnavailable):
                await kv.get(b"/k")
            with pytest.raises(StoreUnavailable):
                await next_events(stream, 1)
            with pytest.raises(StoreUnavailable):
                async with kv.watch(b"/", 0):
                    pass
    assert await kv.put(b"/k", b"v") == 2  # back


async def test_a_fault_fires_before_or_after_the_call_is_applied(kv: FakeKV) -> None:
    kv.fail_next("put", StoreTimeout("injected"))
    with pytest.raises(StoreTimeout):
        await kv.put(b"a", b"1")
    assert await kv.get(b"a") is None
    kv.fail_next("txn", StoreTimeout("reply lost"), applied=True)
    with pytest.raises(StoreTimeout):
        await kv.txn((), [op_put(b"a", b"2")])
    got = await kv.get(b"a")
    assert got is not None and got.value == b"2"  # the outcome was "unknown": it happened
    assert kv.calls["put"] == 1 and kv.calls["txn"] == 1


async def test_a_reply_over_the_response_limit(clock: ManualClock) -> None:
    kv = FakeKV(clock=clock, max_response_bytes=100)
    await kv.put(b"small", b"x")
    await kv.put(b"big", b"x" * 200)
    found, too_large = await kv.get_many([(b"small", 0), (b"big", 0)])
    assert set(found) == {b"small"} and isinstance(too_large[b"big"], ResponseTooLarge)
    with pytest.raises(ResponseTooLarge):
        await kv.list_prefix(b"")  # b"" .. b"\0": every key


async def test_a_broken_watch_can_resume_at_its_last_revision(kv: FakeKV) -> None:
    async with kv.watch(b"/", 0) as stream:
        rev = await kv.put(b"/a", b"1")
        await next_events(stream, 1)
        kv.break_watches()
        with pytest.raises(StoreUnavailable):
            await next_events(stream, 1)
    await kv.put(b"/b", b"2")
    async with kv.watch(b"/", rev) as stream:
        events = await next_events(stream, 2)
    assert [e.key for e in events] == [b"/a", b"/b"]


async def test_watchers_do_not_block_writers(kv: FakeKV) -> None:
    async with kv.watch(b"/", 0):
        await asyncio.gather(*(kv.put(b"/%d" % i, b"v") for i in range(100)))
    assert kv.revision == 101
