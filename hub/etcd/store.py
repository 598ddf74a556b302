"""etcd access: the only module that imports the etcd client.

We use aetcd's generated gRPC stubs over a channel we build ourselves, because aetcd's
``Client`` offers neither TLS nor per-call deadlines. Everything etcd-specific stops here:

* one or more endpoints (``host:port``; several IP endpoints become one gRPC target
  ``ipv4:h1:p1,h2:p2`` with ``pick_first`` failover), TLS with optional client certificates,
  user/password auth with automatic re-authentication when the token expires;
* a deadline on **every** call (``request_timeout`` unless the caller passes one);
* gRPC errors translated once, in :func:`map_errors`, into :mod:`hub.errors`;
* tenacity retries, jittered and bounded, for *idempotent reads only*. A write or txn that
  timed out has an unknown outcome: callers re-read and decide, never retry blindly;
* transactions, including nested ones (``op_txn``), so independent per-key compare-and-set
  operations ride one round trip (within etcd's 128-operation budget, see MAX_TXN_OPS);
* bounded responses: a response larger than the channel accepts
  (``EtcdConfig.max_response_bytes``, 64 MiB) is :class:`ResponseTooLarge`. Writes never
  read values back (their responses stay small); reads of values go through
  :meth:`Store.get_many` and :meth:`Store.list_prefix`, which size their requests to fit
  and split what still does not — reads are idempotent, so that is safe;
* watch streams with explicit progress requests, so a silent partition is noticed.

Ownership: a :class:`Store` belongs to one Hub; it is used from one event loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
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

from hub.errors import (
    ConfigError,
    RequestTooLarge,
    RevisionCompacted,
    StoreAuthError,
    StoreError,
    StoreTimeout,
    StoreUnavailable,
)
from hub.etcd.keys import prefix_end
from hub.logs import get_logger

log = get_logger("hub.etcd.store")

#: etcd's default ``--max-txn-ops``. etcd checks a txn level against this budget and each
#: nested txn against what is left: ``outer ops + widest nested level <= 128``, where a
#: level's width is max(compares, success ops, failure ops).
MAX_TXN_OPS: Final = 128
#: Page size for prefix listings: big enough for few round trips, small enough to stay
#: well under gRPC's message limit with kilobyte-sized values.
LIST_PAGE_SIZE: Final = 2000
#: Read retries: three attempts, 50 ms to 1 s jittered, for transient unavailability only.
READ_ATTEMPTS: Final = 3
#: Default gRPC receive limit of the etcd channel: the largest response a node accepts. It
#: bounds the memory one reply can take (protobuf decoding about doubles it) and holds 42
#: values of etcd's default maximum size. A larger reply fails as ResponseTooLarge and is
#: never half-read.
DEFAULT_MAX_RESPONSE_BYTES: Final = 64 * 1024 * 1024
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


class LeaseNotFound(StoreError):
    """Raised when etcd says the lease named in a request does not exist (expired/revoked)."""


class ResponseTooLarge(StoreError):
    """Raised when etcd's response exceeds the channel's receive limit.

    Unlike :class:`~hub.errors.RequestTooLarge` (etcd refused the request: nothing
    happened), etcd *did* execute the request: after a write its outcome is unknown, as
    after StoreTimeout. A read can be retried in smaller parts.
    """


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """TLS for the etcd connection. ``cert_file``/``key_file`` enable client-cert auth."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None  # override the name checked in the server certificate

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: str | None) -> bytes | None:
            if path is None:
                return None
            with open(path, "rb") as fh:
                return fh.read()

        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("TLS cert_file and key_file must be given together")
        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca_file),
            private_key=read(self.key_file),
            certificate_chain=read(self.cert_file),
        )


def _is_host_port(endpoint: str) -> bool:
    """``host:port`` with a port in 1..65535; an IPv6 host in brackets; no scheme or path."""
    host, sep, port = endpoint.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        return False
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        return bool(host) and all(c in "0123456789abcdefABCDEF:." for c in host)
    return bool(host) and not any(c.isspace() or c in "/@[]:" for c in host)


