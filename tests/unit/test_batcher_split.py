"""TxnBatcher against a store that refuses requests above a size, as etcd does.

A refused batch must be split until its parts fit (etcd applied nothing, so re-sending is
safe), later batches cut smaller, and only an operation too large by itself may fail.
Errors with an unknown outcome are never re-sent.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from hub.errors import RequestTooLarge, StoreTimeout
from hub.etcd.batcher import MIN_MAX_BYTES, TxnBatcher
from hub.etcd.kv import ResponseTooLarge, TxnResult
from hub.etcd.ops import Put, Txn, op_put, op_size, op_txn


class SizeLimitedStore:
    """Answers txns whose ops total at most ``limit`` bytes; refuses bigger ones."""

    def __init__(self, limit: int, error: Exception | None = None) -> None:
        self.limit = limit
        self.error = error  # raised for every txn instead, when set
        self.sent: list[int] = []  # ops per txn attempted
        self.applied: list[bytes] = []

    async def txn(
        self, compares: Sequence[Any], ops: Sequence[Any], *, timeout: float | None = None
    ) -> TxnResult:
        await asyncio.sleep(0)
        self.sent.append(len(ops))
        if self.error is not None:
            raise self.error
        if sum(op_size(op) for op in ops) > self.limit:
            raise RequestTooLarge("etcdserver: request is too large")
        for op in ops:
            assert isinstance(op, Txn)
            self.applied.extend(put.key for put in op.success if isinstance(put, Put))
        return TxnResult(True, 7, tuple(TxnResult(True, 7) for _ in ops))


def put(i: int, size: int) -> tuple[Any, bytes]:
    key = f"/k/{i}".encode()
    return op_txn([], [op_put(key, b"v" * size)]), key


async def run_batch(
    store: SizeLimitedStore, *phases: list[tuple[Any, bytes]]
) -> tuple[TxnBatcher, list[Any]]:
    """Submit each phase's operations once the previous phase's are answered."""
    batcher = TxnBatcher(store)  # type: ignore[arg-type]
    results: list[Any] = []
    async with asyncio.TaskGroup() as tg:
        runner = tg.create_task(batcher.run())
        for ops in phases:
            futures = [batcher.submit(op, key) for op, key in ops]
            results = await asyncio.gather(*futures, return_exceptions=True)
        runner.cancel()
    return batcher, results


async def test_a_refused_batch_is_split_until_every_part_fits() -> None:
    store = SizeLimitedStore(limit=35_000)
    batcher, results = await run_batch(store, [put(i, 10_000) for i in range(10)])
    assert all(isinstance(r, TxnResult) and r.succeeded for r in results)
    assert sorted(store.applied) == sorted(f"/k/{i}".encode() for i in range(10))
    assert store.sent[0] == 10  # one batch, refused, then halves, then quarters
    assert max(store.sent[1:]) <= 5
    assert batcher.max_bytes < 35_000  # later batches start small enough


async def test_later_batches_fit_after_a_refusal() -> None:
    store = SizeLimitedStore(limit=40_000)
    batcher = TxnBatcher(store)  # type: ignore[arg-type]
    async with asyncio.TaskGroup() as tg:
        runner = tg.create_task(batcher.run())
        await asyncio.gather(*(batcher.submit(*put(i, 10_000)) for i in range(8)))
        refused = len(store.sent)
        assert store.sent[0] == 8  # 80 kB: refused, then split
        later = await asyncio.gather(*(batcher.submit(*put(100 + i, 10_000)) for i in range(8)))
        runner.cancel()
    assert all(r.succeeded for r in later)
    assert len(store.applied) == 16
    assert all(n * 10_000 <= 40_000 for n in store.sent[refused:])  # none refused again


async def test_only_an_operation_too_large_alone_fails() -> None:
    store = SizeLimitedStore(limit=3_500)
    ops = [put(i, 1_000) for i in range(4)] + [put(99, 5_000)] + [put(i, 1_000) for i in (4, 5)]
    _, results = await run_batch(store, ops)
    assert isinstance(results[4], RequestTooLarge)
    assert all(isinstance(r, TxnResult) for i, r in enumerate(results) if i != 4)
    assert b"/k/99" not in store.applied and len(store.applied) == 6


async def test_shrinking_stops_at_the_floor() -> None:
    store = SizeLimitedStore(limit=10)  # refuses everything
    batcher, results = await run_batch(store, [put(i, 100) for i in range(4)])
    assert all(isinstance(r, RequestTooLarge) for r in results)
    assert batcher.max_bytes == MIN_MAX_BYTES


@pytest.mark.parametrize(
    "error", [StoreTimeout("etcd call timed out"), ResponseTooLarge("reply too large")]
)
async def test_an_unknown_outcome_is_never_sent_again(error: Exception) -> None:
    store = SizeLimitedStore(limit=1 << 20, error=error)
    batcher, results = await run_batch(store, [put(i, 100) for i in range(5)])
    assert store.sent == [5]
    assert all(r is error for r in results)
    assert batcher.max_bytes == 1024 * 1024
