"""hub.etcd.store against a real etcd: KV, txns, the batcher's budget, errors, leases, auth, TLS."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import grpc
import grpc.aio
import pytest
from aetcd import rpc
from support.certs import Pki, make_pki
from support.proxy import TcpProxy
from support.wait import wait_until

from hub.errors import (
    ConfigError,
    RequestTooLarge,
    StoreAuthError,
    StoreError,
    StoreTimeout,
    StoreUnavailable,
)
from hub.etcd.batcher import TxnBatcher
from hub.etcd.informer import Informer
from hub.etcd.store import (
    MAX_TXN_OPS,
    READ_ATTEMPTS,
    EtcdConfig,
    Event,
    KeyValue,
    Store,
    TlsConfig,
    TxnResult,
    cmp_create,
    cmp_mod,
    cmp_value,
    cmp_version,
    op_delete,
    op_get,
    op_put,
    op_txn,
)
from hub.operate.localetcd import LocalEtcd, LocalTls

pytestmark = pytest.mark.etcd

PASSWORD = "s3cret-root"
#: etcd's simple-token TTL for the auth tests (``--auth-token-ttl``), seconds.
TOKEN_TTL = 2


# ----------------------------------------------------------------------------- helpers


def k(prefix: str, name: str) -> bytes:
    return f"{prefix}/{name}".encode()


def closed_port() -> int:
    """A loopback port nothing listens on (bound a moment ago, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ip_endpoint(endpoint: str) -> str:
    """``endpoint`` with its host resolved to an IPv4 address (multi-address targets)."""
    host, _, port = endpoint.rpartition(":")
    return f"{socket.gethostbyname(host)}:{port}"


@contextlib.asynccontextmanager
async def running(coro: Coroutine[Any, Any, None]) -> AsyncIterator[asyncio.Task[None]]:
    """Run ``coro`` as a task for the body of the block, then cancel and await it."""
    task = asyncio.create_task(coro)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def elapsed_of(awaitable: Awaitable[Any]) -> tuple[float, BaseException | None]:
    """Await ``awaitable``; return how long it took and what it raised (None if nothing)."""
    start = time.monotonic()
    try:
        await awaitable
    except Exception as exc:
        return time.monotonic() - start, exc
    return time.monotonic() - start, None


class CountingStub:
    """Wraps a gRPC stub, counting calls per method and running a hook before each one."""

    def __init__(self, stub: Any, before: Callable[[str, int], Awaitable[None]] | None = None):
        self._stub = stub
        self._before = before
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            n = self.calls.get(name, 0)
            self.calls[name] = n + 1
            if self._before is not None:
                await self._before(name, n)
            return await method(*args, **kwargs)

        return call


def no_etcd(reason: str) -> NoReturn:
    if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}:
        pytest.fail(f"etcd required under CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
async def store(etcd_endpoint: str) -> AsyncIterator[Store]:
    async with Store(EtcdConfig(endpoints=(etcd_endpoint,), request_timeout=3.0)) as s:
        yield s


# ------------------------------------------------------------------------------- KV


async def test_put_get_delete(no_leaked_tasks: None, store: Store, hub_prefix: str) -> None:
    key = k(hub_prefix, "a")
    assert await store.get(key) is None
    rev1 = await store.put(key, b"one")
    got = await store.get(key)
    assert got is not None
    assert (got.value, got.create_revision, got.mod_revision, got.version) == (
        b"one",
        rev1,
        rev1,
        1,
    )
    rev2 = await store.put(key, b"two")
    assert rev2 > rev1
    got = await store.get(key)
    assert got is not None and (got.value, got.create_revision, got.version) == (b"two", rev1, 2)
    assert await store.delete(key) == 1
    assert await store.delete(key) == 0
    assert await store.get(key) is None


async def test_delete_prefix_returns_count(
    no_leaked_tasks: None, store: Store, hub_prefix: str
) -> None:
    for i in range(5):
        await store.put(k(hub_prefix, f"d/{i}"), b"x")
    await store.put(k(hub_prefix, "e"), b"other")
    assert await store.delete(k(hub_prefix, "d/"), prefix=True) == 5
    assert await store.count_prefix(k(hub_prefix, "d/")) == 0
    assert await store.count_prefix(k(hub_prefix, "")) == 1


async def test_count_prefix(no_leaked_tasks: None, store: Store, hub_prefix: str) -> None:
    for i in range(12):
        await store.put(k(hub_prefix, f"c/{i:02}"), b"x" * i)
    await store.put(k(hub_prefix, "cx"), b"sibling, not under c/")
    assert await store.count_prefix(k(hub_prefix, "c/")) == 12
    assert await store.count_prefix(k(hub_prefix, "nothing/")) == 0


async def test_list_prefix_pages_at_one_revision_under_concurrent_writes(
    no_leaked_tasks: None, etcd_endpoint: str, store: Store, hub_prefix: str
) -> None:
    prefix = k(hub_prefix, "p/")
    initial = {k(hub_prefix, f"p/{i:03}"): f"v{i}".encode() for i in range(25)}
    for key, value in initial.items():
        await store.put(key, value)
    async with Store(EtcdConfig(endpoints=(etcd_endpoint,))) as writer:
        writes: list[int] = []

        async def write_between_pages(method: str, n: int) -> None:
            # Before every page but the first, change the prefix behind the lister's back:
            # a key already listed, a key not yet listed, a new key, a deleted key.
            if method != "Range" or n == 0:
                return
            writes.append(await writer.put(k(hub_prefix, "p/000"), b"changed"))
            writes.append(await writer.put(k(hub_prefix, "p/024"), b"changed"))
            writes.append(await writer.put(k(hub_prefix, f"p/{100 + n}"), b"new"))
            await writer.delete(k(hub_prefix, f"p/{10 + n:03}"))

        stub = store._kv
        store._kv = counting = CountingStub(stub, write_between_pages)
        try:
            kvs, revision = await store.list_prefix(prefix, page_size=4)
        finally:
            store._kv = stub

    assert counting.calls["Range"] == 7  # 25 keys in pages of 4: more than 3 pages
    assert writes and min(writes) > revision  # the writes really raced the listing
    assert {kv.key: kv.value for kv in kvs} == initial  # complete, and as of one revision
    assert [kv.key for kv in kvs] == sorted(initial)
    assert all(kv.mod_revision <= revision for kv in kvs)
    # The same revision read in one page agrees; the latest state does not.
    again, again_rev = await store.list_prefix(prefix, revision=revision)
    assert again_rev == revision and again == kvs
    latest, latest_rev = await store.list_prefix(prefix, page_size=5)
    assert latest_rev > revision
    assert {kv.key: kv.value for kv in latest}[k(hub_prefix, "p/000")] == b"changed"


# ------------------------------------------------------------------------------ txns


async def test_txn_compares(no_leaked_tasks: None, store: Store, hub_prefix: str) -> None:
    key = k(hub_prefix, "t")
    create = await store.txn([cmp_create(key, "=", 0)], [op_put(key, b"v1")], [op_get(key)])
    assert create.succeeded and create.responses == (None,)
    again = await store.txn([cmp_create(key, "=", 0)], [op_put(key, b"v2")], [op_get(key)])
    assert not again.succeeded
    (found,) = again.responses[0]
    assert isinstance(found, KeyValue)
    assert (found.value, found.create_revision) == (b"v1", create.revision)

    assert (
        await store.txn([cmp_create(key, "=", create.revision)], [op_put(key, b"v2")])
    ).succeeded
    kv = await store.get(key)
    assert kv is not None and kv.version == 2
    assert not (
        await store.txn([cmp_mod(key, "=", create.revision)], [op_put(key, b"x")])
    ).succeeded
    assert (await store.txn([cmp_mod(key, "=", kv.mod_revision)], [op_put(key, b"v3")])).succeeded
    assert (await store.txn([cmp_mod(key, ">", kv.mod_revision)], [])).succeeded
    assert not (await store.txn([cmp_version(key, "=", 2)], [op_put(key, b"x")])).succeeded
    assert (await store.txn([cmp_version(key, "=", 3)], [op_put(key, b"v4")])).succeeded
    assert (await store.txn([cmp_version(key, ">", 3), cmp_version(key, "<", 5)], [])).succeeded
    assert not (await store.txn([cmp_value(key, "=", b"v3")], [op_put(key, b"x")])).succeeded
    assert (await store.txn([cmp_value(key, "=", b"v4")], [op_put(key, b"v5")])).succeeded
    assert (await store.txn([cmp_value(key, "!=", b"v4")], [])).succeeded
    kv = await store.get(key)
    assert kv is not None and (kv.value, kv.version) == (b"v5", 5)


async def test_nested_txns_succeed_or_fail_independently(
    no_leaked_tasks: None, store: Store, hub_prefix: str
) -> None:
    a, b, c = k(hub_prefix, "n/a"), k(hub_prefix, "n/b"), k(hub_prefix, "n/c")
    await store.put(b, b"old")
    for i in range(3):
        await store.put(k(hub_prefix, f"n/gone/{i}"), b"x")
    result = await store.txn(
        (),
        [
            op_txn([cmp_create(a, "=", 0)], [op_put(a, b"new-a")], [op_get(a)]),
            op_txn([cmp_value(b, "=", b"not-old")], [op_put(b, b"new-b")], [op_get(b)]),
            op_txn([cmp_version(c, "=", 0)], [op_put(c, b"new-c"), op_get(b)]),
            op_delete(k(hub_prefix, "n/gone/"), prefix=True),
        ],
    )
    assert result.succeeded
    first, second, third, deleted = result.responses
    assert isinstance(first, TxnResult) and first.succeeded and first.responses == (None,)
    assert isinstance(second, TxnResult) and not second.succeeded
    assert [kv.value for kv in second.responses[0]] == [b"old"]
    assert isinstance(third, TxnResult) and third.succeeded
    assert third.responses[0] is None and [kv.value for kv in third.responses[1]] == [b"old"]
    assert deleted == 3
    assert first.revision == second.revision == result.revision
    values = {kv.key: kv.value for kv in (await store.list_prefix(k(hub_prefix, "n/")))[0]}
    assert values == {a: b"new-a", b: b"old", c: b"new-c"}
    a_kv = await store.get(a)
    assert a_kv is not None and a_kv.create_revision == result.revision


def two_compare_create(key: bytes, value: bytes) -> Any:
    """A nested txn of width 2: create ``key`` if absent (two compares say so)."""
    return op_txn([cmp_create(key, "=", 0), cmp_version(key, "=", 0)], [op_put(key, value)])


async def test_etcd_enforces_the_nested_budget(
    no_leaked_tasks: None, store: Store, hub_prefix: str
) -> None:
    """The rule the batcher packs against: outer ops + widest nested level <= 128."""
    width = 2
    fits = [two_compare_create(k(hub_prefix, f"b/{i}"), b"v") for i in range(MAX_TXN_OPS - width)]
    assert (await store.txn((), fits)).succeeded
    over = [
        two_compare_create(k(hub_prefix, f"o/{i}"), b"v") for i in range(MAX_TXN_OPS - width + 1)
    ]
    with pytest.raises(StoreError, match="too many operations"):
        await store.txn((), over)
    assert await store.count_prefix(k(hub_prefix, "o/")) == 0


async def test_batcher_packs_1000_nested_ops_within_the_budget(
    no_leaked_tasks: None, store: Store, hub_prefix: str
) -> None:
    batcher = TxnBatcher(store)
    keys = [k(hub_prefix, f"bb/{i:04}") for i in range(1000)]
    async with running(batcher.run()):
        futures = [batcher.submit(two_compare_create(key, b"v"), key) for key in keys]
        results = await asyncio.wait_for(asyncio.gather(*futures), timeout=30)
    assert all(isinstance(r, TxnResult) and r.succeeded for r in results)
    assert await store.count_prefix(k(hub_prefix, "bb/")) == 1000
    per_batch = MAX_TXN_OPS - 2
    assert batcher.ops == 1000
    assert batcher.batches == -(-1000 // per_batch)  # full batches: 126 ops each
    assert len({r.revision for r in results}) == batcher.batches


async def test_batcher_splits_duplicate_keys_across_batches(
    no_leaked_tasks: None, store: Store, hub_prefix: str
) -> None:
    batcher = TxnBatcher(store)
    dup, other = k(hub_prefix, "dup"), k(hub_prefix, "other")
    async with running(batcher.run()):
        futures = [
            batcher.submit(op_txn([cmp_create(dup, "=", 0)], [op_put(dup, b"first")]), dup),
            batcher.submit(op_txn([cmp_create(other, "=", 0)], [op_put(other, b"o")]), other),
            # Only correct if it runs after the first op on the same key has landed.
            batcher.submit(op_txn([cmp_version(dup, "=", 1)], [op_put(dup, b"second")]), dup),
        ]
        first, second_key, later = await asyncio.wait_for(asyncio.gather(*futures), 10)
    assert first.succeeded and second_key.succeeded and later.succeeded
    assert first.revision == second_key.revision < later.revision
    assert batcher.batches == 2
    kv = await store.get(dup)
    assert kv is not None and (kv.value, kv.version) == (b"second", 2)


async def test_too_large_value_fails_alone(
    no_leaked_tasks: None, store: Store, hub_prefix: str
) -> None:
    big = b"x" * (1536 * 1024 + 64 * 1024)  # over etcd's default 1.5 MiB request limit
    with pytest.raises(RequestTooLarge):
        await store.put(k(hub_prefix, "big"), big)
    batcher = TxnBatcher(store)
    before, huge, after = k(hub_prefix, "before"), k(hub_prefix, "huge"), k(hub_prefix, "after")
    async with running(batcher.run()):
        futures = [
            batcher.submit(op_txn([], [op_put(before, b"1")]), before),
            batcher.submit(op_txn([], [op_put(huge, big)]), huge),
            batcher.submit(op_txn([], [op_put(after, b"1")]), after),
        ]
        outcomes = await asyncio.wait_for(
            asyncio.gather(*futures, return_exceptions=True), timeout=10
        )
        # The batcher keeps working after the failed batch.
        later = await asyncio.wait_for(
            batcher.submit(op_txn([], [op_put(k(hub_prefix, "later"), b"1")]), b"later"), 10
        )
    assert isinstance(outcomes[0], TxnResult) and outcomes[0].succeeded
    assert isinstance(outcomes[1], RequestTooLarge)
    assert isinstance(outcomes[2], TxnResult) and outcomes[2].succeeded
    assert later.succeeded
    assert await store.get(huge) is None
    assert await store.count_prefix(k(hub_prefix, "")) == 3


# ----------------------------------------------------------------------- error mapping


async def test_unreachable_endpoint_is_unavailable_within_the_deadline(
    no_leaked_tasks: None,
) -> None:
    config = EtcdConfig(endpoints=(f"127.0.0.1:{closed_port()}",), request_timeout=2.0)
    async with Store(config) as dead:
        counting = CountingStub(dead._kv)
        dead._kv = counting
        took, exc = await elapsed_of(dead.get(b"/anything"))
        assert isinstance(exc, StoreUnavailable), exc
        assert took < config.request_timeout
        assert counting.calls == {"Range": READ_ATTEMPTS}  # the read retry is bounded
        took, exc = await elapsed_of(dead.put(b"/anything", b"x"))
        assert isinstance(exc, StoreUnavailable), exc
        assert took < config.request_timeout
        assert counting.calls["Put"] == 1  # writes are never retried


async def test_blackholed_txn_times_out_within_request_timeout(
    no_leaked_tasks: None, etcd_endpoint: str, hub_prefix: str
) -> None:
    key = k(hub_prefix, "bh")
    async with TcpProxy(etcd_endpoint) as proxy:
        config = EtcdConfig(endpoints=(proxy.endpoint,), request_timeout=1.0)
        async with Store(config) as s:
            await s.put(key, b"1")  # the connection is up before the partition
            proxy.blackhole()
            try:
                took, exc = await elapsed_of(
                    s.txn([cmp_value(key, "=", b"1")], [op_put(key, b"2")])
                )
                assert isinstance(exc, StoreTimeout), exc
                assert config.request_timeout * 0.9 <= took < config.request_timeout + 0.5
                took, exc = await elapsed_of(s.get(key, timeout=0.3))
                assert isinstance(exc, StoreTimeout), exc  # a per-call deadline, too
                assert took < 0.8
            finally:
                proxy.heal()


# ---------------------------------------------------------------------------- leases


async def test_lease_grant_keepalive_ttl_revoke(
    no_leaked_tasks: None, store: Store, hub_prefix: str
) -> None:
    lease_id, granted = await store.lease_grant(5)
    assert lease_id > 0 and granted == 5
    assert 0 < await store.lease_ttl(lease_id) <= 5
    assert await store.lease_keepalive(lease_id) == 5
    key = k(hub_prefix, "leased")
    await store.put(key, b"x", lease=lease_id)
    kv = await store.get(key)
    assert kv is not None and kv.lease == lease_id
    await store.lease_revoke(lease_id)
    assert await store.get(key) is None  # revoking deletes the lease's keys
    # aetcd caveat: etcd answers a keep-alive of a gone lease with TTL 0, not an error.
    assert await store.lease_keepalive(lease_id) <= 0
    assert await store.lease_ttl(lease_id) == -1
    await store.lease_revoke(lease_id)  # revoking again is harmless


# ------------------------------------------------------------------------- endpoints


async def test_several_endpoints_fail_over(
    no_leaked_tasks: None, etcd_endpoint: str, hub_prefix: str
) -> None:
    target = ip_endpoint(etcd_endpoint)
    config = EtcdConfig(endpoints=(f"127.0.0.1:{closed_port()}", target))
    assert config.target().startswith("ipv4:127.0.0.1:")
    async with Store(config) as s:
        await s.put(k(hub_prefix, "multi"), b"ok")
        kv = await s.get(k(hub_prefix, "multi"))
        assert kv is not None and kv.value == b"ok"

    # Failover while connected: the first address goes away, calls move to the second.
    async with TcpProxy(target) as first, TcpProxy(target) as second:
        config = EtcdConfig(endpoints=(first.endpoint, second.endpoint), request_timeout=2.0)
        async with Store(config) as s:
            await s.put(k(hub_prefix, "multi"), b"via-first")
            assert first.connection_count == 1 and second.total_connections == 0
            await first.stop()
            kv = await s.get(k(hub_prefix, "multi"))  # a read rides out the switch
            assert kv is not None and kv.value == b"via-first"
            assert second.connection_count == 1
            await s.put(k(hub_prefix, "multi"), b"via-second")


def test_several_dns_endpoints_are_a_config_error() -> None:
    with pytest.raises(ConfigError):
        EtcdConfig(endpoints=("etcd-0.example:2379", "etcd-1.example:2379"))
    with pytest.raises(ConfigError):
        EtcdConfig(endpoints=("127.0.0.1:2379", "etcd-1.example:2379"))
    with pytest.raises(ConfigError):
        EtcdConfig(endpoints=("127.0.0.1:2379", "[::1]:2379"))  # mixed families
    # One DNS name is fine, and so are several IPs (also as one comma-separated string).
    assert EtcdConfig(endpoints=("etcd.example:2379",)).target() == "etcd.example:2379"
    assert EtcdConfig(endpoints="10.0.0.1:2379,10.0.0.2:2380").target() == (
        "ipv4:10.0.0.1:2379,10.0.0.2:2380"
    )
    assert EtcdConfig(endpoints=("[::1]:2379", "[::2]:2379")).target() == (
        "ipv6:[::1]:2379,[::2]:2379"
    )


@pytest.mark.parametrize(
    "endpoints",
    [
        (),
        ("",),
        ("127.0.0.1",),
        ("127.0.0.1:",),
        (":2379",),
        ("127.0.0.1:port",),
        ("127.0.0.1:0",),
        ("127.0.0.1:65536",),
        ("http://127.0.0.1:2379",),
        ("127.0.0.1:2379/path",),
        ("::1",),
        ("etcd example:2379",),
    ],
)
def test_malformed_endpoints_are_a_config_error(endpoints: Sequence[str]) -> None:
    with pytest.raises(ConfigError):
        EtcdConfig(endpoints=tuple(endpoints))


def test_other_config_errors() -> None:
    with pytest.raises(ConfigError):
        EtcdConfig(username="root")
    with pytest.raises(ConfigError):
        EtcdConfig(request_timeout=0)
    with pytest.raises(ConfigError):
        TlsConfig(cert_file="c.pem").credentials()


# ------------------------------------------------------------------------------ auth


def etcdctl(etcd: LocalEtcd, *args: str) -> None:
    subprocess.run(
        [str(etcd.etcdctl), f"--endpoints={etcd.url}", "--command-timeout=5s", *args],
        capture_output=True,
        timeout=30,
        check=True,
    )


@pytest.fixture(scope="module")
def auth_etcd() -> Iterator[LocalEtcd]:
    """An etcd with auth on (user root) whose tokens expire after TOKEN_TTL seconds."""
    try:
        etcd = LocalEtcd(name="processhub-auth", extra_args=["--auth-token-ttl", str(TOKEN_TTL)])
    except ConfigError as exc:
        no_etcd(str(exc))
    with contextlib.closing(etcd):
        etcd.start()
        etcdctl(etcd, "user", "add", f"root:{PASSWORD}")
        etcdctl(etcd, "auth", "enable")
        yield etcd


def auth_config(etcd: LocalEtcd, **kw: Any) -> EtcdConfig:
    return EtcdConfig(endpoints=(etcd.endpoint,), request_timeout=2.0, **kw)


async def test_auth_right_credentials_work(
    no_leaked_tasks: None, auth_etcd: LocalEtcd, hub_prefix: str
) -> None:
    async with Store(auth_config(auth_etcd, username="root", password=PASSWORD)) as s:
        await s.put(k(hub_prefix, "auth"), b"ok")
        kv = await s.get(k(hub_prefix, "auth"))
        assert kv is not None and kv.value == b"ok"
        result = await s.txn([cmp_value(k(hub_prefix, "auth"), "=", b"ok")], [])
        assert result.succeeded


async def test_auth_wrong_password_is_an_auth_error(
    no_leaked_tasks: None, auth_etcd: LocalEtcd
) -> None:
    with pytest.raises(StoreAuthError):
        async with Store(auth_config(auth_etcd, username="root", password="wrong")):
            pass
    with pytest.raises(StoreAuthError):
        async with Store(auth_config(auth_etcd, username="nobody", password="x")):
            pass


async def test_auth_no_credentials_is_an_auth_error(
    no_leaked_tasks: None, auth_etcd: LocalEtcd, hub_prefix: str
) -> None:
    async with Store(auth_config(auth_etcd)) as s:
        with pytest.raises(StoreAuthError):
            await s.put(k(hub_prefix, "anon"), b"x")
        with pytest.raises(StoreAuthError):
            await s.get(k(hub_prefix, "anon"))


async def token_rejected(etcd: LocalEtcd, token: str) -> bool:
    """True once etcd no longer accepts ``token`` (probed with a raw call)."""
    async with grpc.aio.insecure_channel(etcd.endpoint) as channel:
        try:
            await rpc.KVStub(channel).Range(
                rpc.RangeRequest(key=b"/probe"), timeout=2.0, metadata=(("token", token),)
            )
        except grpc.aio.AioRpcError as exc:
            return exc.code() is grpc.StatusCode.UNAUTHENTICATED
    return False


class Recorder:
    """A Sink that keeps the informer's view: key -> value."""

    def __init__(self) -> None:
        self.cache: dict[bytes, bytes] = {}
        self.resets = 0

    def reset(self, kvs: Sequence[KeyValue], revision: int) -> None:
        self.resets += 1
        self.cache = {kv.key: kv.value for kv in kvs}

    def apply(self, events: Sequence[Event], revision: int) -> None:
        for ev in events:
            if ev.is_delete:
                self.cache.pop(ev.key, None)
            else:
                self.cache[ev.key] = ev.value


async def test_auth_token_expiry_reauthenticates(
    no_leaked_tasks: None, auth_etcd: LocalEtcd, hub_prefix: str
) -> None:
    """Unary calls and watches carry on after etcd's simple token expired."""
    creds = {"username": "root", "password": PASSWORD}
    prefix = k(hub_prefix, "w/")
    async with (
        Store(auth_config(auth_etcd, **creds)) as unary,
        Store(auth_config(auth_etcd, **creds)) as writer,
        TcpProxy(auth_etcd.endpoint) as proxy,
        Store(EtcdConfig(endpoints=(proxy.endpoint,), request_timeout=2.0, **creds)) as watching,
    ):
        await unary.put(k(hub_prefix, "tok"), b"1")
        sink = Recorder()
        informer = Informer(watching, prefix, sink, progress_interval=0.2, stall_timeout=2.0)
        async with running(informer.run()):
            await asyncio.wait_for(informer.synced.wait(), 5)
            await writer.put(prefix + b"a", b"1")
            await wait_until(lambda: sink.cache.get(prefix + b"a") == b"1", timeout=5)
            assert unary._metadata is not None and watching._metadata is not None
            old_tokens = (unary._metadata[0][1], watching._metadata[0][1])
            # Fault length: stay idle past the token TTL plus etcd's one-second sweep. (Not
            # a poll: every use of a token restarts its TTL.) Then check etcd forgot both.
            await asyncio.sleep(TOKEN_TTL + 1.2)
            for token in old_tokens:
                assert await token_rejected(auth_etcd, token), "the token did not expire"

            kv = await unary.get(k(hub_prefix, "tok"))  # re-authenticates transparently
            assert kv is not None and kv.value == b"1"
            await unary.put(k(hub_prefix, "tok"), b"2")

            # The informer's watch must reconnect with a fresh token, too.
            await proxy.reset()
            await writer.put(prefix + b"b", b"2")
            await wait_until(lambda: sink.cache.get(prefix + b"b") == b"2", timeout=5)
            assert sink.resets == 1  # resumed, not relisted


# ------------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_etcd(pki: Pki) -> Iterator[LocalEtcd]:
    """An etcd serving clients over https and requiring client certificates."""
    try:
        etcd = LocalEtcd(
            name="processhub-tls", tls=LocalTls(pki.server_cert, pki.server_key, pki.ca_cert)
        )
    except ConfigError as exc:
        no_etcd(str(exc))
    with contextlib.closing(etcd):
        etcd.start()
        assert etcd.url.startswith("https://")
        yield etcd


async def test_tls_with_client_cert_works(
    no_leaked_tasks: None, tls_etcd: LocalEtcd, pki: Pki, hub_prefix: str
) -> None:
    tls = TlsConfig(pki.ca_cert, pki.client_cert, pki.client_key)
    async with Store(EtcdConfig(endpoints=(tls_etcd.endpoint,), tls=tls)) as s:
        await s.put(k(hub_prefix, "tls"), b"secure")
        kv = await s.get(k(hub_prefix, "tls"))
        assert kv is not None and kv.value == b"secure"
    # The certificate also names localhost.
    host_config = EtcdConfig(endpoints=(f"localhost:{tls_etcd.client_port}",), tls=tls)
    async with Store(host_config) as s:
        assert await s.count_prefix(k(hub_prefix, "")) == 1


def _refused_configs(etcd: LocalEtcd, pki: Pki, other: Pki) -> dict[str, EtcdConfig]:
    ep = (etcd.endpoint,)
    return {
        "no client cert": EtcdConfig(ep, tls=TlsConfig(pki.ca_cert), request_timeout=2.0),
        "plaintext": EtcdConfig(ep, request_timeout=2.0),
        "wrong CA": EtcdConfig(
            ep, tls=TlsConfig(other.ca_cert, pki.client_cert, pki.client_key), request_timeout=2.0
        ),
        "client cert of another CA": EtcdConfig(
            ep, tls=TlsConfig(pki.ca_cert, other.client_cert, other.client_key), request_timeout=2.0
        ),
    }


@pytest.mark.parametrize(
    "case", ["no client cert", "plaintext", "wrong CA", "client cert of another CA"]
)
async def test_tls_refusals_are_bounded_store_errors(
    no_leaked_tasks: None, tls_etcd: LocalEtcd, pki: Pki, tmp_path: Path, case: str
) -> None:
    other = make_pki(tmp_path / "other", ca_name="another CA")
    config = _refused_configs(tls_etcd, pki, other)[case]
    async with Store(config) as s:
        took, exc = await elapsed_of(s.put(b"/tls-refused", b"x"))
        assert isinstance(exc, StoreError), exc
        assert took < config.request_timeout
        took, exc = await elapsed_of(s.get(b"/tls-refused"))
        assert isinstance(exc, StoreError), exc
        assert took < config.request_timeout * READ_ATTEMPTS
