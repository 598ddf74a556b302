"""etcd access: the etcd client behind the :class:`~hub.etcd.kv.KV` seam.

The only module that imports the etcd client. We use aetcd's generated gRPC stubs over a
channel we build ourselves, because aetcd's ``Client`` offers neither TLS nor per-call
deadlines. Everything etcd-specific stops here:

* one or more endpoints (``host:port``; several IP endpoints become one gRPC target
  ``ipv4:h1:p1,h2:p2`` with ``pick_first`` failover), TLS with optional client certificates,
  user/password auth with automatic re-authentication when the token expires (settings:
  :mod:`hub.etcd.connection`);
* a deadline on **every** call (``request_timeout`` unless the caller passes one);
* gRPC errors translated once, by :func:`~hub.etcd.error_map.map_errors`, into
  :mod:`hub.errors`;
* tenacity retries, jittered and bounded, for *idempotent reads only*. A write or txn that
  timed out has an unknown outcome: callers re-read and decide, never retry blindly;
* transactions, including nested ones (:func:`~hub.etcd.ops.op_txn`), so independent
  per-key compare-and-set operations ride one round trip (within etcd's 128-operation
  budget, see MAX_TXN_OPS); the plain ops of :mod:`hub.etcd.ops` become protobufs here;
* bounded responses: a response larger than the channel accepts
  (``EtcdConfig.max_response_bytes``, 64 MiB) is :class:`ResponseTooLarge`. Writes never
  read values back (their responses stay small); reads of values go through
  :meth:`Store.get_many` and :meth:`Store.list_prefix`, which size their requests to fit
  and split what still does not — reads are idempotent, so that is safe;
* watch streams with explicit progress requests, so a silent partition is noticed.

The names other modules have always imported from here (configs, records, ops, errors)
are re-exported; new code imports them from where they live.

Ownership: a :class:`Store` belongs to one Hub; it is used from one event loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import grpc
import grpc.aio
from aetcd import rpc
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from hub.errors import StoreAuthError, StoreError, StoreUnavailable
from hub.etcd.connection import DEFAULT_MAX_RESPONSE_BYTES, EtcdConfig, TlsConfig
from hub.etcd.error_map import map_errors, translate
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
from hub.etcd.ops import (
    Compare,
    Delete,
    Get,
    Op,
    Put,
    Txn,
    cmp_create,
    cmp_mod,
    cmp_value,
    cmp_version,
    op_delete,
    op_get,
    op_put,
    op_txn,
    op_width,
)
from hub.etcd.watch import WatchStream
from hub.logs import get_logger

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "LIST_PAGE_SIZE",
    "MAX_SEND_BYTES",
    "MAX_TXN_OPS",
    "PLANNED_VALUE_BYTES",
    "READ_ATTEMPTS",
    "READ_CONCURRENCY",
    "READ_OVERHEAD_BYTES",
    "RESPONSE_HEADER_BYTES",
    "Compare",
    "EtcdConfig",
    "Event",
    "KeyValue",
    "LeaseNotFound",
    "Op",
    "ResponseTooLarge",
    "Store",
    "TlsConfig",
    "TxnResult",
    "WatchBatch",
    "WatchStream",
    "cmp_create",
    "cmp_mod",
    "cmp_value",
    "cmp_version",
    "map_errors",
    "op_delete",
    "op_get",
    "op_put",
    "op_txn",
    "op_width",
    "translate",
]

log = get_logger("hub.etcd.store")

#: Read retries: three attempts, 50 ms to 1 s jittered, for transient unavailability only.
READ_ATTEMPTS: Final = 3
#: gRPC send limit: above etcd's own request limit, so etcd is the one that refuses.
MAX_SEND_BYTES: Final = 64 * 1024 * 1024
#: The value size :meth:`Store.get_many` plans a read txn for. Planning for etcd's maximum
#: (1.5 MiB) would read only 42 states per round trip when most are a few KiB, which slowed
#: hot-swap moves by a third; values larger than this on average make a reply too large,
#: which is cheap (gRPC refuses it by its length prefix) and is read again in halves.
PLANNED_VALUE_BYTES: Final = 256 * 1024
#: Read txns :meth:`Store.get_many` keeps in flight at once.
READ_CONCURRENCY: Final = 4
#: Per-key allowance on top of key and value in a read response (revisions, framing).
READ_OVERHEAD_BYTES: Final = 64
#: Room for the response header of a read.
RESPONSE_HEADER_BYTES: Final = 64 * 1024


# -- the plain values of hub.etcd.ops and hub.etcd.kv, to and from etcd's protobufs -------

_TARGETS = {
    "create": rpc.Compare.CREATE,
    "mod": rpc.Compare.MOD,
    "version": rpc.Compare.VERSION,
    "value": rpc.Compare.VALUE,
}
_OPERAND_FIELDS = {
    "create": "create_revision",
    "mod": "mod_revision",
    "version": "version",
    "value": "value",
}
_RESULTS = {
    "=": rpc.Compare.EQUAL,
    "!=": rpc.Compare.NOT_EQUAL,
    "<": rpc.Compare.LESS,
    ">": rpc.Compare.GREATER,
}


def _pb_compare(c: Compare) -> Any:
    target = c.target
    if target == "create":  # the hot path: every acquire and fenced write
        return rpc.Compare(
            key=c.key, target=rpc.Compare.CREATE, result=_RESULTS[c.op], create_revision=c.operand
        )
    operand = {_OPERAND_FIELDS[target]: c.operand}
    return rpc.Compare(key=c.key, target=_TARGETS[target], result=_RESULTS[c.op], **operand)


def _pb_op(op: Op) -> Any:
    if isinstance(op, Put):
        return rpc.RequestOp(request_put=rpc.PutRequest(key=op.key, value=op.value, lease=op.lease))
    if isinstance(op, Delete):
        return rpc.RequestOp(
            request_delete_range=rpc.DeleteRangeRequest(key=op.key, range_end=op.end)
        )
    if isinstance(op, Get):
        return rpc.RequestOp(
            request_range=rpc.RangeRequest(key=op.key, keys_only=op.keys_only, revision=op.revision)
        )
    if isinstance(op, Txn):
        return rpc.RequestOp(request_txn=_pb_txn(op.compares, op.success, op.failure))
    raise TypeError(f"not a txn operation: {op!r}")


def _pb_txn(compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op]) -> Any:
    return rpc.TxnRequest(
        compare=[_pb_compare(c) for c in compares],
        success=[_pb_op(op) for op in success],
        failure=[_pb_op(op) for op in failure],
    )


def _kv(kv: Any) -> KeyValue:
    return KeyValue(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)


class Store:
    """An etcd connection with deadlines, error mapping and retries.

    Use as ``async with Store(config) as store:``. Methods raise :class:`StoreError`
    subclasses; they never leak gRPC exceptions.
    """

    def __init__(self, config: EtcdConfig) -> None:
        self.config = config
        self._channel: grpc.aio.Channel | None = None
        self._metadata: tuple[tuple[str, str], ...] | None = None
        self._kv: Any = None
        self._lease: Any = None
        self._watch: Any = None
        self._auth: Any = None
        self._auth_lock = asyncio.Lock()
        #: called after every unary etcd call: (method, seconds, error class name or None)
        self.observer: Callable[[str, float, str | None], None] | None = None

    async def __aenter__(self) -> Store:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def timeout(self) -> float:
        return self.config.request_timeout

    async def connect(self) -> None:
        """Open the channel and authenticate if credentials are configured.

        Connection itself is lazy in gRPC; the first call surfaces unreachable endpoints.
        """
        cfg = self.config
        options: list[tuple[str, Any]] = [
            ("grpc.keepalive_time_ms", int(cfg.keepalive_time * 1000)),
            ("grpc.keepalive_timeout_ms", int(cfg.keepalive_timeout * 1000)),
            # etcd's server policy refuses pings without an active stream (GOAWAY
            # "too_many_pings"); a node always has its watch open, which is what matters.
            ("grpc.keepalive_permit_without_calls", 0),
            ("grpc.max_receive_message_length", cfg.max_response_bytes),
            ("grpc.max_send_message_length", MAX_SEND_BYTES),
            # Reconnect quickly after etcd restarts: the default backoff grows to 120 s.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        target = cfg.target()
        if cfg.tls is not None:
            if cfg.tls.server_name:
                options.append(("grpc.ssl_target_name_override", cfg.tls.server_name))
            self._channel = grpc.aio.secure_channel(target, cfg.tls.credentials(), options)
        else:
            self._channel = grpc.aio.insecure_channel(target, options)
        self._kv = rpc.KVStub(self._channel)
        self._lease = rpc.LeaseStub(self._channel)
        self._watch = rpc.WatchStub(self._channel)
        self._auth = rpc.AuthStub(self._channel)
        if cfg.username is not None:
            await self._authenticate()

    async def close(self) -> None:
        """Close the channel; in-flight calls fail with StoreUnavailable."""
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close(grace=None)

    async def _authenticate(self) -> None:
        cfg = self.config
        async with self._auth_lock:
            with map_errors():
                resp = await self._auth.Authenticate(
                    rpc.AuthenticateRequest(name=cfg.username, password=cfg.password),
                    timeout=self.timeout,
                )
            self._metadata = (("token", resp.token),)

    async def _unary(self, method: Any, request: Any, timeout: float | None) -> Any:
        """Call a unary RPC with a deadline; report it to ``observer`` (metrics)."""
        observer = self.observer
        if observer is None:
            return await self._unary_call(method, request, timeout)
        began = time.monotonic()
        error: str | None = None
        try:
            return await self._unary_call(method, request, timeout)
        except StoreError as exc:
            error = type(exc).__name__
            raise
        finally:
            name = getattr(method, "_method", b"/?").decode(errors="replace").rsplit("/", 1)[-1]
            with contextlib.suppress(Exception):
                observer(name, time.monotonic() - began, error)

    async def _unary_call(self, method: Any, request: Any, timeout: float | None) -> Any:
        """Call a unary RPC with a deadline; re-authenticate once on an expired token."""
        if self._channel is None:
            raise StoreUnavailable("store is closed")
        deadline = timeout if timeout is not None else self.timeout
        try:
            with map_errors():
                return await method(request, timeout=deadline, metadata=self._metadata)
        except StoreAuthError:
            if self.config.username is None:
                raise
            await self._authenticate()
            with map_errors():
                return await method(request, timeout=deadline, metadata=self._metadata)

    async def _read(self, method: Any, request: Any, timeout: float | None) -> Any:
        """Idempotent read: retried on transient unavailability."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(StoreUnavailable),
            stop=stop_after_attempt(READ_ATTEMPTS),
            wait=wait_random_exponential(multiplier=0.05, max=1.0),
            reraise=True,
        ):
            with attempt:
                return await self._unary(method, request, timeout)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- KV ------------------------------------------------------------------------------

    async def get(self, key: bytes, *, timeout: float | None = None) -> KeyValue | None:
        """Read one key (linearizable)."""
        resp = await self._read(self._kv.Range, rpc.RangeRequest(key=key), timeout)
        return _kv(resp.kvs[0]) if resp.kvs else None

    async def list_prefix(
        self,
        prefix: bytes,
        *,
        revision: int = 0,
        page_size: int = LIST_PAGE_SIZE,
        timeout: float | None = None,
        end: bytes | None = None,
    ) -> tuple[list[KeyValue], int]:
        """Read every key under ``prefix`` (or in ``[prefix, end)``) at one revision, in pages.

        Returns the keys and the revision they reflect. Raises RevisionCompacted if
        ``revision`` is older than etcd keeps. A page too large for the channel is asked
        for again with half as many keys (big values would otherwise fail every relist);
        ResponseTooLarge only if a single key does not fit.
        """
        end = end if end is not None else prefix_end(prefix)
        start = prefix
        out: list[KeyValue] = []
        pinned = revision
        while True:
            req = rpc.RangeRequest(key=start, range_end=end, limit=page_size, revision=pinned)
            try:
                resp = await self._read(self._kv.Range, req, timeout)
            except ResponseTooLarge:
                if page_size == 1:
                    raise
                page_size //= 2
                continue
            if pinned == 0:
                pinned = resp.header.revision
            out.extend(_kv(kv) for kv in resp.kvs)
            if not resp.more or not resp.kvs:
                return out, pinned
            start = resp.kvs[-1].key + b"\0"

    async def get_many(
        self, reads: Sequence[tuple[bytes, int]], *, timeout: float | None = None
    ) -> tuple[dict[bytes, KeyValue], dict[bytes, ResponseTooLarge]]:
        """Read keys, each at its own revision (0: the latest), in few read-only txns.

        Each txn asks for as many keys as fit the receive limit if every value had
        PLANNED_VALUE_BYTES, and up to READ_CONCURRENCY txns are in flight. A reply that is
        too large is read again in halves (reads are idempotent), down to one key; a key
        that alone does not fit is returned in the second dict, so it cannot keep the
        others from being read. Absent keys are absent from both dicts.

        Raises:
            RevisionCompacted: a revision is older than etcd keeps.
            StoreError: etcd failed otherwise (unavailability is retried, as for reads).
        """
        budget = self.config.max_response_bytes - RESPONSE_HEADER_BYTES
        groups: list[list[tuple[bytes, int]]] = []
        size = 0
        for key, revision in dict.fromkeys(reads):  # a key twice at one revision: once
            need = len(key) + PLANNED_VALUE_BYTES + READ_OVERHEAD_BYTES
            if not groups or size + need > budget or len(groups[-1]) >= MAX_TXN_OPS:
                groups.append([])
                size = 0
            groups[-1].append((key, revision))
            size += need
        found: dict[bytes, KeyValue] = {}
        too_large: dict[bytes, ResponseTooLarge] = {}
        pending = collections.deque(groups)  # read in the order given

        async def reader() -> None:
            while pending:
                group = pending.popleft()
                ops = [_pb_op(op_get(key, revision=revision)) for key, revision in group]
                try:
                    resp = await self._read(self._kv.Txn, rpc.TxnRequest(success=ops), timeout)
                except ResponseTooLarge as exc:
                    if len(group) == 1:
                        too_large[group[0][0]] = exc
                    else:
                        half = len(group) // 2
                        pending.extendleft((group[half:], group[:half]))
                    continue
                for response in resp.responses:
                    for kv in response.response_range.kvs:
                        found[kv.key] = _kv(kv)

        try:
            async with asyncio.TaskGroup() as tg:
                for _ in range(min(READ_CONCURRENCY, len(pending))):
                    tg.create_task(reader())
        except BaseExceptionGroup as group_error:  # one reader's error, as a single read's
            raise group_error.exceptions[0] from None
        return found, too_large

    async def count_prefix(self, prefix: bytes, *, timeout: float | None = None) -> int:
        """Count keys under a prefix without transferring them."""
        req = rpc.RangeRequest(key=prefix, range_end=prefix_end(prefix), count_only=True)
        resp = await self._read(self._kv.Range, req, timeout)
        return int(resp.count)

    async def put(
        self, key: bytes, value: bytes, *, lease: int = 0, timeout: float | None = None
    ) -> int:
        """Write one key; returns the revision. Not retried."""
        req = rpc.PutRequest(key=key, value=value, lease=lease)
        resp = await self._unary(self._kv.Put, req, timeout)
        return int(resp.header.revision)

    async def delete(
        self, key: bytes, *, prefix: bool = False, timeout: float | None = None
    ) -> int:
        """Delete a key (or prefix); returns the number of keys deleted."""
        end = prefix_end(key) if prefix else b""
        resp = await self._unary(
            self._kv.DeleteRange, rpc.DeleteRangeRequest(key=key, range_end=end), timeout
        )
        return int(resp.deleted)

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[Op],
        failure: Sequence[Op] = (),
        *,
        timeout: float | None = None,
    ) -> TxnResult:
        """Run a transaction. Never retried: after StoreTimeout the outcome is unknown."""
        req = _pb_txn(compares, success, failure)
        resp = await self._unary(self._kv.Txn, req, timeout)
        return _txn_result(resp, resp.header.revision)

    async def compact(self, revision: int, *, timeout: float | None = None) -> None:
        """Forget history before ``revision`` (used by tests and operators).

        Raises:
            RevisionCompacted: ``revision`` is already compacted.
            StoreError: ``revision`` is in the future.
        """
        await self._unary(self._kv.Compact, rpc.CompactionRequest(revision=revision), timeout)

    # -- leases --------------------------------------------------------------------------

    async def lease_grant(self, ttl: int, *, timeout: float | None = None) -> tuple[int, int]:
        """Grant a lease; returns (lease id, granted TTL)."""
        resp = await self._unary(self._lease.LeaseGrant, rpc.LeaseGrantRequest(TTL=ttl), timeout)
        if resp.error:
            raise StoreError(f"lease grant refused: {resp.error}")
        return int(resp.ID), int(resp.TTL)

    async def lease_keepalive(self, lease_id: int, *, timeout: float | None = None) -> int:
        """Renew a lease once; returns the remaining TTL (``<= 0`` means the lease is gone)."""
        if self._channel is None:
            raise StoreUnavailable("store is closed")
        deadline = timeout if timeout is not None else self.timeout
        with map_errors():
            async with asyncio.timeout(deadline):
                call = self._lease.LeaseKeepAlive(
                    iter([rpc.LeaseKeepAliveRequest(ID=lease_id)]),
                    timeout=deadline,
                    metadata=self._metadata,
                )
                try:
                    async for resp in call:
                        return int(resp.TTL)
                finally:
                    call.cancel()
        return 0

    async def lease_revoke(self, lease_id: int, *, timeout: float | None = None) -> None:
        """Revoke a lease: etcd deletes every key attached to it in one revision."""
        try:
            await self._unary(self._lease.LeaseRevoke, rpc.LeaseRevokeRequest(ID=lease_id), timeout)
        except LeaseNotFound:
            pass

    async def lease_ttl(self, lease_id: int, *, timeout: float | None = None) -> int:
        """Remaining TTL of a lease as etcd sees it (``-1`` when it does not exist)."""
        resp = await self._read(
            self._lease.LeaseTimeToLive, rpc.LeaseTimeToLiveRequest(ID=lease_id), timeout
        )
        return int(resp.TTL)

    # -- watch ---------------------------------------------------------------------------

    def watch(self, prefix: bytes, start_revision: int, *, end: bytes | None = None) -> WatchStream:
        """Watch every key under ``prefix`` (or in ``[prefix, end)``) from ``start_revision``
        (inclusive)."""
        if self._channel is None:
            raise StoreUnavailable("store is closed")
        reauth = self._authenticate if self.config.username is not None else None
        create = rpc.WatchCreateRequest(
            key=prefix,
            range_end=end if end is not None else prefix_end(prefix),
            start_revision=start_revision,
            progress_notify=True,
        )
        return WatchStream(
            self._watch.Watch,
            self._metadata,
            rpc.WatchRequest(create_request=create),
            rpc.WatchRequest(progress_request=rpc.WatchProgressRequest()),
            reauth,
        )


def _txn_result(resp: Any, revision: int) -> TxnResult:
    out: list[Any] = []
    for r in resp.responses:
        kind = r.WhichOneof("response")
        if kind == "response_range":
            out.append(tuple(_kv(kv) for kv in r.response_range.kvs))
        elif kind == "response_txn":
            out.append(_txn_result(r.response_txn, revision))
        elif kind == "response_delete_range":
            out.append(int(r.response_delete_range.deleted))
        else:
            out.append(None)
    return TxnResult(bool(resp.succeeded), int(revision), tuple(out))


#: Store keeps to the KV seam (checked by mypy).
_STORE_IS_A_KV: type[KV] = Store
