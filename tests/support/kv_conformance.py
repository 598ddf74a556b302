"""One conformance suite for every :class:`hub.etcd.kv.KV`: a real etcd and the fake.

Subclass :class:`KVConformance` and give it a ``backend`` fixture (a :class:`Backend`):
``tests/integration/test_kv_conformance.py`` runs it against a real etcd through
:class:`hub.etcd.store.Store`, ``tests/unit/test_fake_kv.py`` against
:class:`hub.testing.FakeKV`. A test here states etcd's behaviour; both must pass it.

Every key is under ``backend.prefix`` (the real etcd is shared with other tests), and no
test assumes absolute revisions, only their order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from hub.errors import RequestTooLarge, RevisionCompacted, StoreError
from hub.etcd.kv import KV, MAX_TXN_OPS, Event, KeyValue, TxnResult, Watch
from hub.etcd.ops import (
    Op,
    cmp_create,
    cmp_mod,
    cmp_value,
    cmp_version,
    op_delete,
    op_get,
    op_put,
    op_txn,
)

#: Ceiling for one watch wait; events arrive in milliseconds.
WATCH_TIMEOUT = 5.0


@dataclass
class Backend:
    """A KV under test: ``kv``, a key prefix of the test's own, and how to let a lease's
    TTL pass (``expire(lease_id, ttl)`` returns once the lease is gone)."""

    kv: KV
    prefix: bytes
    expire: Callable[[int, int], Awaitable[None]]

    def key(self, name: str) -> bytes:
        return self.prefix + name.encode()


async def next_events(stream: Watch, count: int) -> list[Event]:
    """Read batches from ``stream`` until ``count`` events came (progress notices skipped)."""
    events: list[Event] = []
    batches = aiter(stream)
    async with asyncio.timeout(WATCH_TIMEOUT):
        while len(events) < count:
            batch = await anext(batches)
            events.extend(batch.events)
    return events


def values(kvs: list[KeyValue]) -> dict[bytes, bytes]:
    return {kv.key: kv.value for kv in kvs}


class KVConformance:
    """The suite; see the module docstring."""

    # -- keys, revisions, versions -------------------------------------------------------

    async def test_put_get_delete_keep_revisions_and_versions(self, backend: Backend) -> None:
        kv, key = backend.kv, backend.key("a")
        assert await kv.get(key) is None
        rev1 = await kv.put(key, b"one")
        got = await kv.get(key)
        assert got is not None
        assert (got.value, got.create_revision, got.mod_revision, got.version, got.lease) == (
            b"one",
            rev1,
            rev1,
            1,
            0,
        )
        rev2 = await kv.put(key, b"two")
        assert rev2 == rev1 + 1  # nothing else writes under this prefix, but others may
        got = await kv.get(key)
        assert got is not None and (got.create_revision, got.mod_revision, got.version) == (
            rev1,
            rev2,
            2,
        )
        assert await kv.delete(key) == 1
        assert await kv.delete(key) == 0
        assert await kv.get(key) is None
        rev3 = await kv.put(key, b"again")
        got = await kv.get(key)
        assert got is not None and (got.create_revision, got.version) == (rev3, 1)

    async def test_delete_prefix_counts_and_spares_siblings(self, backend: Backend) -> None:
        kv = backend.kv
        for i in range(5):
            await kv.put(backend.key(f"d/{i}"), b"x")
        await kv.put(backend.key("dx"), b"sibling")
        assert await kv.delete(backend.key("d/"), prefix=True) == 5
        kvs, _ = await kv.list_prefix(backend.prefix)
        assert values(kvs) == {backend.key("dx"): b"sibling"}

    async def test_list_prefix_is_sorted_and_reads_the_past(self, backend: Backend) -> None:
        kv = backend.kv
        for name in ("p/b", "p/a", "p/c", "q"):
            await kv.put(backend.key(name), name.encode())
        kvs, then = await kv.list_prefix(backend.key("p/"))
        assert [x.key for x in kvs] == [backend.key(f"p/{c}") for c in "abc"]
        await kv.put(backend.key("p/a"), b"changed")
        await kv.delete(backend.key("p/b"))
        await kv.put(backend.key("p/d"), b"new")
        past, at = await kv.list_prefix(backend.key("p/"), revision=then)
        assert at == then and past == kvs
        now, latest = await kv.list_prefix(backend.key("p/"))
        assert latest > then
        assert values(now) == {
            backend.key("p/a"): b"changed",
            backend.key("p/c"): b"p/c",
            backend.key("p/d"): b"new",
        }
        ranged, _ = await kv.list_prefix(backend.key("p/a"), end=backend.key("p/d"))
        assert [x.key for x in ranged] == [backend.key("p/a"), backend.key("p/c")]

    async def test_get_many_reads_each_key_at_its_revision(self, backend: Backend) -> None:
        kv = backend.kv
        a, b = backend.key("m/a"), backend.key("m/b")
        first = await kv.put(a, b"a1")
        await kv.put(a, b"a2")
        await kv.put(b, b"b1")
        found, too_large = await kv.get_many([(a, first), (b, 0), (backend.key("m/none"), 0)])
        assert not too_large
        assert {k: v.value for k, v in found.items()} == {a: b"a1", b: b"b1"}

    # -- txns ----------------------------------------------------------------------------

    async def test_txn_compares(self, backend: Backend) -> None:
        kv, key = backend.kv, backend.key("t")
        create = await kv.txn([cmp_create(key, "=", 0)], [op_put(key, b"v1")], [op_get(key)])
        assert create.succeeded and create.responses == (None,)
        again = await kv.txn([cmp_create(key, "=", 0)], [op_put(key, b"v2")], [op_get(key)])
        assert not again.succeeded and again.revision == create.revision  # nothing written
        (found,) = again.responses[0]
        assert (found.value, found.create_revision) == (b"v1", create.revision)
        assert (
            await kv.txn([cmp_create(key, "=", create.revision)], [op_put(key, b"v2")])
        ).succeeded
        got = await kv.get(key)
        assert got is not None and got.version == 2
        assert not (await kv.txn([cmp_mod(key, "=", create.revision)], [])).succeeded
        assert (await kv.txn([cmp_mod(key, "=", got.mod_revision)], [op_put(key, b"v3")])).succeeded
        assert (await kv.txn([cmp_mod(key, ">", got.mod_revision)], [])).succeeded
        assert (await kv.txn([cmp_mod(key, "<", got.mod_revision + 10)], [])).succeeded
        assert not (await kv.txn([cmp_version(key, "=", 2)], [])).succeeded
        assert (await kv.txn([cmp_version(key, "=", 3)], [op_put(key, b"v4")])).succeeded
        assert (await kv.txn([cmp_version(key, ">", 3), cmp_version(key, "<", 5)], [])).succeeded
        assert not (await kv.txn([cmp_version(key, "!=", 4)], [])).succeeded
        assert not (await kv.txn([cmp_value(key, "=", b"v3")], [])).succeeded
        assert (await kv.txn([cmp_value(key, "=", b"v4")], [op_put(key, b"v5")])).succeeded
        assert (await kv.txn([cmp_value(key, "!=", b"v4")], [])).succeeded
        assert (
            await kv.txn([cmp_value(key, ">", b"v1"), cmp_value(key, "<", b"v9")], [])
        ).succeeded
        got = await kv.get(key)
        assert got is not None and (got.value, got.version) == (b"v5", 5)

    async def test_an_absent_key_has_zero_revisions_and_no_value(self, backend: Backend) -> None:
        kv, key = backend.kv, backend.key("absent")
        assert (await kv.txn([cmp_create(key, "=", 0), cmp_mod(key, "=", 0)], [])).succeeded
        assert (await kv.txn([cmp_version(key, "=", 0)], [])).succeeded
        assert not (await kv.txn([cmp_value(key, "=", b"")], [])).succeeded
        assert not (await kv.txn([cmp_value(key, "!=", b"x")], [])).succeeded

    async def test_nested_txns_succeed_or_fail_independently(self, backend: Backend) -> None:
        kv = backend.kv
        a, b, c = backend.key("n/a"), backend.key("n/b"), backend.key("n/c")
        await kv.put(b, b"old")
        for i in range(3):
            await kv.put(backend.key(f"n/gone/{i}"), b"x")
        result = await kv.txn(
            (),
            [
                op_txn([cmp_create(a, "=", 0)], [op_put(a, b"new-a")], [op_get(a)]),
                op_txn([cmp_value(b, "=", b"not-old")], [op_put(b, b"new-b")], [op_get(b)]),
                op_txn([cmp_version(c, "=", 0)], [op_put(c, b"new-c"), op_get(b)]),
                op_delete(backend.key("n/gone/"), prefix=True),
            ],
        )
        assert result.succeeded
        first, second, third, deleted = result.responses
        assert isinstance(first, TxnResult) and first.succeeded and first.responses == (None,)
        assert isinstance(second, TxnResult) and not second.succeeded
        assert [x.value for x in second.responses[0]] == [b"old"]
        assert isinstance(third, TxnResult) and third.succeeded
        assert third.responses[0] is None and [x.value for x in third.responses[1]] == [b"old"]
        assert deleted == 3
        assert first.revision == second.revision == third.revision == result.revision
        kvs, _ = await kv.list_prefix(backend.key("n/"))
        assert values(kvs) == {a: b"new-a", b: b"old", c: b"new-c"}
        created = await kv.get(a)
        assert created is not None and created.create_revision == result.revision

    async def test_a_read_in_a_txn_sees_its_earlier_writes(self, backend: Backend) -> None:
        kv, key, other = backend.kv, backend.key("rw"), backend.key("rw2")
        result = await kv.txn((), [op_put(key, b"mine"), op_get(key), op_get(other)])
        (written,) = result.responses[1]
        assert (written.value, written.mod_revision, written.version) == (
            b"mine",
            result.revision,
            1,
        )
        assert result.responses[2] == ()
        (keys_only,) = (await kv.txn((), [op_get(key, keys_only=True)])).responses[0]
        assert (keys_only.key, keys_only.value, keys_only.version) == (key, b"", 1)

    async def test_the_nested_operation_budget(self, backend: Backend) -> None:
        """The rule the batcher packs against: outer ops + widest nested level <= 128."""
        kv = backend.kv

        def create(key: bytes) -> Op:
            return op_txn([cmp_create(key, "=", 0), cmp_version(key, "=", 0)], [op_put(key, b"v")])

        fits = [create(backend.key(f"b/{i}")) for i in range(MAX_TXN_OPS - 2)]
        assert (await kv.txn((), fits)).succeeded
        over = [create(backend.key(f"o/{i}")) for i in range(MAX_TXN_OPS - 1)]
        with pytest.raises(StoreError, match="too many operations"):
            await kv.txn((), over)
        assert (await kv.list_prefix(backend.key("o/")))[0] == []

    async def test_a_key_written_twice_in_one_txn_is_refused(self, backend: Backend) -> None:
        kv, key = backend.kv, backend.key("dup")
        with pytest.raises(StoreError, match="duplicate key"):
            await kv.txn((), [op_txn([], [op_put(key, b"1")]), op_txn([], [op_put(key, b"2")])])
        with pytest.raises(StoreError, match="duplicate key"):
            await kv.txn((), [op_delete(backend.prefix, prefix=True), op_put(key, b"1")])
        # A nested txn's branches exclude each other: both may write the key.
        either = op_txn([cmp_create(key, "=", 0)], [op_put(key, b"new")], [op_put(key, b"old")])
        assert (await kv.txn((), [either])).succeeded
        assert await kv.get(key) is not None

    async def test_a_request_over_the_size_limit_is_refused_whole(self, backend: Backend) -> None:
        kv = backend.kv
        big = b"x" * (1536 * 1024 + 64 * 1024)  # over etcd's default 1.5 MiB
        with pytest.raises(RequestTooLarge):
            await kv.put(backend.key("big"), big)
        with pytest.raises(RequestTooLarge):
            await kv.txn((), [op_put(backend.key("small"), b"1"), op_put(backend.key("big"), big)])
        assert (await kv.list_prefix(backend.prefix))[0] == []

    # -- leases --------------------------------------------------------------------------

    async def test_lease_grant_keepalive_ttl_revoke(self, backend: Backend) -> None:
        kv = backend.kv
        lease_id, granted = await kv.lease_grant(5)
        assert lease_id > 0 and granted == 5
        assert 0 < await kv.lease_ttl(lease_id) <= 5
        assert await kv.lease_keepalive(lease_id) == 5
        a, b = backend.key("leased/a"), backend.key("leased/b")
        await kv.put(a, b"x", lease=lease_id)
        await kv.txn((), [op_put(b, b"y", lease=lease_id)])
        got = await kv.get(a)
        assert got is not None and got.lease == lease_id
        async with kv.watch(backend.key("leased/"), 0) as stream:
            await kv.lease_revoke(lease_id)
            events = await next_events(stream, 2)
        assert await kv.get(a) is None and await kv.get(b) is None
        assert [(e.key, e.is_delete) for e in events] == [(a, True), (b, True)]
        assert events[0].mod_revision == events[1].mod_revision  # one revision
        assert await kv.lease_keepalive(lease_id) <= 0  # gone: TTL 0, not an error
        assert await kv.lease_ttl(lease_id) == -1
        await kv.lease_revoke(lease_id)  # revoking again is harmless

    async def test_a_put_on_an_unknown_lease_fails_whole(self, backend: Backend) -> None:
        kv = backend.kv
        lease_id, _ = await kv.lease_grant(5)
        await kv.lease_revoke(lease_id)
        with pytest.raises(StoreError, match="lease not found"):
            await kv.put(backend.key("x"), b"x", lease=lease_id)
        with pytest.raises(StoreError, match="lease not found"):
            await kv.txn(
                (), [op_put(backend.key("y"), b"y"), op_put(backend.key("x"), b"x", lease=lease_id)]
            )
        assert (await kv.list_prefix(backend.prefix))[0] == []

    async def test_an_expired_lease_takes_its_keys(self, backend: Backend) -> None:
        kv, key = backend.kv, backend.key("expiring")
        lease_id, ttl = await kv.lease_grant(2)
        await kv.put(key, b"x", lease=lease_id)
        await kv.put(backend.key("durable"), b"y")
        await backend.expire(lease_id, ttl)
        assert await kv.get(key) is None
        assert await kv.get(backend.key("durable")) is not None
        assert await kv.lease_keepalive(lease_id) <= 0

    # -- watch ---------------------------------------------------------------------------

    async def test_a_watch_replays_from_its_revision_then_follows(self, backend: Backend) -> None:
        kv = backend.kv
        a, b = backend.key("w/a"), backend.key("w/b")
        start = await kv.put(a, b"1")
        await kv.put(b, b"2")
        await kv.delete(a)
        await kv.put(backend.key("elsewhere"), b"not watched")
        async with kv.watch(backend.key("w/"), start) as stream:
            replayed = await next_events(stream, 3)
            both = await kv.txn((), [op_put(a, b"3"), op_put(b, b"4")])
            live = await next_events(stream, 2)
        assert [(e.key, e.value, e.is_delete) for e in replayed] == [
            (a, b"1", False),
            (b, b"2", False),
            (a, b"", True),
        ]
        assert [e.mod_revision for e in replayed] == [start, start + 1, start + 2]
        deleted = replayed[2]
        assert (deleted.create_revision, deleted.lease) == (0, 0)
        assert [(e.key, e.value, e.mod_revision) for e in live] == [
            (a, b"3", both.revision),
            (b, b"4", both.revision),
        ]
        assert live[0].create_revision == both.revision  # recreated after the delete

    async def test_a_watch_from_now_sees_only_later_changes(self, backend: Backend) -> None:
        kv, key = backend.kv, backend.key("now")
        await kv.put(key, b"before")
        async with kv.watch(key, 0, end=key + b"\0") as stream:
            rev = await kv.put(key, b"after")
            (event,) = await next_events(stream, 1)
        assert (event.value, event.mod_revision) == (b"after", rev)

    async def test_progress_requests_are_answered_with_the_revision(self, backend: Backend) -> None:
        kv = backend.kv
        rev = await kv.put(backend.key("g"), b"x")
        async with kv.watch(backend.key("g"), rev + 1) as stream:
            batches = aiter(stream)
            await stream.request_progress()
            async with asyncio.timeout(WATCH_TIMEOUT):
                batch = await anext(batches)
        assert batch.is_progress and not batch.events and batch.revision >= rev

    async def test_compaction(self, backend: Backend) -> None:
        kv, key = backend.kv, backend.key("c")
        old = await kv.put(key, b"1")
        await kv.put(key, b"2")
        keep = await kv.put(key, b"3")
        await kv.compact(keep)
        with pytest.raises(RevisionCompacted):
            await kv.list_prefix(key, revision=old)
        with pytest.raises(RevisionCompacted):
            await kv.get_many([(key, old)])
        with pytest.raises(RevisionCompacted):
            await kv.compact(keep)  # already compacted
        kvs, at = await kv.list_prefix(key, revision=keep)  # the compact revision stays
        assert at == keep and [x.value for x in kvs] == [b"3"]
        with pytest.raises(RevisionCompacted) as compacted:
            async with kv.watch(key, old) as stream:
                await next_events(stream, 1)
        assert compacted.value.compact_revision >= keep
        async with kv.watch(key, keep) as stream:
            (event,) = await next_events(stream, 1)
        assert (event.value, event.mod_revision) == (b"3", keep)
        with pytest.raises(StoreError):
            await kv.compact(keep + 1_000_000)  # the future
