"""TxnBatcher on the in-memory FakeKV: batching, the op budget, per-op results, key order,
requests too large, unknown outcomes and shutdown — without etcd.

A refused batch must be split until its parts fit (etcd applied nothing, so re-sending is
safe), later batches cut smaller, and only an operation too large by itself may fail.
Errors with an unknown outcome are never re-sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest

from hub.errors import HubClosed, RequestTooLarge, StoreTimeout, StoreUnavailable
from hub.etcd.batcher import MIN_MAX_BYTES, TxnBatcher
from hub.etcd.kv import MAX_TXN_OPS, ResponseTooLarge, TxnResult
from hub.etcd.ops import Compare, Op, cmp_create, cmp_version, op_get, op_put, op_txn
from hub.testing import FakeKV

pytestmark = pytest.mark.timeout(30)


class RecordingKV(FakeKV):
    """A FakeKV that records how many ops each txn it was sent carried."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sent: list[int] = []

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[Op],
        failure: Sequence[Op] = (),
        *,
        timeout: float | None = None,
    ) -> Any:
        self.sent.append(len(success))
        await asyncio.sleep(0)  # a round trip: let other flushes run meanwhile
        return await super().txn(compares, success, failure, timeout=timeout)


@asynccontextmanager
async def running(batcher: TxnBatcher) -> AsyncIterator[TxnBatcher]:
    async with asyncio.TaskGroup() as tg:
        runner = tg.create_task(batcher.run())
        try:
            yield batcher
        finally:
            runner.cancel()


def create(key: bytes, value: bytes = b"v") -> Op:
    """Create ``key`` if absent: a nested txn of width 2."""
    return op_txn([cmp_create(key, "=", 0), cmp_version(key, "=", 0)], [op_put(key, value)])


def put(i: int, size: int) -> tuple[Op, bytes]:
    key = f"/k/{i}".encode()
    return op_txn([], [op_put(key, b"v" * size)]), key


async def submit_all(batcher: TxnBatcher, ops: list[tuple[Op, bytes]]) -> list[Any]:
    futures = [batcher.submit(op, key) for op, key in ops]
    return await asyncio.gather(*futures, return_exceptions=True)


# -- batching ------------------------------------------------------------------------------


