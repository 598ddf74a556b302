"""List-then-watch of one etcd prefix, feeding a local cache.

Contract (after client-go's SharedInformer):

* ``sink.reset(kvs, revision)`` is called with a full listing: at start, and again whenever
  the watch cannot resume (its revision was compacted). ``sink.apply(events, revision)`` is
  called for every watch batch, in revision order. Both are called synchronously from the
  informer task, so a reader on the same event loop never sees half a batch.
* Each (key, mod_revision) is applied at most once. After a broken stream the watch resumes
  at the last applied revision *inclusive* (a revision may have been cut mid-way) and drops
  the pairs it already applied.
* The cache is eventually consistent: the states seen for one key are an ordered subsequence
  of the real ones; across keys, states are consistent per applied revision.
* ``synced`` is set once the first listing has been applied.
* Every ``progress_interval`` the informer asks etcd for a progress notification; if nothing
  arrives for ``stall_timeout`` the stream is presumed silently partitioned and is reopened.
  Progress notices prove liveness and measure lag; they never move the resume point
  (old etcd releases can send them ahead of undelivered events).
* Every ``relist_interval`` (10 min) the prefix is listed afresh, bounding the damage of
  any event a watch could have missed.
  ``last_heard`` and ``store_revision`` expose freshness and lag.

Ownership: the Hub runs :meth:`Informer.run` in its task group; the informer owns the
tasks of each watch connection in its own TaskGroup.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from typing import Protocol

from hub.errors import RevisionCompacted, StoreError
from hub.etcd.kv import KV, Event, KeyValue, Watch
from hub.logs import get_logger

log = get_logger("hub.etcd.informer")


class Sink(Protocol):
    """Receives the listing and the watch batches."""

    def reset(self, kvs: Sequence[KeyValue], revision: int) -> None: ...

    def apply(self, events: Sequence[Event], revision: int) -> None: ...


class _Stalled(Exception):
    """The watch stream went silent for longer than the stall timeout."""


class _RelistDue(Exception):
    """Time for the periodic full relist."""


class Informer:
    """Keeps ``sink`` in step with every key under ``prefix``."""

    def __init__(
        self,
        store: KV,
        prefix: bytes,
        sink: Sink,
        *,
        progress_interval: float = 1.0,
        stall_timeout: float = 3.0,
        relist_interval: float = 600.0,
        end: bytes | None = None,
    ) -> None:
        self.store = store
        self.prefix = prefix
        self.end = end  # None: the whole prefix; else the range [prefix, end)
        self.sink = sink
        self.progress_interval = progress_interval
        self.stall_timeout = stall_timeout
        self.relist_interval = relist_interval
        self._listed_at = 0.0
        self.synced = asyncio.Event()
        self.revision = 0  # highest revision applied (the resume point)
        self.store_revision = 0  # latest revision etcd told us about
        self.confirmed_revision = 0  # latest revision a progress notice vouched for
        self.last_heard = 0.0  # monotonic time of the last response from etcd
        self.relists = 0
        self.reconnects = 0
        self._seen_at_revision: set[tuple[bytes, int]] = set()

    @property
    def lag(self) -> int:
        """Revisions etcd has that we have not seen (as of the last response); a metric."""
        return max(0, self.store_revision - max(self.revision, self.confirmed_revision))

    async def run(self) -> None:
        """List, then watch forever; relist on compaction; reconnect with backoff."""
        backoff = 0.1
        need_list = True
        while True:
            try:
                if need_list:
                    await self._list()
                    need_list = False
                await self._watch()
            except RevisionCompacted as exc:
                log.warning("watch revision compacted (%s); relisting", exc)
                need_list = True
                self.relists += 1
                continue
            except _RelistDue:
                need_list = True
                self.relists += 1
                continue
            except (StoreError, _Stalled) as exc:
                self.reconnects += 1
                log.warning("watch interrupted (%s); resuming from revision %d", exc, self.revision)
            healthy = time.monotonic() - self.last_heard < self.stall_timeout
            backoff = 0.1 if healthy else min(backoff * 2, 2.0)
            await asyncio.sleep(backoff * (1 + random.random()))  # jittered 1x-2x

    async def _list(self) -> None:
        kvs, revision = await self.store.list_prefix(self.prefix, end=self.end)
        self.last_heard = time.monotonic()
        self.sink.reset(kvs, revision)
        self._listed_at = time.monotonic()
        self.revision = revision
        self.store_revision = max(self.store_revision, revision)
        self._seen_at_revision = set()
        self.synced.set()

    async def _watch(self) -> None:
        # Resume inclusive of the last applied revision when it came from events (it may
        # have been cut mid-way); a listing covers its revision fully.
        start = self.revision if self._seen_at_revision else self.revision + 1
        async with self.store.watch(self.prefix, start, end=self.end) as stream:
            self.last_heard = time.monotonic()
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._probe(stream))
                    await self._consume(stream)
            except BaseExceptionGroup as group:
                # Surface the first real failure so run() can classify it (relist/retry).
                for exc in group.exceptions:
                    if not isinstance(exc, asyncio.CancelledError):
                        raise exc from None
                raise

    async def _probe(self, stream: Watch) -> None:
        """Request progress regularly; raise _Stalled when etcd stops answering."""
        while True:
            await asyncio.sleep(self.progress_interval)
            now = time.monotonic()
            if now - self.last_heard > self.stall_timeout:
                raise _Stalled(f"no word from etcd for {self.stall_timeout:.1f}s")
            if now - self._listed_at > self.relist_interval:
                # Level-triggered all the way down: whatever a watch could ever have missed
                # is repaired by a fresh listing now and then.
                raise _RelistDue()
            await stream.request_progress()

    async def _consume(self, stream: Watch) -> None:
        async for batch in stream:
            self.last_heard = time.monotonic()
            self.store_revision = max(self.store_revision, batch.revision)
            if batch.is_progress:
                self.confirmed_revision = max(self.confirmed_revision, batch.revision)
                # Liveness and lag only. etcd before 3.5.8 can send a progress notice ahead
                # of events it has not delivered yet (etcd-io/etcd#15220), so it must never
                # advance the point below which events are dropped as already applied.
                continue
            fresh = self._dedupe(batch.events)
            if fresh:
                # Not the header revision: while catching up etcd sends its *current*
                # revision there, ahead of the events this batch carries.
                self.sink.apply(fresh, fresh[-1].mod_revision)

    def _dedupe(self, events: Sequence[Event]) -> list[Event]:
        fresh: list[Event] = []
        for ev in events:
            rev = ev.mod_revision
            if rev < self.revision:
                continue
            pair = (ev.key, rev)
            if rev == self.revision:
                if pair in self._seen_at_revision:
                    continue
            else:
                self.revision = rev
                self._seen_at_revision = set()
            self._seen_at_revision.add(pair)
            fresh.append(ev)
        return fresh
