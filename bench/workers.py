"""Trivial worker targets for the benchmarks.

``bench.workers:idle`` does nothing until it is stopped, so a benchmark measures the hub
(placement, etcd writes, registry updates, supervision), not the work.
"""

from __future__ import annotations

import asyncio

from hub.worker import Context

#: The start target every benchmark child uses.
IDLE = "bench.workers:idle"


async def idle(ctx: Context) -> None:
    """Wait forever; cancellation (a stop) ends it."""
    await asyncio.get_running_loop().create_future()