async def test_a_burst_rides_few_txns_within_the_op_budget() -> None:
    kv = RecordingKV()
    keys = [b"/b/%04d" % i for i in range(1000)]
    async with running(TxnBatcher(kv)) as batcher:
        results = await submit_all(batcher, [(create(key), key) for key in keys])
    per_batch = MAX_TXN_OPS - 2  # outer ops + the widest nested level (2 compares)
    assert all(isinstance(r, TxnResult) and r.succeeded for r in results)
    assert len(kv.dump()) == 1000
    assert batcher.ops == 1000 and batcher.batches == -(-1000 // per_batch)
    assert max(kv.sent) == per_batch
    # A result carries its batch's revision: the create revision of its key.
    for key, result in zip(keys, results, strict=True):
        got = await kv.get(key)
        assert got is not None and got.create_revision == result.revision


async def test_each_op_gets_its_own_result() -> None:
    kv = FakeKV()
    await kv.put(b"/taken", b"old")
    async with running(TxnBatcher(kv)) as batcher:
        fresh, taken = await submit_all(
            batcher,
            [
                (create(b"/fresh"), b"/fresh"),
                (op_txn([cmp_create(b"/taken", "=", 0)], [], [op_get(b"/taken")]), b"/taken"),
            ],
        )
    assert fresh.succeeded and fresh.responses == (None,)
    assert not taken.succeeded and [kv.value for kv in taken.responses[0]] == [b"old"]
    assert fresh.revision == taken.revision  # one batch
    assert kv.calls["txn"] == 1


async def test_ops_on_one_key_keep_their_order_across_batches() -> None:
    kv = RecordingKV()
    async with running(TxnBatcher(kv)) as batcher:
        first, other, second = await submit_all(
            batcher,
            [
                (op_txn([cmp_create(b"/dup", "=", 0)], [op_put(b"/dup", b"first")]), b"/dup"),
                (create(b"/other"), b"/other"),
                # Only correct if it runs after the first op on the same key has landed.
                (op_txn([cmp_version(b"/dup", "=", 1)], [op_put(b"/dup", b"second")]), b"/dup"),
            ],
        )
    assert first.succeeded and other.succeeded and second.succeeded
    assert first.revision == other.revision < second.revision
    assert kv.sent == [2, 1]
    assert kv.dump()[b"/dup"] == b"second"


async def test_submissions_before_run_wait_for_it() -> None:
    kv = FakeKV()
    batcher = TxnBatcher(kv)
    early = batcher.submit(create(b"/early"), b"/early")
    assert batcher.pending() == 1
    async with running(batcher):
        assert (await early).succeeded


class BlockingKV(FakeKV):
    """A FakeKV whose txns wait for ``release`` (a round trip that takes a while)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.in_flight = asyncio.Event()

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[Op],
        failure: Sequence[Op] = (),
        *,
        timeout: float | None = None,
    ) -> Any:
        self.in_flight.set()
        await self.release.wait()
        return await super().txn(compares, success, failure, timeout=timeout)


async def test_stopping_fails_what_is_in_flight_or_queued() -> None:
    kv = BlockingKV()
    batcher = TxnBatcher(kv)
    async with asyncio.TaskGroup() as tg:
        runner = tg.create_task(batcher.run())
        sent = batcher.submit(create(b"/k"), b"/k")
        await kv.in_flight.wait()
        queued = batcher.submit(create(b"/k", b"again"), b"/k")  # waits for its key
        runner.cancel()
    for future in (sent, queued):
        with pytest.raises(HubClosed):
            await future
    with pytest.raises(HubClosed):
        batcher.submit(create(b"/after"), b"/after")
    assert kv.dump() == {}


async def test_a_failed_batch_fails_its_ops_and_the_next_batch_runs() -> None:
    kv = FakeKV()
    kv.fail_next("txn", StoreUnavailable("injected"))
    async with running(TxnBatcher(kv)) as batcher:
        lost = await submit_all(batcher, [(create(b"/a"), b"/a"), (create(b"/b"), b"/b")])
        (later,) = await submit_all(batcher, [(create(b"/a"), b"/a")])
    assert all(isinstance(r, StoreUnavailable) for r in lost)
    assert later.succeeded and kv.dump() == {b"/a": b"v"}


# -- requests too large --------------------------------------------------------------------


async def test_a_refused_batch_is_split_until_every_part_fits() -> None:
    kv = RecordingKV(max_request_bytes=35_000)
    async with running(TxnBatcher(kv)) as batcher:
        results = await submit_all(batcher, [put(i, 10_000) for i in range(10)])
    assert all(isinstance(r, TxnResult) and r.succeeded for r in results)
    assert sorted(kv.dump()) == sorted(f"/k/{i}".encode() for i in range(10))
    assert kv.sent[0] == 10  # one batch, refused, then halves, then quarters
    assert max(kv.sent[1:]) <= 5
    assert batcher.max_bytes < 35_000  # later batches start small enough


async def test_later_batches_fit_after_a_refusal() -> None:
    kv = RecordingKV(max_request_bytes=40_000)
    async with running(TxnBatcher(kv)) as batcher:
        await submit_all(batcher, [put(i, 10_000) for i in range(8)])
        refused = len(kv.sent)
        assert kv.sent[0] == 8  # 80 kB: refused, then split
        later = await submit_all(batcher, [put(100 + i, 10_000) for i in range(8)])
    assert all(r.succeeded for r in later)
    assert len(kv.dump()) == 16
    assert all(n * 10_000 <= 40_000 for n in kv.sent[refused:])  # none refused again


async def test_only_an_operation_too_large_alone_fails() -> None:
    kv = FakeKV(max_request_bytes=3_500)
    ops = [put(i, 1_000) for i in range(4)] + [put(99, 5_000)] + [put(i, 1_000) for i in (4, 5)]
    async with running(TxnBatcher(kv)) as batcher:
        results = await submit_all(batcher, ops)
    assert isinstance(results[4], RequestTooLarge)
    assert all(isinstance(r, TxnResult) for i, r in enumerate(results) if i != 4)
    assert b"/k/99" not in kv.dump() and len(kv.dump()) == 6


async def test_shrinking_stops_at_the_floor() -> None:
    kv = FakeKV(max_request_bytes=10)  # refuses everything
    async with running(TxnBatcher(kv)) as batcher:
        results = await submit_all(batcher, [put(i, 100) for i in range(4)])
    assert all(isinstance(r, RequestTooLarge) for r in results)
    assert batcher.max_bytes == MIN_MAX_BYTES


@pytest.mark.parametrize(
    "error", [StoreTimeout("etcd call timed out"), ResponseTooLarge("reply too large")]
)
async def test_an_unknown_outcome_is_never_sent_again(error: Exception) -> None:
    kv = RecordingKV()
    kv.fail_next("txn", error, applied=True)  # etcd applied it; the reply was lost
    async with running(TxnBatcher(kv)) as batcher:
        results = await submit_all(batcher, [put(i, 100) for i in range(5)])
    assert kv.sent == [5]
    assert all(r is error for r in results)
    assert len(kv.dump()) == 5  # applied once, never twice
    assert batcher.max_bytes == 1024 * 1024
