"""Leak checks for tests: asyncio tasks left pending, and node leases left alive.

:func:`leaked_tasks` lists the tasks still pending in the running loop (the caller's own
excepted), after a short grace for tasks being cancelled to finish.

:class:`LeaseTracker` records, while :meth:`~LeaseTracker.installed`, every lease a Hub's
:class:`~hub.etcd.session.Session` grants (node incarnations; handover leases are not
node leases: they expire by design after ``handover_ttl`` so the next owner can still
read the state), and :meth:`~LeaseTracker.leaked` says which are still alive:

* a lease the session *abandoned* (``Hub.abort``, a simulated crash) is revoked: its TTL
  would expire it a little later, nothing keeps it alive;
* any other lease still alive in etcd is waited for, up to its remaining TTL and a
  margin: a lease nobody renews expires (a revoke that failed during an outage); one
  still alive after that is being renewed, by a Hub the test never stopped. That is a
  leak. In a :class:`~hub.testing.FakeKV` any such lease is one (its clock may stand).

No pytest here; :mod:`hub.testing.plugin` turns these into fixtures.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from hub.errors import StoreError
from hub.etcd.connection import EtcdConfig
from hub.etcd.kv import KV
from hub.etcd.session import Session
from hub.etcd.store import Store
from hub.testing._wait import wait_for

__all__ = ["LeaseTracker", "leaked_tasks"]

#: Seconds a lease may outlive its remaining TTL before it counts as kept alive.
EXPIRY_MARGIN = 1.5
#: Deadline of the calls that check leases.
CHECK_TIMEOUT = 2.0


async def leaked_tasks(grace: float = 1.0) -> list[asyncio.Task[Any]]:
    """Tasks of the running loop still pending after ``grace`` seconds, except the caller."""
    current = asyncio.current_task()

    def pending() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if t is not current and not t.done()]

    with contextlib.suppress(TimeoutError):
        await wait_for(lambda: not pending(), grace, interval=0.01)
    return pending()


@dataclass
class _Granted:
    lease_id: int
    ttl: int
    store: KV
    abandoned: bool = False


class LeaseTracker:
    """Records node leases while installed, and finds the ones left alive."""

    def __init__(self) -> None:
        self.granted: list[_Granted] = []

    @contextlib.contextmanager
    def installed(self) -> Iterator[LeaseTracker]:
        """Record every lease a Session grants or abandons inside the block."""
        grant, abandon = Session.grant, Session.abandon
        tracker = self

        async def tracked_grant(session: Session) -> int:
            lease_id = await grant(session)
            tracker.granted.append(_Granted(lease_id, session.ttl, session.store))
            return lease_id

        def tracked_abandon(session: Session) -> None:
            for entry in tracker.granted:
                if entry.lease_id == session._lease_id and entry.store is session.store:
                    entry.abandoned = True
            abandon(session)

        Session.grant = tracked_grant  # type: ignore[method-assign, assignment]
        Session.abandon = tracked_abandon  # type: ignore[method-assign, assignment]
        try:
            yield self
        finally:
            Session.grant = grant  # type: ignore[method-assign]
            Session.abandon = abandon  # type: ignore[method-assign]

    async def leaked(self) -> list[str]:
        """The recorded leases still alive (see the module docstring), described."""
        leaks: list[str] = []
        stores: dict[tuple[str, ...], Store | None] = {}
        try:
            for entry in self.granted:
                kv = await self._checker(entry.store, stores)
                if kv is not None and await _outlives(kv, entry):
                    leaks.append(f"lease {entry.lease_id:x} (TTL {entry.ttl} s) is kept alive")
        finally:
            for store in stores.values():
                if store is not None:
                    await store.close()
        return leaks

    async def _checker(self, store: KV, stores: dict[tuple[str, ...], Store | None]) -> KV | None:
        """A KV to look at ``store``'s leases: itself unless it is a Store (closed with its
        Hub by now): then a new one to the same etcd, None if that etcd is gone."""
        config = getattr(store, "config", None)
        if not isinstance(store, Store) or not isinstance(config, EtcdConfig):
            return store
        if config.endpoints not in stores:
            stores[config.endpoints] = None
            if _reachable(config.endpoints):  # a stopped fresh etcd took its leases along
                checker = Store(replace(config, request_timeout=CHECK_TIMEOUT))
                try:
                    await checker.connect()
                except StoreError:
                    return None
                stores[config.endpoints] = checker
        return stores[config.endpoints]


async def _outlives(kv: KV, entry: _Granted) -> bool:
    """Whether the lease stays alive past its TTL; revokes an abandoned one first."""
    try:
        if entry.abandoned:
            await kv.lease_revoke(entry.lease_id, timeout=CHECK_TIMEOUT)
        ttl = await kv.lease_ttl(entry.lease_id, timeout=CHECK_TIMEOUT)
        if ttl < 0:
            return False
        if not isinstance(kv, Store):
            return True  # in memory: time may not pass at all (a ManualClock)
        deadline = time.monotonic() + ttl + EXPIRY_MARGIN
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)  # a poll interval: waiting for etcd to expire it
            if await kv.lease_ttl(entry.lease_id, timeout=CHECK_TIMEOUT) < 0:
                return False
        return True
    except StoreError:
        return False  # etcd went away with the test (a stopped fresh etcd): so did the lease


def _reachable(endpoints: tuple[str, ...]) -> bool:
    """Whether some endpoint accepts a TCP connection within 0.2 s."""
    for endpoint in endpoints:
        host, _, port = endpoint.rpartition(":")
        with contextlib.suppress(OSError):
            socket.create_connection((host.strip("[]"), int(port)), timeout=0.2).close()
            return True
    return False
