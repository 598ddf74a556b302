"""Worker targets for the benchmarks.

``bench.workers:idle`` does nothing until it is stopped, so a benchmark measures the hub
(placement, etcd writes, registry updates, supervision), not the work.

``bench.workers:Stateful`` (the hot-swap benchmark, ``bench/hotswap.py``) is idle too, but
holds :data:`STATE_BYTES` random bytes and hands them over on migration
(``handover_state``). Every instance leaves a record in this process's :data:`JOURNAL`:
when its ``run`` began and was cancelled (``time.monotonic()``, one clock for all
processes on Linux), where its state came from, and the state it held, so the driver can
compute each moved child's gap and check that the state arrived intact.

``bench.workers:Echo`` (the call/cast benchmark, ``bench/calls.py``) is idle too, but
answers every ``call`` with its message and counts ``cast``s, so the benchmark measures
the message path (lookup, codec, RPC, mailbox), not the handler.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from typing import Any

from hub.worker import Context

#: The start target of the core benchmark's children.
IDLE = "bench.workers:idle"
#: The start target of the hot-swap benchmark's children.
STATEFUL = "bench.workers:Stateful"
#: The start target of the call/cast benchmark's children.
ECHO = "bench.workers:Echo"
#: Bytes of state each stateful child holds.
STATE_BYTES = 1024


async def idle(ctx: Context) -> None:
    """Wait forever; cancellation (a stop) ends it."""
    await asyncio.get_running_loop().create_future()


class Echo:
    """Replies to every call with the message itself; counts casts. Otherwise idle."""

    __slots__ = ("casts",)

    def __init__(self) -> None:
        self.casts = 0

    async def run(self, ctx: Context) -> None:
        await asyncio.get_running_loop().create_future()

    async def handle_call(self, message: Any) -> Any:
        return message

    async def handle_cast(self, message: Any) -> None:
        self.casts += 1


class Instance:
    """What one run of a :class:`Stateful` worker did (kept in :data:`JOURNAL`)."""

    __slots__ = ("child_id", "handed", "received", "source", "started", "state", "stopped", "token")

    def __init__(self, ctx: Context, started: float, received: Any, state: bytes) -> None:
        self.child_id = ctx.child_id
        self.token = ctx.fencing_token
        self.started = started  # monotonic: first thing run() did
        self.source = ctx.state_source  # "handover", "checkpoint" or None
        self.received = received  # ctx.state as received (None: started fresh)
        self.state = state  # the state this instance held (and hands over)
        self.stopped: float | None = None  # monotonic: run() saw its cancellation
        self.handed: float | None = None  # monotonic: handover_state() was called


#: child id -> its instances in this process, in start order.
JOURNAL: dict[str, list[Instance]] = {}


class Stateful:
    """Holds ``STATE_BYTES`` random bytes (set at its first start); hands them over."""

    __slots__ = ("record",)

    async def run(self, ctx: Context) -> None:
        started = time.monotonic()
        received = ctx.state
        state = received if isinstance(received, bytes) else os.urandom(STATE_BYTES)
        record = self.record = Instance(ctx, started, received, state)
        JOURNAL.setdefault(ctx.child_id, []).append(record)
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            record.stopped = time.monotonic()
            raise

    def handover_state(self) -> bytes:
        """Called by the hub after ``run`` was cancelled: the state for the next owner."""
        self.record.handed = time.monotonic()
        return self.record.state


def _digest(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, bytes):
        return f"not-bytes:{type(value).__name__}"
    return f"{len(value)}:{hashlib.blake2b(value, digest_size=8).hexdigest()}"


def journal_rows(node_id: str) -> list[list[Any]]:
    """:data:`JOURNAL` as JSON rows, digests instead of bytes.

    Row: ``[child_id, node_id, token, started, source, received_digest, held_digest,
    stopped, handed]`` (``received_digest`` is None for a fresh start).
    """
    return [
        [
            r.child_id,
            node_id,
            r.token,
            r.started,
            r.source,
            _digest(r.received),
            _digest(r.state),
            r.stopped,
            r.handed,
        ]
        for records in JOURNAL.values()
        for r in records
    ]