@dataclass(frozen=True, slots=True)
class EtcdConfig:
    """How to reach etcd.

    Args:
        endpoints: ``host:port`` strings. Several endpoints must be IP addresses (gRPC
            multi-address target); a single endpoint may be a DNS name.
        tls: TLS settings; None for plaintext.
        username, password: etcd auth; both or neither.
        request_timeout: deadline of every unary call, seconds.
        keepalive_time: gRPC keepalive ping interval, seconds (etcd refuses pings more
            often than every 5 s by default).
        max_response_bytes: the channel's receive limit, the largest etcd response this
            client accepts (see DEFAULT_MAX_RESPONSE_BYTES); at least 1 MiB.
    """

    endpoints: tuple[str, ...] = ("127.0.0.1:2379",)
    tls: TlsConfig | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in logs or reprs
    request_timeout: float = 5.0
    keepalive_time: float = 10.0
    keepalive_timeout: float = 5.0
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES

    def __post_init__(self) -> None:
        if isinstance(self.endpoints, str):
            object.__setattr__(self, "endpoints", tuple(self.endpoints.split(",")))
        eps = tuple(e.strip() for e in self.endpoints if e.strip())
        if not eps:
            raise ConfigError("at least one etcd endpoint is required")
        for ep in eps:
            if not _is_host_port(ep):
                raise ConfigError(f"etcd endpoint {ep!r} must look like host:port")
        object.__setattr__(self, "endpoints", eps)
        self.target()  # several endpoints: IP addresses of one family (ConfigError)
        if (self.username is None) != (self.password is None):
            raise ConfigError("etcd username and password must be given together")
        if self.request_timeout <= 0:
            raise ConfigError("request_timeout must be > 0")
        if not isinstance(self.max_response_bytes, int) or self.max_response_bytes < 1024 * 1024:
            raise ConfigError("max_response_bytes must be an int of at least 1 MiB (1048576)")

    def target(self) -> str:
        """The gRPC target string for these endpoints."""
        if len(self.endpoints) == 1:
            host, _, port = self.endpoints[0].rpartition(":")
            return f"{host.strip('[]')}:{port}" if ":" not in host.strip("[]") else f"{host}:{port}"
        hosts = []
        family = None
        for ep in self.endpoints:
            host, _, port = ep.rpartition(":")
            try:
                addr = ipaddress.ip_address(host.strip("[]"))
            except ValueError:
                raise ConfigError(
                    "several etcd endpoints must be IP addresses; use one DNS name instead"
                ) from None
            fam = "ipv4" if addr.version == 4 else "ipv6"
            if family not in (None, fam):
                raise ConfigError("etcd endpoints mix IPv4 and IPv6")
            family = fam
            hosts.append(f"{addr}:{port}" if fam == "ipv4" else f"[{addr}]:{port}")
        return f"{family}:{','.join(hosts)}"


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


# ---------------------------------------------------------------------------------------
# Request builders (protobuf messages stay inside this module's callers' opaque values)

Compare = Any
Op = Any


def cmp_create(key: bytes, op: str, revision: int) -> Compare:
    """Compare a key's create_revision (0 means absent). ``op`` is one of = != < >."""
    return _compare(key, rpc.Compare.CREATE, op, create_revision=revision)


def cmp_mod(key: bytes, op: str, revision: int) -> Compare:
    """Compare a key's mod_revision."""
    return _compare(key, rpc.Compare.MOD, op, mod_revision=revision)


def cmp_version(key: bytes, op: str, version: int) -> Compare:
    """Compare a key's version (0 means absent)."""
    return _compare(key, rpc.Compare.VERSION, op, version=version)


def cmp_value(key: bytes, op: str, value: bytes) -> Compare:
    """Compare a key's value."""
    return _compare(key, rpc.Compare.VALUE, op, value=value)


_OPS = {
    "=": rpc.Compare.EQUAL,
    "!=": rpc.Compare.NOT_EQUAL,
    "<": rpc.Compare.LESS,
    ">": rpc.Compare.GREATER,
}


def _compare(key: bytes, target: Any, op: str, **value: Any) -> Compare:
    return rpc.Compare(key=key, target=target, result=_OPS[op], **value)


def op_put(key: bytes, value: bytes, lease: int = 0) -> Op:
    """A put inside a txn."""
    return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value, lease=lease))


def op_delete(key: bytes, *, prefix: bool = False) -> Op:
    """A delete (of a key, or of a prefix) inside a txn."""
    end = prefix_end(key) if prefix else b""
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key, range_end=end))


def op_get(key: bytes, *, keys_only: bool = False, revision: int = 0) -> Op:
    """A read of one key inside a txn: at ``revision`` (0: the txn's), without its value
    with ``keys_only`` (a write txn learns whether a key exists, not a reply of unknown
    size)."""
    return rpc.RequestOp(
        request_range=rpc.RangeRequest(key=key, keys_only=keys_only, revision=revision)
    )


def op_width(op: Op) -> int:
    """How much of etcd's per-txn operation budget a nested txn needs (see MAX_TXN_OPS)."""
    if op.WhichOneof("request") != "request_txn":
        return 0
    txn = op.request_txn
    return max(len(txn.compare), len(txn.success), len(txn.failure))


def op_txn(compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()) -> Op:
    """A nested txn: independent compare-and-set for one key inside a bigger txn."""
    return rpc.RequestOp(
        request_txn=rpc.TxnRequest(compare=compares, success=success, failure=failure)
    )


# ---------------------------------------------------------------------------------------
# Error translation: the one place gRPC status codes become hub errors

_CODE_TO_ERROR: dict[grpc.StatusCode, type[StoreError]] = {
    grpc.StatusCode.UNAVAILABLE: StoreUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: StoreTimeout,
    grpc.StatusCode.UNAUTHENTICATED: StoreAuthError,
    grpc.StatusCode.PERMISSION_DENIED: StoreAuthError,
    grpc.StatusCode.CANCELLED: StoreUnavailable,
}


