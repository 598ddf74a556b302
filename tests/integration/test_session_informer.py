"""Session (lease keep-alive, self-fencing deadline) and Informer (list+watch) on real etcd."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any

import pytest
from support.proxy import TcpProxy
from support.wait import wait_until

from hub.etcd.informer import Informer
from hub.etcd.session import Session
from hub.etcd.store import EtcdConfig, Event, KeyValue, Store, op_put
from hub.operate.localetcd import LocalEtcd

pytestmark = pytest.mark.etcd


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


def config(endpoint: str, request_timeout: float = 2.0) -> EtcdConfig:
    return EtcdConfig(endpoints=(endpoint,), request_timeout=request_timeout)


# --------------------------------------------------------------------------- Session


class LeaseLog:
    """Records a session's callbacks with their monotonic times."""

    def __init__(self) -> None:
        self.granted: list[tuple[int, float]] = []
        self.lost: list[tuple[int, float]] = []

    async def on_granted(self, lease_id: int) -> None:
        self.granted.append((lease_id, time.monotonic()))

    async def on_lost(self, lease_id: int) -> None:
        self.lost.append((lease_id, time.monotonic()))


async def test_keepalive_keeps_a_short_lease_alive(
    no_leaked_tasks: None, etcd_endpoint: str
) -> None:
    ttl = 2
    async with Store(config(etcd_endpoint)) as store, Store(config(etcd_endpoint)) as direct:
        log = LeaseLog()
        session = Session(store, ttl, on_lost=log.on_lost, on_granted=log.on_granted)
        async with running(session.run()):
            lease_id = await asyncio.wait_for(session.wait_valid(), 5)
            start = time.monotonic()

            async def alive_for_two_ttls() -> bool:
                # Polled all along: etcd must never see the lease run out.
                assert await direct.lease_ttl(lease_id) > 0, "etcd let the lease expire"
                assert session.is_valid() and session.lease_id == lease_id
                return time.monotonic() - start > 2 * ttl + 0.5

            await wait_until(alive_for_two_ttls, timeout=2 * ttl + 3, interval=0.2)
            assert not log.lost
            assert [lease for lease, _ in log.granted] == [lease_id]
            assert session.incarnations == 1
            assert session.time_left() > 0
        await direct.lease_revoke(lease_id)


async def test_revoked_lease_is_lost_fast_and_replaced(
    no_leaked_tasks: None, etcd_endpoint: str
) -> None:
    ttl = 3
    async with Store(config(etcd_endpoint)) as store, Store(config(etcd_endpoint)) as direct:
        log = LeaseLog()
        session = Session(store, ttl, on_lost=log.on_lost, on_granted=log.on_granted)
        async with running(session.run()):
            first = await asyncio.wait_for(session.wait_valid(), 5)
            revoked_at = time.monotonic()
            await direct.lease_revoke(first)
            await wait_until(lambda: log.lost, timeout=ttl)
            ((lost_id, lost_at),) = log.lost
            assert lost_id == first
            assert lost_at - revoked_at <= ttl / 3 + 0.5  # the next keep-alive tells
            await wait_until(lambda: len(log.granted) == 2, timeout=5)
            second, granted_at = log.granted[1]
            assert second != first and granted_at >= lost_at
            assert session.lease_id == second and session.incarnations == 2
            assert await direct.lease_ttl(second) > 0
        await direct.lease_revoke(second)


