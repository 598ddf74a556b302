"""An in-memory :class:`~hub.etcd.kv.KV`: etcd's data model without etcd, for unit tests.

:class:`FakeKV` keeps what the hub relies on (see :mod:`hub.etcd.kv`):

* one global revision (1 when empty, as etcd), raised by one per change; per key
  ``create_revision``, ``mod_revision``, ``version``; reads at past revisions;
* txns with create/mod/version/value compares, nested txns deciding their own branch,
  reads that see the txn's earlier writes, etcd's operation budget (:data:`MAX_TXN_OPS`,
  outer ops + widest nested level), duplicate-key refusal, and a request size limit
  (:class:`~hub.errors.RequestTooLarge`);
* leases: grant with a TTL, keep-alive, revoke, and expiry after the TTL on an injectable
  ``clock``, deleting the lease's keys at one revision;
* watches from a revision (inclusive; 0: from now) with events in revision order, the
  catch-up batch carrying the current revision in its header as etcd's does, progress
  notifications, and :class:`~hub.errors.RevisionCompacted` after :meth:`FakeKV.compact`.

And what a test needs to provoke the rest: :meth:`~FakeKV.outage` (every call and open
watch fails with StoreUnavailable), :meth:`~FakeKV.fail_next` (one call fails with a given
error, before or after it is applied), :meth:`~FakeKV.break_watches`, ``calls`` (a count
per method) and ``max_response_bytes``.

Expiry is checked at every call and by :meth:`~FakeKV.expire_leases`, so a test on a
:class:`ManualClock` writes ``clock.advance(ttl); kv.expire_leases()``.

Calls complete without yielding to the event loop, so a test's sequence of calls is atomic
with respect to the code under test. Not modelled: auth, TLS, timeouts, etcd's minimum
lease TTL, member lists. ``tests/support/kv_conformance.py`` runs one suite against this
fake and a real etcd, so where both are checked they agree.

Ownership: one event loop; not thread-safe. Watches belong to whoever entered them.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Self

from hub.errors import RequestTooLarge, RevisionCompacted, StoreError, StoreUnavailable
from hub.etcd.keys import prefix_end
from hub.etcd.kv import (
    KV,
    LIST_PAGE_SIZE,
    MAX_TXN_OPS,
    Event,
    KeyValue,
    LeaseNotFound,
    ResponseTooLarge,
    TxnResult,
    WatchBatch,
)
from hub.etcd.ops import Compare, Delete, Get, Op, Put, txn_size
from hub.testing._kv_rules import at_revision, check_budget, check_writes, holds, in_range

__all__ = ["FakeKV", "ManualClock"]

#: etcd's default ``--max-request-bytes``.
DEFAULT_MAX_REQUEST_BYTES: Final = 1536 * 1024


class ManualClock:
    """A monotonic clock that moves only when told: ``clock.advance(seconds)``."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (>= 0)."""
        if seconds < 0:
            raise ValueError("a monotonic clock never goes back")
        self.now += seconds


@dataclass(slots=True)
class _Lease:
    ttl: int
    expires_at: float
    keys: set[bytes] = field(default_factory=set)


class _TxnView:
    """A txn's writes staged over the store, so its reads see them and a refusal undoes
    nothing."""

    def __init__(self, kv: FakeKV, revision: int) -> None:
        self.kv = kv
        self.revision = revision  # the revision the txn's writes get
        self.staged: dict[bytes, KeyValue | None] = {}
        self.events: list[Event] = []

    def current(self, key: bytes) -> KeyValue | None:
        return self.staged[key] if key in self.staged else self.kv._live.get(key)

    def keys_in(self, start: bytes, end: bytes) -> list[bytes]:
        keys = set(self.kv._live) | set(self.staged)
        return sorted(k for k in keys if in_range(k, start, end) and self.current(k))

    def put(self, op: Put) -> None:
        old = self.current(op.key)
        rev = self.revision
        self.staged[op.key] = kv = KeyValue(
            op.key,
            op.value,
            old.create_revision if old else rev,
            rev,
            old.version + 1 if old else 1,
            op.lease,
        )
        self.events.append(Event(kv.key, kv.value, False, kv.create_revision, rev, kv.lease))

    def delete(self, op: Delete) -> int:
        keys = self.keys_in(op.key, op.end)
        for key in keys:
            self.staged[key] = None
            self.events.append(Event(key, b"", True, 0, self.revision, 0))
        return len(keys)