#: etcd reports most auth failures as INVALID_ARGUMENT (wrong password, no user name) or in
#: a watch's cancel reason, so they are recognised by their message.
_AUTH_FAILURES: Final = (
    "authentication failed",
    "user name is empty",
    "invalid auth token",
    "permission denied",
    "revision of auth store is old",
)


def _is_auth_failure(details: str) -> bool:
    return any(fragment in details for fragment in _AUTH_FAILURES)


def translate(exc: grpc.aio.AioRpcError) -> StoreError:
    """Map a gRPC error to the most specific hub error."""
    code = exc.code()
    details = exc.details() or ""
    if _is_auth_failure(details):
        return StoreAuthError(f"etcd {code.name}: {details}")
    if "lease not found" in details:
        return LeaseNotFound(details)
    if "required revision has been compacted" in details:
        return RevisionCompacted(0)
    if "Received message larger than max" in details:
        # gRPC's own client-side check (etcd's server says "received", lower case): the
        # request was executed, its reply did not fit our receive limit.
        return ResponseTooLarge(details)
    if "too large" in details or "larger than max" in details:
        return RequestTooLarge(details)
    cls = _CODE_TO_ERROR.get(code, StoreError)
    return cls(f"etcd {code.name}: {details}")


@contextmanager
def map_errors() -> Iterator[None]:
    """Re-raise gRPC errors and local timeouts as hub errors, ``from`` the original."""
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        raise translate(exc) from exc
    except TimeoutError as exc:
        raise StoreTimeout("etcd call timed out") from exc


def _kv(kv: Any) -> KeyValue:
    return KeyValue(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)


# ---------------------------------------------------------------------------------------


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
                ops = [op_get(key, revision=revision) for key, revision in group]
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
        req = rpc.TxnRequest(compare=compares, success=success, failure=failure)
        resp = await self._unary(self._kv.Txn, req, timeout)
        return _txn_result(resp, resp.header.revision)

    async def compact(self, revision: int, *, timeout: float | None = None) -> None:
        """Compact history up to ``revision`` (used by tests and operators)."""
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
        return WatchStream(self._watch, self._metadata, prefix, start_revision, reauth, end)


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


class WatchStream:
    """One etcd watch over a prefix, as an async iterator of :class:`WatchBatch`.

    Raises RevisionCompacted when etcd cancels the watch because the start revision was
    compacted, StoreAuthError when it refuses our token (etcd checks it only when a watch
    is created, so an expired one surfaces here; ``reauth`` fetches a fresh token for the
    next watch), StoreUnavailable when the stream breaks. ``request_progress()`` asks etcd
    for a progress notification; :class:`hub.etcd.informer.Informer` uses it to notice a silent
    partition.
    """

    def __init__(
        self,
        stub: Any,
        metadata: Any,
        prefix: bytes,
        start_revision: int,
        reauth: Callable[[], Awaitable[None]] | None = None,
        end: bytes | None = None,
    ) -> None:
        self._stub = stub
        self._end = end if end is not None else prefix_end(prefix)
        self._reauth = reauth
        self._metadata = metadata
        self._prefix = prefix
        self._start = start_revision
        self._call: Any = None

    async def __aenter__(self) -> WatchStream:
        self._call = self._stub.Watch(metadata=self._metadata)
        create = rpc.WatchCreateRequest(
            key=self._prefix,
            range_end=self._end,
            start_revision=self._start,
            progress_notify=True,
        )
        with map_errors():
            await self._call.write(rpc.WatchRequest(create_request=create))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None

    async def request_progress(self) -> None:
        """Ask etcd to send a progress notification (an empty batch with the revision)."""
        if self._call is not None:
            with map_errors():
                await self._call.write(
                    rpc.WatchRequest(progress_request=rpc.WatchProgressRequest())
                )

    def __aiter__(self) -> AsyncIterator[WatchBatch]:
        return self._batches()

    async def _batches(self) -> AsyncIterator[WatchBatch]:
        put = rpc.Event.PUT
        while True:
            with map_errors():
                resp = await self._call.read()
            if resp is grpc.aio.EOF:
                raise StoreUnavailable("watch stream ended")
            if resp.compact_revision:
                raise RevisionCompacted(int(resp.compact_revision))
            if resp.canceled and _is_auth_failure(resp.cancel_reason):
                if self._reauth is not None:
                    await self._reauth()
                raise StoreAuthError(f"watch refused by etcd: {resp.cancel_reason}")
            if resp.canceled:
                raise StoreUnavailable(f"watch canceled by etcd: {resp.cancel_reason}")
            if resp.created and not resp.events:
                continue
            events = tuple(
                Event(
                    ev.kv.key,
                    ev.kv.value,
                    ev.type != put,
                    ev.kv.create_revision,
                    ev.kv.mod_revision,
                    ev.kv.lease,
                )
                for ev in resp.events
            )
            yield WatchBatch(int(resp.header.revision), events, is_progress=not events)
