"""Batches independent per-key compare-and-set operations into few etcd round trips.

Each submitted operation is a nested txn (:func:`~hub.etcd.ops.op_txn`) about one key. The batcher
packs as many as etcd's operation budget allows (``outer ops + widest nested txn <= 128``
with etcd's default ``--max-txn-ops``) and at most ``max_bytes`` into one outer txn
without compares, so every nested txn succeeds or fails on its own compares while the
whole batch costs one round trip. Up to ``max_in_flight`` outer txns are pipelined.

Outcomes: each submission's future resolves to its nested :class:`~hub.etcd.kv.TxnResult`
(``succeeded`` tells whether its compares held; ``revision`` is the batch revision, i.e.
the create revision of any key it created). If the outer txn fails, every future in it
gets the exception; after :class:`~hub.errors.StoreTimeout` the outcome is *unknown* and
callers must re-read (the watch will tell) rather than retry blindly.

A batch etcd refuses as too large (:class:`~hub.errors.RequestTooLarge`: an etcd with a
smaller ``--max-request-bytes`` than ``max_bytes`` assumes; etcd applied nothing) is sent
again in halves, down to single operations, and later batches are cut at half its size: a
refused batch never fails operations that fit on their own, and never livelocks. Only an
operation too large by itself fails, with RequestTooLarge.

Two operations on the same key never share an outer txn (etcd rejects duplicate keys),
and an operation waits while an earlier one on its key is in flight: pipelined batches may
be applied in any order, so this keeps each key's operations in submission order (a
``failed`` owner record must not be overwritten by the ``running`` one queued before it).

Ownership: the Hub runs :meth:`TxnBatcher.run` in its task group; flushes are tasks of the
batcher's own TaskGroup.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from hub.errors import HubClosed, RequestTooLarge
from hub.etcd.kv import KV, MAX_TXN_OPS, TxnResult
from hub.etcd.ops import Op, op_size, op_width
from hub.logs import get_logger

log = get_logger("hub.etcd.batcher")

#: Bytes per outer txn; etcd's default request limit is 1.5 MiB.
DEFAULT_MAX_BYTES = 1024 * 1024
#: ``max_bytes`` never shrinks below this after refused batches (etcd's limit cannot
#: sensibly be lower; single operations are still sent whatever their size).
MIN_MAX_BYTES = 16 * 1024


@dataclass(slots=True)
class _Item:
    op: Op
    key: bytes
    size: int
    width: int
    future: asyncio.Future[TxnResult]


class TxnBatcher:
    """Coalesces nested-txn operations into outer txns; see module docstring."""

    def __init__(
        self,
        store: KV,
        *,
        max_ops: int = MAX_TXN_OPS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_in_flight: int = 4,
        timeout: float | None = None,
    ) -> None:
        self.store = store
        self.max_ops = max_ops
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._queue: deque[_Item] = deque()
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(max_in_flight)
        self._closed = False
        self._busy: set[bytes] = set()  # keys with an operation in flight
        self.batches = 0
        self.ops = 0

    def submit(self, op: Op, key: bytes, size: int = 0) -> asyncio.Future[TxnResult]:
        """Queue a nested txn about ``key``; returns a future of its result.

        ``size`` is the op's encoded size if the caller knows it (0: computed here).
        """
        if self._closed:
            raise HubClosed("batcher is stopped")
        fut: asyncio.Future[TxnResult] = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(op, key, size or op_size(op), op_width(op), fut))
        self._wakeup.set()
        return fut

    def pending(self) -> int:
        """Operations queued but not yet sent."""
        return len(self._queue)

    async def run(self) -> None:
        """Flush forever; on cancellation, fail what is still queued.

        Submissions made before ``run`` starts wait in the queue.
        """
        self._closed = False
        if self._queue:
            self._wakeup.set()
        try:
            async with asyncio.TaskGroup() as tg:
                while True:
                    await self._wakeup.wait()
                    self._wakeup.clear()
                    # Let the current burst of submissions land before cutting batches.
                    await asyncio.sleep(0)
                    while self._queue:
                        await self._slots.acquire()
                        batch = self._take()
                        if not batch:
                            # Everything queued waits for its key; _flush wakes us up.
                            self._slots.release()
                            break
                        self._busy.update(item.key for item in batch)
                        tg.create_task(self._flush(batch))
        finally:
            self._closed = True
            while self._queue:
                item = self._queue.popleft()
                if not item.future.done():
                    item.future.set_exception(HubClosed("batcher stopped"))

    def _take(self) -> list[_Item]:
        batch: list[_Item] = []
        keys: set[bytes] = set()
        deferred: list[_Item] = []
        size = 0
        width = 0
        while self._queue:
            item = self._queue[0]
            if batch and (
                size + item.size > self.max_bytes
                or len(batch) + 1 + max(width, item.width) > self.max_ops
            ):
                break
            self._queue.popleft()
            if item.key in keys or item.key in self._busy:
                deferred.append(item)
                continue
            keys.add(item.key)
            batch.append(item)
            size += item.size
            width = max(width, item.width)
        self._queue.extendleft(reversed(deferred))
        return batch

    async def _flush(self, batch: list[_Item]) -> None:
        parts = [batch]
        try:
            while parts:
                part = parts.pop()
                try:
                    result = await self.store.txn(
                        (), [item.op for item in part], timeout=self.timeout
                    )
                except RequestTooLarge as exc:
                    if len(part) == 1:
                        _fail(part, exc)
                        continue
                    self._shrink(part, exc)
                    half = len(part) // 2
                    parts += [part[half:], part[:half]]  # the first half goes first
                    continue
                self.batches += 1
                self.ops += len(part)
                for item, response in zip(part, result.responses, strict=True):
                    if not item.future.done():
                        item.future.set_result(response)
        except BaseException as exc:  # every future must learn the outcome
            failure = exc if isinstance(exc, Exception) else HubClosed("batcher stopped")
            _fail(batch, failure)  # what was already answered keeps its answer
            if not isinstance(exc, Exception):
                raise
            log.debug("batch of %d failed: %s", len(batch), exc)
        finally:
            self._busy.difference_update(item.key for item in batch)
            self._slots.release()
            if self._queue:
                self._wakeup.set()

    def _shrink(self, refused: list[_Item], exc: RequestTooLarge) -> None:
        """Cut later batches below the size etcd just refused."""
        size = sum(item.size for item in refused)
        limit = max(MIN_MAX_BYTES, min(self.max_bytes, size // 2))
        if limit < self.max_bytes:
            log.warning(
                "etcd refused a batch of %d operations, %d bytes (%s): batches are now "
                "at most %d bytes; check etcd's --max-request-bytes",
                len(refused),
                size,
                exc,
                limit,
            )
            self.max_bytes = limit


def _fail(items: list[_Item], exc: BaseException) -> None:
    for item in items:
        if not item.future.done():
            item.future.set_exception(exc)
