"""The child that owns one tenant's token bucket: ``examples.tenants.worker:TenantLimiter``.

One instance per tenant runs in the whole cluster (processhub's at-most-one rule), so its
bucket needs no lock and no shared database: hits are messages handled one at a time by
``handle_call``. The bucket travels with the tenant:

* a graceful move (a node drains, joins or an operator moves the tenant) hands the bucket
  over under ``--migration hot``: the next instance starts exactly where this one stopped;
* a checkpoint every :attr:`TenantLimiter.checkpoint_interval` seconds (when something
  changed) bounds what a crash of the node loses.

Messages (``hub.call(child_id, message)``): ``{"op": "hit"}`` takes a token,
``{"op": "get"}`` reads the bucket. Both reply with :meth:`TenantLimiter.view`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from examples.tenants.limiter import Bucket, Policy
from hub import Context
from hub.errors import StaleFence, StoreError

log = logging.getLogger("examples.tenants")

#: The start target of tenant children (matches the allow-list ``examples.tenants.*``).
TARGET = "examples.tenants.worker:TenantLimiter"


class TenantLimiter:
    """One tenant's rate limiter and usage counters (see the module docstring)."""

    #: Seconds between two checkpoints of a bucket that changed.
    checkpoint_interval = 1.0

    def __init__(self) -> None:
        self.bucket: Bucket | None = None
        self.policy = Policy()
        self.ctx: Context | None = None
        # Messages may arrive before run() has read the handed-over state: they wait.
        self._loaded = asyncio.Event()
        self._changed = asyncio.Event()

    async def run(self, ctx: Context) -> None:
        self.ctx = ctx
        self.policy = Policy.from_args(ctx.args or {})
        self.bucket = self.initial_bucket(ctx)
        self._loaded.set()
        source = ctx.state_source or "new"
        log.info("tenant %s started (%s, %d hits)", ctx.child_id, source, self.bucket.hits)
        try:
            while True:
                await self._changed.wait()
                self._changed.clear()
                await self._checkpoint(ctx)
                await asyncio.sleep(self.checkpoint_interval)
        finally:
            log.info("tenant %s stopped (%d hits)", ctx.child_id, self.bucket.hits)

    def initial_bucket(self, ctx: Context) -> Bucket:
        """The bucket this instance starts from: handed over, checkpointed, or full."""
        if isinstance(ctx.state, dict):
            try:
                return Bucket.from_state(ctx.state, self.policy)
            except ValueError as exc:
                log.warning("tenant %s: ignoring bad state: %s", ctx.child_id, exc)
        # Wall clock: the bucket stays meaningful on whichever node runs the tenant next.
        return Bucket.full(self.policy, time.time())

    async def _checkpoint(self, ctx: Context) -> None:
        assert self.bucket is not None
        try:
            await ctx.checkpoint(self.bucket.to_state())
        except StaleFence:
            return  # a newer owner exists; this instance is about to be stopped
        except StoreError as exc:
            log.warning("tenant %s: checkpoint failed: %s", ctx.child_id, exc)
            self._changed.set()  # try again next round

    async def handle_call(self, message: Any) -> dict[str, Any]:
        await self._loaded.wait()
        assert self.bucket is not None
        op = message.get("op") if isinstance(message, dict) else None
        now = time.time()
        if op == "hit":
            # No await from here to the reply: a hit is either fully counted or not at all.
            allowed, self.bucket = self.bucket.hit(self.policy, now)
            self._changed.set()
            return self.view(now, allowed=allowed)
        if op == "get":
            return self.view(now)
        raise ValueError(f"unknown message {message!r}: expected op 'hit' or 'get'")

    def view(self, now: float, *, allowed: bool | None = None) -> dict[str, Any]:
        """The reply to every message: the bucket as of ``now`` and who answers."""
        assert self.bucket is not None and self.ctx is not None
        current = self.bucket.refilled(self.policy, now)
        reply: dict[str, Any] = {
            "tokens": round(current.tokens, 3),
            "capacity": self.policy.capacity,
            "refill_per_second": self.policy.refill_per_second,
            "hits": current.hits,
            "allowed_hits": current.allowed,
            "limited_hits": current.limited,
            "retry_after": _rounded(current.retry_after(self.policy)),
            "node": self.ctx.node_id,
            "fencing_token": self.ctx.fencing_token,
            "state_source": self.ctx.state_source or "new",
        }
        if allowed is not None:
            reply["allowed"] = allowed
        return reply

    def handover_state(self) -> dict[str, Any] | None:
        """The bucket for the next owner (called after run() was cancelled for a move)."""
        return self.bucket.to_state() if self.bucket is not None else None


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)