class FakeKV:
    """An in-memory etcd; see the module docstring.

    Args:
        clock: monotonic seconds for lease expiry (a :class:`ManualClock` in most tests).
        max_request_bytes: the largest request accepted (etcd's default 1.5 MiB).
        max_response_bytes: the largest key-value a read may return (None: any).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        max_response_bytes: int | None = None,
    ) -> None:
        self.clock = clock
        self.max_request_bytes = max_request_bytes
        self.max_response_bytes = max_response_bytes
        self.revision = 1
        self.compact_revision = 0
        self.calls: collections.Counter[str] = collections.Counter()
        self._live: dict[bytes, KeyValue] = {}
        self._history: dict[bytes, list[tuple[int, KeyValue | None]]] = {}
        self._log: list[Event] = []  # every event since the compact revision, in order
        self._leases: dict[int, _Lease] = {}
        self._lease_ids = itertools.count(0x1000)
        self._watches: set[_FakeWatch] = set()
        self._down = False
        self._faults: list[tuple[str, BaseException, bool]] = []  # (method, error, applied)

    def __repr__(self) -> str:
        return f"<FakeKV revision={self.revision} keys={len(self._live)}>"

    # -- fault injection -----------------------------------------------------------------

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        """While inside the block, every call raises StoreUnavailable and open watches
        break, as when etcd is unreachable."""
        self._down = True
        self.break_watches()
        try:
            yield
        finally:
            self._down = False

    def fail_next(self, method: str, error: BaseException, *, applied: bool = False) -> None:
        """Make the next call of ``method`` (``"txn"``, ``"put"``, ``"lease_keepalive"``...)
        raise ``error``: after applying it when ``applied`` (a write whose reply was lost,
        as after StoreTimeout or ResponseTooLarge), else before. Faults queue up in order."""
        self._faults.append((method, error, applied))

    def break_watches(self, error: BaseException | None = None) -> None:
        """End every open watch stream with ``error`` (default StoreUnavailable)."""
        for watch in list(self._watches):
            watch.fail(error or StoreUnavailable("fake etcd: watch stream broken"))

    # -- inspection ----------------------------------------------------------------------

    def leases(self) -> dict[int, int]:
        """Live leases: ``{lease id: granted TTL}``."""
        self.expire_leases()
        return {lease_id: lease.ttl for lease_id, lease in self._leases.items()}

    def dump(self) -> dict[bytes, bytes]:
        """Every live key and its value."""
        return {key: kv.value for key, kv in sorted(self._live.items())}

    def expire_leases(self) -> int:
        """Expire every lease whose TTL has passed on ``clock``; returns how many."""
        now = self.clock()
        due = [lease_id for lease_id, lease in self._leases.items() if lease.expires_at <= now]
        for lease_id in due:
            self._drop_lease(lease_id)
        return len(due)

    # -- KV: reads -----------------------------------------------------------------------

    async def get(self, key: bytes, *, timeout: float | None = None) -> KeyValue | None:
        """Read one key."""
        self._enter("get")
        kv = self._live.get(key)
        return None if kv is None else self._sized(kv)

    async def list_prefix(
        self,
        prefix: bytes,
        *,
        revision: int = 0,
        page_size: int = LIST_PAGE_SIZE,
        timeout: float | None = None,
        end: bytes | None = None,
    ) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix`` (or in ``[prefix, end)``) at ``revision``."""
        self._enter("list_prefix")
        at = self._readable(revision)
        stop = end if end is not None else prefix_end(prefix)
        keys = sorted(k for k in self._history if in_range(k, prefix, stop))
        found = (self._at(key, at) for key in keys)
        return [self._sized(kv) for kv in found if kv is not None], at

    async def get_many(
        self, reads: Sequence[tuple[bytes, int]], *, timeout: float | None = None
    ) -> tuple[dict[bytes, KeyValue], dict[bytes, ResponseTooLarge]]:
        """Read keys, each at its own revision (0: the latest)."""
        self._enter("get_many")
        found: dict[bytes, KeyValue] = {}
        too_large: dict[bytes, ResponseTooLarge] = {}
        for key, revision in dict.fromkeys(reads):
            kv = self._at(key, self._readable(revision))
            if kv is None:
                continue
            try:
                found[key] = self._sized(kv)
            except ResponseTooLarge as exc:
                too_large[key] = exc
        return found, too_large

    # -- KV: writes ----------------------------------------------------------------------

    async def put(
        self, key: bytes, value: bytes, *, lease: int = 0, timeout: float | None = None
    ) -> int:
        """Write one key; returns the revision."""
        return (await self._run("put", (), [Put(key, value, lease)], ())).revision

    async def delete(
        self, key: bytes, *, prefix: bool = False, timeout: float | None = None
    ) -> int:
        """Delete a key (or prefix); returns the number of keys deleted."""
        op = Delete(key, prefix_end(key) if prefix else b"")
        result = await self._run("delete", (), [op], ())
        return int(result.responses[0])

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[Op],
        failure: Sequence[Op] = (),
        *,
        timeout: float | None = None,
    ) -> TxnResult:
        """Run a transaction atomically."""
        return await self._run("txn", compares, success, failure)

    async def compact(self, revision: int, *, timeout: float | None = None) -> None:
        """Forget history before ``revision``."""
        self._enter("compact")
        if revision <= self.compact_revision:
            raise RevisionCompacted(self.compact_revision)
        if revision > self.revision:
            raise StoreError("fake etcd: mvcc: required revision is a future revision")
        self.compact_revision = revision
        for key in list(self._history):
            versions = self._history[key]
            keep = bisect.bisect_right(versions, revision, key=lambda entry: entry[0]) - 1
            del versions[: max(keep, 0)]  # the version visible at `revision` stays
            if versions and versions[0][1] is None and versions[0][0] <= revision:
                del versions[0]
            if not versions:
                del self._history[key]
        self._log = [ev for ev in self._log if ev.mod_revision >= revision]

    # -- KV: leases ----------------------------------------------------------------------

    async def lease_grant(self, ttl: int, *, timeout: float | None = None) -> tuple[int, int]:
        """Grant a lease of ``ttl`` seconds (at least 1)."""
        self._enter("lease_grant")
        lease_id = next(self._lease_ids)
        granted = max(1, ttl)
        self._leases[lease_id] = _Lease(granted, self.clock() + granted)
        self._after("lease_grant")
        return lease_id, granted

    async def lease_keepalive(self, lease_id: int, *, timeout: float | None = None) -> int:
        """Renew a lease: its TTL starts again; 0 when it is gone."""
        self._enter("lease_keepalive")
        lease = self._leases.get(lease_id)
        if lease is None:
            return 0
        lease.expires_at = self.clock() + lease.ttl
        self._after("lease_keepalive")
        return lease.ttl

    async def lease_revoke(self, lease_id: int, *, timeout: float | None = None) -> None:
        """Revoke a lease, deleting its keys at one revision; a gone lease is no error."""
        self._enter("lease_revoke")
        if lease_id in self._leases:
            self._drop_lease(lease_id)
        self._after("lease_revoke")

    async def lease_ttl(self, lease_id: int, *, timeout: float | None = None) -> int:
        """Remaining whole seconds of a lease; -1 when it does not exist."""
        self._enter("lease_ttl")
        lease = self._leases.get(lease_id)
        return -1 if lease is None else max(0, int(lease.expires_at - self.clock()))

    # -- KV: watch -----------------------------------------------------------------------

    def watch(self, prefix: bytes, start_revision: int, *, end: bytes | None = None) -> _FakeWatch:
        """Watch every key under ``prefix`` (or in ``[prefix, end)``) from
        ``start_revision`` (inclusive; 0: from now)."""
        self.calls["watch"] += 1
        stop = end if end is not None else prefix_end(prefix)
        return _FakeWatch(self, prefix, stop, start_revision)

    # -- internals -----------------------------------------------------------------------

    def _enter(self, method: str) -> None:
        """Every call: count it, fail it if etcd is down or a fault is due, expire leases."""
        self.calls[method] += 1
        if self._down:
            raise StoreUnavailable("fake etcd: unavailable")
        self._fault(method, applied=False)
        self.expire_leases()

    def _after(self, method: str) -> None:
        """After a call was applied: raise an injected reply-lost error."""
        self._fault(method, applied=True)

    def _fault(self, method: str, *, applied: bool) -> None:
        for i, (name, error, after) in enumerate(self._faults):
            if name == method:
                if after == applied:
                    del self._faults[i]
                    raise error
                return

    def _readable(self, revision: int) -> int:
        if revision == 0:
            return self.revision
        if revision < self.compact_revision:
            raise RevisionCompacted(self.compact_revision)
        if revision > self.revision:
            raise StoreError("fake etcd: mvcc: required revision is a future revision")
        return revision

    def _at(self, key: bytes, revision: int) -> KeyValue | None:
        if revision == self.revision:
            return self._live.get(key)
        versions = self._history.get(key, [])
        i = bisect.bisect_right(versions, revision, key=lambda entry: entry[0])
        return versions[i - 1][1] if i else None

    def _sized(self, kv: KeyValue) -> KeyValue:
        limit = self.max_response_bytes
        if limit is not None and len(kv.key) + len(kv.value) > limit:
            raise ResponseTooLarge(f"fake etcd: a reply with {kv.key!r} is over {limit} bytes")
        return kv

    async def _run(
        self, method: str, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op]
    ) -> TxnResult:
        self._enter(method)
        check_budget(compares, success, failure, MAX_TXN_OPS)
        for branch in (success, failure):
            check_writes(branch)
        if txn_size(compares, success, failure) > self.max_request_bytes:
            raise RequestTooLarge("fake etcd: etcdserver: request is too large")
        view = _TxnView(self, self.revision + 1)
        result = self._apply(view, compares, success, failure)
        if view.events:
            self._commit(view)
            result = at_revision(result, view.revision)
        self._after(method)
        return result

    def _apply(
        self,
        view: _TxnView,
        compares: Sequence[Compare],
        success: Sequence[Op],
        failure: Sequence[Op],
    ) -> TxnResult:
        held = all(holds(c, view.current(c.key)) for c in compares)
        responses: list[Any] = []
        for op in success if held else failure:
            if isinstance(op, Put):
                if op.lease and op.lease not in self._leases:
                    raise LeaseNotFound("fake etcd: etcdserver: requested lease not found")
                view.put(op)
                responses.append(None)
            elif isinstance(op, Delete):
                responses.append(view.delete(op))
            elif isinstance(op, Get):
                responses.append(self._get(view, op))
            else:
                responses.append(self._apply(view, op.compares, op.success, op.failure))
        return TxnResult(held, self.revision, tuple(responses))

    def _get(self, view: _TxnView, op: Get) -> tuple[KeyValue, ...]:
        if op.revision == 0:
            kv = view.current(op.key)
        else:
            kv = self._at(op.key, self._readable(op.revision))
        if kv is None:
            return ()
        if op.keys_only:
            kv = KeyValue(kv.key, b"", kv.create_revision, kv.mod_revision, kv.version, kv.lease)
        return (self._sized(kv),)

    def _commit(self, view: _TxnView) -> None:
        self.revision = rev = view.revision
        for key, kv in view.staged.items():
            old = self._live.pop(key, None)
            if old is not None and old.lease in self._leases:
                self._leases[old.lease].keys.discard(key)
            if kv is not None:
                self._live[key] = kv
                if kv.lease:
                    self._leases[kv.lease].keys.add(key)
            self._history.setdefault(key, []).append((rev, kv))
        self._log.extend(view.events)
        for watch in list(self._watches):
            watch.publish(rev, view.events)

    def _drop_lease(self, lease_id: int) -> None:
        lease = self._leases.pop(lease_id)
        if lease.keys:
            view = _TxnView(self, self.revision + 1)
            for key in sorted(lease.keys):
                view.delete(Delete(key))
            self._commit(view)