async def test_partitioned_session_fences_before_etcd_expires_the_lease(
    no_leaked_tasks: None,
    etcd_endpoint: str,
) -> None:
    """The self-fencing rule: on_lost runs while etcd still holds the lease."""
    ttl, margin = 3, 1.5  # margin > 1 s: etcd reports remaining TTLs in whole seconds
    async with (
        TcpProxy(etcd_endpoint) as proxy,
        Store(config(proxy.endpoint, request_timeout=1.0)) as store,
        Store(config(etcd_endpoint)) as direct,
    ):
        seen: dict[str, Any] = {}
        log = LeaseLog()

        async def on_lost(lease_id: int) -> None:
            await log.on_lost(lease_id)
            seen["valid"] = session.is_valid()
            seen["etcd_ttl"] = await direct.lease_ttl(lease_id)

        session = Session(store, ttl, margin=margin, on_lost=on_lost, on_granted=log.on_granted)
        async with running(session.run()):
            old = await asyncio.wait_for(session.wait_valid(), 5)
            proxy.blackhole()
            partitioned_at = time.monotonic()
            try:
                await wait_until(lambda: not session.is_valid(), timeout=ttl)
                invalid_at = time.monotonic()
                await wait_until(lambda: "etcd_ttl" in seen, timeout=2)  # on_lost done
                # The last successful keep-alive was sent before the partition, so the
                # local deadline falls at most TTL - margin after it.
                assert invalid_at - partitioned_at <= ttl - margin + 0.2
                assert session.lease_id == 0
                assert [lease for lease, _ in log.lost] == [old]
                assert seen["valid"] is False
                assert seen["etcd_ttl"] > 0, "etcd had already expired the lease"

                async def expired_in_etcd() -> bool:
                    return await direct.lease_ttl(old) == -1

                # ... and only later does etcd expire it (the fence came first).
                await wait_until(expired_in_etcd, timeout=ttl + 2, interval=0.05)
            finally:
                proxy.heal()
            # After the partition heals the session rejoins with a new incarnation.
            await wait_until(lambda: log.granted and log.granted[-1][0] != old, timeout=10)
            new = log.granted[-1][0]
            assert session.lease_id == new and await direct.lease_ttl(new) > 0
        await direct.lease_revoke(new)


@pytest.mark.parametrize(("ttl", "margin"), [(1, None), (3, 0.0), (3, -1.0), (3, 3.0), (3, 5.0)])
def test_session_rejects_bad_ttl_or_margin(ttl: int, margin: float | None) -> None:
    store = Store(EtcdConfig())  # never connected
    with pytest.raises(ValueError):
        Session(store, ttl, margin=margin)


def test_session_default_margin() -> None:
    store = Store(EtcdConfig())
    assert Session(store, 2).margin == 0.5
    assert Session(store, 10).margin == 2.0
    assert Session(store, 3, margin=2.5).margin == 2.5
    assert not Session(store, 3).is_valid() and Session(store, 3).lease_id == 0


# -------------------------------------------------------------------------- Informer


class Sink:
    """Records what an informer delivers and keeps the resulting cache."""

    def __init__(self) -> None:
        self.resets: list[tuple[dict[bytes, bytes], int]] = []
        self.applied: list[tuple[bytes, int]] = []  # (key, mod_revision) of every event
        self.cache: dict[bytes, tuple[bytes, int]] = {}

    def reset(self, kvs: Sequence[KeyValue], revision: int) -> None:
        self.resets.append(({kv.key: kv.value for kv in kvs}, revision))
        self.cache = {kv.key: (kv.value, kv.mod_revision) for kv in kvs}

    def apply(self, events: Sequence[Event], revision: int) -> None:
        for ev in events:
            assert ev.mod_revision <= revision
            self.applied.append((ev.key, ev.mod_revision))
            if ev.is_delete:
                self.cache.pop(ev.key, None)
            else:
                self.cache[ev.key] = (ev.value, ev.mod_revision)

    def values(self) -> dict[bytes, bytes]:
        return {key: value for key, (value, _) in self.cache.items()}


async def etcd_state(store: Store, prefix: bytes) -> dict[bytes, tuple[bytes, int]]:
    kvs, _ = await store.list_prefix(prefix)
    return {kv.key: (kv.value, kv.mod_revision) for kv in kvs}


