"""A worker that records every activation and deactivation, for the at-most-one checker.

Each node process appends JSON lines to ``$PROCESSHUB_RECORD_DIR/<pid>.log`` with
``os.write`` on an ``O_APPEND`` descriptor: one unbuffered write per event, so a record
survives a ``kill -9`` of the process the instant after it was written. Times are
``time.monotonic()``, which is one clock for every process on a Linux machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

from examples.tenants.limiter import Bucket
from examples.tenants.worker import TenantLimiter
from hub.worker import Context

_fd: int | None = None


def _write(event: dict[str, object]) -> None:
    global _fd
    if _fd is None:
        directory = os.environ["PROCESSHUB_RECORD_DIR"]
        path = os.path.join(directory, f"{os.getpid()}.log")
        _fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(_fd, (json.dumps(event) + "\n").encode())


class Recorded:
    """Runs until cancelled; records start and stop with its fencing token."""

    async def run(self, ctx: Context) -> None:
        base = {
            "child": ctx.child_id,
            "node": ctx.node_id,
            "token": ctx.fencing_token,
            "role": ctx.role,
        }
        _write({"ev": "start", "t": time.monotonic(), "pid": os.getpid(), **base})
        try:
            await asyncio.Event().wait()
        finally:
            _write({"ev": "stop", "t": time.monotonic(), "pid": os.getpid(), **base})


class Stateful:
    """Counts; hands its count over (hot swap) and checkpoints it every few ticks.

    Records ``start`` with the state it received, ``ckpt`` after each successful
    checkpoint, and ``stop`` with its final count, so a test can check that state is never
    lost beyond the last checkpoint, and never at all across a graceful move.
    """

    def __init__(self) -> None:
        self.count = 0

    async def run(self, ctx: Context) -> None:
        base = {"child": ctx.child_id, "node": ctx.node_id, "token": ctx.fencing_token}
        self.count = ctx.state if isinstance(ctx.state, int) else 0
        _write(
            {
                "ev": "start",
                "t": time.monotonic(),
                "pid": os.getpid(),
                "state": self.count,
                "source": ctx.state_source,
                **base,
            }
        )
        try:
            while True:
                await asyncio.sleep(0.02)
                self.count += 1
                if self.count % 5 == 0:
                    value = self.count
                    await ctx.checkpoint(value)
                    _write(
                        {
                            "ev": "ckpt",
                            "t": time.monotonic(),
                            "pid": os.getpid(),
                            "value": value,
                            **base,
                        }
                    )
        finally:
            _write(
                {
                    "ev": "stop",
                    "t": time.monotonic(),
                    "pid": os.getpid(),
                    "count": self.count,
                    **base,
                }
            )

    def handover_state(self) -> int:
        return self.count


class Echo(Recorded):
    """Recorded, and answers calls with where it runs."""

    async def run(self, ctx: Context) -> None:
        self.ctx = ctx
        await super().run(ctx)

    async def handle_call(self, message: object) -> object:
        return {"echo": message, "node": self.ctx.node_id, "token": self.ctx.fencing_token}


class RecordedTenant(TenantLimiter):
    """The tenants example's worker (examples/tenants), recording its activations.

    ``start`` carries the counts it starts from and their source, ``stop`` the counts it
    stopped with (what ``handover_state`` then hands over): a test can check that a handed
    over bucket arrives exactly as it left.
    """

    def initial_bucket(self, ctx: Context) -> Bucket:
        bucket = super().initial_bucket(ctx)
        _write({"ev": "start", "t": time.monotonic(), "pid": os.getpid(), **_tenant(ctx, bucket)})
        return bucket

    async def run(self, ctx: Context) -> None:
        try:
            await super().run(ctx)
        finally:
            if self.bucket is not None:
                record = _tenant(ctx, self.bucket)
                _write({"ev": "stop", "t": time.monotonic(), "pid": os.getpid(), **record})


def _tenant(ctx: Context, bucket: Bucket) -> dict[str, object]:
    return {
        "child": ctx.child_id,
        "node": ctx.node_id,
        "token": ctx.fencing_token,
        "role": ctx.role,
        "source": ctx.state_source,
        "counts": [bucket.allowed, bucket.limited],
    }