class _FakeWatch:
    """A watch stream of :class:`FakeKV`; see :class:`hub.etcd.kv.Watch`."""

    def __init__(self, kv: FakeKV, start: bytes, end: bytes, start_revision: int) -> None:
        self._kv = kv
        self._start = start
        self._end = end
        self._start_revision = start_revision
        self._first = 0  # the first revision this stream delivers; set on entry
        self._queue: asyncio.Queue[WatchBatch | BaseException] = asyncio.Queue()
        self._closed = False

    async def __aenter__(self) -> Self:
        kv = self._kv
        if kv._down:
            raise StoreUnavailable("fake etcd: unavailable")
        if 0 < self._start_revision < kv.compact_revision:
            self._queue.put_nowait(RevisionCompacted(kv.compact_revision))
        else:
            self._first = first = self._start_revision or kv.revision + 1
            backlog = tuple(ev for ev in kv._log if ev.mod_revision >= first and self._wants(ev))
            if backlog:  # catching up: etcd's header says the current revision
                self._queue.put_nowait(WatchBatch(kv.revision, backlog))
            kv._watches.add(self)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closed = True
        self._kv._watches.discard(self)

    async def request_progress(self) -> None:
        """Queue a progress notification: after every event already queued."""
        if self._kv._down:
            raise StoreUnavailable("fake etcd: unavailable")
        self._queue.put_nowait(WatchBatch(self._kv.revision, (), is_progress=True))

    def __aiter__(self) -> AsyncIterator[WatchBatch]:
        return self._batches()

    async def _batches(self) -> AsyncIterator[WatchBatch]:
        while not self._closed:
            item = await self._queue.get()
            if isinstance(item, BaseException):
                self._kv._watches.discard(self)
                raise item
            yield item

    def _wants(self, ev: Event) -> bool:
        return in_range(ev.key, self._start, self._end)

    def publish(self, revision: int, events: Sequence[Event]) -> None:
        mine = tuple(ev for ev in events if self._wants(ev))
        if mine and revision >= self._first:
            self._queue.put_nowait(WatchBatch(revision, mine))

    def fail(self, error: BaseException) -> None:
        self._queue.put_nowait(error)
        self._kv._watches.discard(self)


#: FakeKV keeps to the KV seam (checked by mypy).
_FAKE_IS_A_KV: type[KV] = FakeKV
