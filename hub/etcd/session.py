"""The node's lease: grant, keep alive, and notice loss *before* etcd does.

A :class:`Session` holds one lease at a time. Its keep-alive loop renews every TTL/3 and
keeps a **local validity deadline**::

    deadline = (time the last successful keep-alive request was *sent*) + TTL - margin

etcd's countdown for a renewal starts when the server receives the request, which is after
we sent it, so our deadline always falls before the server's expiry. When the deadline
passes without a successful renewal, or etcd answers TTL <= 0 (aetcd-style "lease gone"),
the session declares the lease lost: it calls ``on_lost`` synchronously, so the hub stops
every worker it owns while etcd still holds the owner keys, then grants a new lease (a new
*incarnation*) with backoff and calls ``on_granted``.

Ownership: the Hub owns the Session and runs :meth:`Session.run` in its task group.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

from hub.errors import SessionLost, StoreError
from hub.etcd.kv import KV
from hub.logs import get_logger

log = get_logger("hub.etcd.session")


class Session:
    """One lease at a time, renewed in the background, with a local deadline.

    Args:
        store: the etcd store (any :class:`~hub.etcd.kv.KV`).
        ttl: lease TTL in seconds (>= 2).
        margin: seconds subtracted from the local deadline to leave time to stop workers;
            default ``max(0.5, ttl / 5)``.
        on_lost: called (and awaited) with the lost lease id before a new lease is granted.
        on_granted: called (and awaited) with each newly granted lease id.
        clock: monotonic clock, injectable for tests.
    """

    def __init__(
        self,
        store: KV,
        ttl: int,
        *,
        margin: float | None = None,
        on_lost: Callable[[int], Awaitable[None]] | None = None,
        on_granted: Callable[[int], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl < 2:
            raise ValueError("lease TTL must be at least 2 seconds")
        self.store = store
        self.ttl = ttl
        self.margin = margin if margin is not None else max(0.5, ttl / 5)
        if not 0 < self.margin < ttl:
            raise ValueError("margin must be between 0 and the TTL")
        self._on_lost = on_lost
        self._on_granted = on_granted
        self._clock = clock
        self._lease_id = 0
        self._deadline = 0.0
        self._valid = asyncio.Event()
        self._stale: list[int] = []  # lost leases that etcd may still hold
        self.incarnations = 0

    @property
    def lease_id(self) -> int:
        """The current lease id; 0 while no valid lease is held."""
        return self._lease_id if self.is_valid() else 0

    def is_valid(self) -> bool:
        """True while the local deadline has not passed."""
        return self._lease_id != 0 and self._clock() < self._deadline

    def time_left(self) -> float:
        """Seconds until the local deadline (0 when invalid)."""
        return max(0.0, self._deadline - self._clock()) if self._lease_id else 0.0

    async def wait_valid(self) -> int:
        """Wait until a lease is held; returns its id."""
        while True:
            await self._valid.wait()
            if self.is_valid():
                return self._lease_id
            await asyncio.sleep(0.01)

    def require(self) -> int:
        """The current lease id, or raise SessionLost."""
        if not self.is_valid():
            raise SessionLost(self._lease_id, "no valid lease")
        return self._lease_id

    async def grant(self) -> int:
        """Grant a new lease and start its deadline (used before ``run`` for the first one)."""
        sent = self._clock()
        lease_id, granted = await self.store.lease_grant(self.ttl)
        self._lease_id = lease_id
        self._deadline = sent + granted - self.margin
        self.incarnations += 1
        self._valid.set()
        log.info("lease granted", extra={"lease_id": f"{lease_id:x}", "ttl": granted})
        return lease_id

    async def run(self) -> None:
        """Keep the lease alive forever; on loss, fence and re-grant. Returns on cancel."""
        backoff = 0.1
        while True:
            if not self._lease_id:
                try:
                    lease_id = await self.grant()
                except StoreError as exc:
                    log.warning("lease grant failed: %s", exc)
                    await asyncio.sleep(backoff * (1 + random.random()))
                    backoff = min(backoff * 2, max(1.0, self.ttl / 3))
                    continue
                backoff = 0.1
                await self._revoke_stale()
                if self._on_granted is not None:
                    await self._on_granted(lease_id)
            lost_reason = await self._keep_alive_until_lost()
            lost = self._lease_id
            self._lease_id = 0
            self._valid.clear()
            log.warning("lease %x lost: %s", lost, lost_reason)
            if self._on_lost is not None:
                await self._on_lost(lost)
            # Drop the old incarnation's keys as soon as etcd answers rather than after its
            # TTL (etcd even extends leases when it restarts), so the cluster converges sooner.
            self._stale.append(lost)
            await self._revoke_stale()

    async def _revoke_stale(self) -> None:
        """Best effort: revoke leases of previous incarnations."""
        while self._stale:
            try:
                await self.store.lease_revoke(self._stale[0], timeout=min(1.0, self.ttl / 3))
            except StoreError:
                return
            self._stale.pop(0)

    async def _keep_alive_until_lost(self) -> str:
        """Renew every TTL/3 until the lease is lost; returns why."""
        interval = self.ttl / 3
        next_send = self._clock() + interval
        while True:
            now = self._clock()
            if now >= self._deadline:
                return "local deadline passed"
            # Sleep until the next renewal, but never past the deadline.
            await asyncio.sleep(max(0.0, min(next_send, self._deadline) - now))
            if self._clock() >= self._deadline:
                return "local deadline passed"
            sent = self._clock()
            budget = self._deadline - sent
            try:
                ttl = await self.store.lease_keepalive(
                    self._lease_id, timeout=min(budget, interval)
                )
            except StoreError as exc:
                log.debug("keep-alive failed: %s", exc)
                # Retry soon; the deadline bounds how long we keep trying.
                next_send = self._clock() + min(0.2, interval)
                continue
            if ttl <= 0:
                return "etcd reports the lease is gone"
            self._deadline = sent + ttl - self.margin
            next_send = sent + interval

    def abandon(self) -> None:
        """Forget the lease without revoking it, as a crashed process would: etcd expires it
        after the TTL, and with it every key it holds (fault drills and ``Hub.abort``)."""
        self._lease_id = 0
        self._valid.clear()

    async def revoke(self) -> None:
        """Give the lease back (graceful leave), bounded by the TTL: after that it is gone."""
        lease_id, self._lease_id = self._lease_id, 0
        self._valid.clear()
        if lease_id:
            try:
                await self.store.lease_revoke(lease_id, timeout=min(float(self.ttl), 5.0))
            except StoreError as exc:
                log.warning("lease revoke failed (it expires on its own): %s", exc)