async def test_informer_lists_then_watches_in_order(
    no_leaked_tasks: None, etcd_endpoint: str, hub_prefix: str
) -> None:
    prefix = f"{hub_prefix}/i/".encode()
    async with Store(config(etcd_endpoint)) as store:
        for i in range(3):
            await store.put(prefix + b"pre%d" % i, b"v")
        sink = Sink()
        informer = Informer(store, prefix, sink, progress_interval=0.2)
        async with running(informer.run()):
            await asyncio.wait_for(informer.synced.wait(), 5)
            ((listed, list_rev),) = sink.resets
            assert listed == {prefix + b"pre%d" % i: b"v" for i in range(3)}
            assert informer.revision >= list_rev

            expected: list[tuple[bytes, int]] = []
            for i in range(10):
                key = prefix + b"k%d" % (i % 4)
                expected.append((key, await store.put(key, b"%d" % i)))
            assert await store.delete(prefix + b"pre0") == 1
            await wait_until(lambda: len(sink.applied) == 11, timeout=5)
            assert sink.applied[:10] == expected  # every write, in revision order
            delete_key, delete_rev = sink.applied[10]  # a delete carries its own revision
            assert delete_key == prefix + b"pre0" and delete_rev > expected[-1][1]
            assert prefix + b"pre0" not in sink.cache
            assert sink.cache == await etcd_state(store, prefix)

            # Freshness: a write outside the prefix is reflected through progress notices.
            outside = await store.put(f"{hub_prefix}/elsewhere".encode(), b"x")
            await wait_until(
                lambda: informer.store_revision >= outside and informer.lag == 0, timeout=5
            )
            # ...but a progress notice never moves the resume point (etcd-io/etcd#15220).
            assert informer.revision < outside
            assert time.monotonic() - informer.last_heard < 1.0
            assert len(sink.resets) == 1 and informer.relists == 0


async def test_informer_relists_periodically(
    no_leaked_tasks: None, etcd_endpoint: str, hub_prefix: str
) -> None:
    prefix = f"{hub_prefix}/r/".encode()
    async with Store(config(etcd_endpoint)) as store:
        await store.put(prefix + b"a", b"1")
        sink = Sink()
        informer = Informer(store, prefix, sink, progress_interval=0.1, relist_interval=0.3)
        async with running(informer.run()):
            await wait_until(lambda: len(sink.resets) >= 3, timeout=5)
            assert informer.relists >= 2
            await store.put(prefix + b"b", b"2")
            await wait_until(lambda: sink.values() == {prefix + b"a": b"1", prefix + b"b": b"2"}, 5)


async def test_informer_resumes_after_resets_without_duplicates(
    no_leaked_tasks: None, etcd_endpoint: str, hub_prefix: str
) -> None:
    prefix = f"{hub_prefix}/r/".encode()
    async with (
        TcpProxy(etcd_endpoint) as proxy,
        Store(config(proxy.endpoint)) as via_proxy,
        Store(config(etcd_endpoint)) as direct,
    ):
        sink = Sink()
        informer = Informer(via_proxy, prefix, sink, progress_interval=0.2)
        written: list[tuple[bytes, int]] = []
        # The writer stops at each of these counts until the fault is in place, then goes
        # on writing while the informer is cut off or reconnecting.
        faults = {40: "reset", 100: "blackhole", 140: "reset", 200: "heal", 230: "reset"}
        at_gate, go = asyncio.Event(), asyncio.Event()

        async def writer() -> None:
            for i in range(260):
                if i in faults:
                    at_gate.set()
                    await go.wait()
                    go.clear()
                if i % 3 == 0:  # three keys in one revision: a resume re-sends all of them
                    keys = [prefix + b"t%d" % ((i + j) % 7) for j in range(3)]
                    result = await direct.txn((), [op_put(key, b"%d" % i) for key in keys])
                    written.extend((key, result.revision) for key in keys)
                else:
                    key = prefix + b"p%d" % (i % 5)
                    written.append((key, await direct.put(key, b"%d" % i)))

        async with running(informer.run()):
            await asyncio.wait_for(informer.synced.wait(), 5)
            async with running(writer()) as writing:
                try:
                    for fault in faults.values():
                        await asyncio.wait_for(at_gate.wait(), 10)
                        at_gate.clear()
                        if not proxy.blackholed:  # mid-stream: the watch is live
                            await wait_until(lambda: written[-1] in sink.applied, timeout=10)
                        if fault == "reset":
                            await proxy.reset()
                        elif fault == "blackhole":
                            proxy.blackhole()
                        else:
                            proxy.heal()
                        go.set()
                    await asyncio.wait_for(asyncio.shield(writing), 10)
                finally:
                    proxy.heal()
            final = await etcd_state(direct, prefix)
            await wait_until(lambda: sink.cache == final, timeout=10)

        duplicates = [pair for pair, n in Counter(sink.applied).items() if n > 1]
        assert not duplicates, f"applied twice: {duplicates[:5]}"
        assert sorted(sink.applied) == sorted(written)  # nothing lost either
        for key in {key for key, _ in written}:
            revisions = [rev for k, rev in sink.applied if k == key]
            assert revisions == sorted(revisions), f"{key!r} went back in time"
        assert informer.reconnects >= 3
        assert len(sink.resets) == 1 and informer.relists == 0


