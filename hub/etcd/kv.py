"""The key-value seam: what the hub needs of etcd, as a :class:`typing.Protocol`.

:class:`KV` is the surface the hub's etcd layer uses: reads (:meth:`~KV.get`,
:meth:`~KV.list_prefix`, :meth:`~KV.get_many`), writes (:meth:`~KV.put`,
:meth:`~KV.delete`, :meth:`~KV.txn` with compares and nested txns from
:mod:`hub.etcd.ops`), leases, watches and compaction. Two implementations keep to it:

* :class:`hub.etcd.store.Store`, the etcd client (the only one in production);
* :class:`hub.testing.FakeKV`, in memory, for unit tests without etcd.

``tests/support/kv_conformance.py`` is one suite both pass, so a behaviour the fake gets
wrong is a failing test, not a surprise in production.

The contract, as etcd defines it:

* one global revision, raised by one for every txn (or put, or delete) that changes
  something; every key carries ``create_revision``, ``mod_revision`` and ``version``
  (writes since its creation), and an absent key has all three 0;
* a txn's compares are checked and its branch applied atomically, at one revision; its
  ops run in order and a read sees the txn's earlier writes; a nested txn decides its own
  branch. At most :data:`MAX_TXN_OPS` operations per level (``ops + widest nested level``),
  and no key written twice (``StoreError``);
* a lease expires TTL seconds after its last grant or keep-alive, and its keys are deleted
  at one revision; revoking does the same at once;
* a watch delivers every change of its range from ``start_revision`` (inclusive), in
  revision order, at most once per stream; it raises :class:`~hub.errors.RevisionCompacted`
  when that revision is no longer kept, and answers :meth:`Watch.request_progress` with an
  empty batch (``is_progress``) carrying the current revision;
* errors are :class:`~hub.errors.StoreError` subclasses: a timeout leaves a write's
  outcome unknown, so callers re-read rather than retry it.

Not part of it: connecting and closing (the owner of a ``Store`` does that), metrics
observers, TLS and auth.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, Self

from hub.errors import StoreError
from hub.etcd.ops import Compare, Op

__all__ = [
    "KV",
    "LIST_PAGE_SIZE",
    "MAX_TXN_OPS",
    "Event",
    "KeyValue",
    "LeaseNotFound",
    "ResponseTooLarge",
    "TxnResult",
    "Watch",
    "WatchBatch",
]

#: etcd's default ``--max-txn-ops``. etcd checks a txn level against this budget and each
#: nested txn against what is left: ``outer ops + widest nested level <= 128``, where a
#: level's width is max(compares, success ops, failure ops).
MAX_TXN_OPS: Final = 128
#: Page size for prefix listings: big enough for few round trips, small enough to stay
#: well under gRPC's message limit with kilobyte-sized values.
LIST_PAGE_SIZE: Final = 2000


class LeaseNotFound(StoreError):
    """Raised when etcd says the lease named in a request does not exist (expired/revoked)."""


class ResponseTooLarge(StoreError):
    """Raised when etcd's response exceeds the channel's receive limit.

    Unlike :class:`~hub.errors.RequestTooLarge` (etcd refused the request: nothing
    happened), etcd *did* execute the request: after a write its outcome is unknown, as
    after StoreTimeout. A read can be retried in smaller parts.
    """


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key as etcd returned it."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True, slots=True)
class Event:
    """One watch event. A delete carries the key and the deleting revision."""

    key: bytes
    value: bytes
    is_delete: bool
    create_revision: int
    mod_revision: int
    lease: int


@dataclass(frozen=True, slots=True)
class WatchBatch:
    """One watch response: events (possibly none) and the header revision."""

    revision: int
    events: tuple[Event, ...]
    is_progress: bool = False


@dataclass(frozen=True, slots=True)
class TxnResult:
    """Outcome of a transaction: whether compares held, its revision, and per-op responses.

    ``responses`` holds, per executed op: for a get, a tuple of KeyValue; for a nested txn,
    a TxnResult; for a delete, the number of keys deleted; for a put, None.
    """

    succeeded: bool
    revision: int
    responses: tuple[Any, ...] = field(default=())


class Watch(Protocol):
    """One watch stream: ``async with kv.watch(...) as stream: async for batch in stream``.

    Iteration raises :class:`~hub.errors.RevisionCompacted` when the start revision is no
    longer kept, and :class:`~hub.errors.StoreUnavailable` (or another StoreError) when
    the stream breaks; leaving the ``async with`` block closes it.
    """

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, *exc: object) -> None: ...

    async def request_progress(self) -> None:
        """Ask for a progress notification (an empty batch with the current revision)."""
        ...

    def __aiter__(self) -> AsyncIterator[WatchBatch]: ...


class KV(Protocol):
    """What the hub uses of etcd; see the module docstring for the contract.

    Every call takes ``timeout`` (seconds, None: the implementation's default) and raises
    :class:`~hub.errors.StoreError` subclasses only.
    """

    async def get(self, key: bytes, *, timeout: float | None = None) -> KeyValue | None:
        """Read one key (linearizable); None if absent."""
        ...

    async def list_prefix(
        self,
        prefix: bytes,
        *,
        revision: int = 0,
        page_size: int = LIST_PAGE_SIZE,
        timeout: float | None = None,
        end: bytes | None = None,
    ) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix`` (or in ``[prefix, end)``) at one revision (0: the
        latest), in key order, and that revision. Raises RevisionCompacted."""
        ...

    async def get_many(
        self, reads: Sequence[tuple[bytes, int]], *, timeout: float | None = None
    ) -> tuple[dict[bytes, KeyValue], dict[bytes, ResponseTooLarge]]:
        """Read keys, each at its own revision (0: the latest): the keys found, and the
        keys too large to read. Absent keys are in neither. Raises RevisionCompacted."""
        ...

    async def put(
        self, key: bytes, value: bytes, *, lease: int = 0, timeout: float | None = None
    ) -> int:
        """Write one key; returns the revision. Raises LeaseNotFound."""
        ...

    async def delete(
        self, key: bytes, *, prefix: bool = False, timeout: float | None = None
    ) -> int:
        """Delete a key (or every key under the prefix ``key``); returns how many."""
        ...

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[Op],
        failure: Sequence[Op] = (),
        *,
        timeout: float | None = None,
    ) -> TxnResult:
        """Run a transaction. Never retried: after StoreTimeout the outcome is unknown."""
        ...

    async def compact(self, revision: int, *, timeout: float | None = None) -> None:
        """Forget history before ``revision``. Raises RevisionCompacted if it already is."""
        ...

    async def lease_grant(self, ttl: int, *, timeout: float | None = None) -> tuple[int, int]:
        """Grant a lease; returns (lease id, granted TTL)."""
        ...

    async def lease_keepalive(self, lease_id: int, *, timeout: float | None = None) -> int:
        """Renew a lease once; returns the remaining TTL (``<= 0``: the lease is gone)."""
        ...

    async def lease_revoke(self, lease_id: int, *, timeout: float | None = None) -> None:
        """Revoke a lease, deleting its keys at one revision; a gone lease is no error."""
        ...

    async def lease_ttl(self, lease_id: int, *, timeout: float | None = None) -> int:
        """Remaining TTL of a lease, in whole seconds; ``-1`` when it does not exist."""
        ...

    def watch(self, prefix: bytes, start_revision: int, *, end: bytes | None = None) -> Watch:
        """Watch every key under ``prefix`` (or in ``[prefix, end)``) from
        ``start_revision`` (inclusive; 0: from now on)."""
        ...