async def test_informer_relists_after_compaction_during_disconnect(
    no_leaked_tasks: None, own_etcd: LocalEtcd, hub_prefix: str
) -> None:
    prefix = f"{hub_prefix}/c/".encode()
    async with (
        TcpProxy(own_etcd.endpoint) as proxy,
        Store(config(proxy.endpoint)) as via_proxy,
        Store(config(own_etcd.endpoint)) as direct,
    ):
        for i in range(5):
            await direct.put(prefix + b"%d" % i, b"old")
        sink = Sink()
        informer = Informer(via_proxy, prefix, sink, progress_interval=0.2)
        async with running(informer.run()):
            await asyncio.wait_for(informer.synced.wait(), 5)
            assert sink.values() == {prefix + b"%d" % i: b"old" for i in range(5)}
            proxy.blackhole()
            try:
                await direct.put(prefix + b"0", b"new")
                await direct.delete(prefix + b"1")
                await direct.put(prefix + b"9", b"added")
                await direct.put(f"{hub_prefix}/unrelated".encode(), b"x")
                current = await direct.put(prefix + b"2", b"newer")
                await direct.compact(current)
                await proxy.reset()  # drop the old stream and whatever it held
            finally:
                proxy.heal()
            expected = await etcd_state(direct, prefix)
            await wait_until(lambda: sink.cache == expected, timeout=10)
            assert informer.relists >= 1
            assert len(sink.resets) >= 2 and sink.resets[-1][1] >= current
            # ... and it watches again after the relist.
            rev = await direct.put(prefix + b"3", b"after")
            await wait_until(lambda: sink.cache.get(prefix + b"3") == (b"after", rev), timeout=5)


async def test_informer_notices_a_silent_partition(
    no_leaked_tasks: None, etcd_endpoint: str, hub_prefix: str
) -> None:
    prefix = f"{hub_prefix}/s/".encode()
    stall_timeout, progress_interval = 1.0, 0.2
    async with (
        TcpProxy(etcd_endpoint) as proxy,
        Store(config(proxy.endpoint)) as via_proxy,
        Store(config(etcd_endpoint)) as direct,
    ):
        sink = Sink()
        informer = Informer(
            via_proxy,
            prefix,
            sink,
            progress_interval=progress_interval,
            stall_timeout=stall_timeout,
        )
        async with running(informer.run()):
            await asyncio.wait_for(informer.synced.wait(), 5)
            await direct.put(prefix + b"before", b"1")
            await wait_until(lambda: prefix + b"before" in sink.cache, timeout=5)
            reconnects = informer.reconnects
            proxy.blackhole()  # no FIN, no RST: only silence
            partitioned_at = time.monotonic()
            try:
                during = await direct.put(prefix + b"during", b"2")
                await wait_until(lambda: informer.reconnects > reconnects, timeout=5)
                noticed = time.monotonic() - partitioned_at
                assert noticed <= stall_timeout + 2 * progress_interval + 0.5
                assert prefix + b"during" not in sink.cache
                assert informer.store_revision < during  # it cannot know yet
            finally:
                proxy.heal()
            await wait_until(lambda: prefix + b"during" in sink.cache, timeout=10)
            after = await direct.put(prefix + b"after", b"3")
            await wait_until(lambda: sink.cache.get(prefix + b"after") == (b"3", after), timeout=5)
            assert sink.cache == await etcd_state(direct, prefix)
            assert informer.relists == 0 and len(sink.resets) == 1
            assert not [pair for pair, n in Counter(sink.applied).items() if n > 1]
