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
        base = {"child": ctx.child_id, "node": ctx.node_id, "token": ctx.fencing_token}
        _write({"ev": "start", "t": time.monotonic(), "pid": os.getpid(), **base})
        try:
            await asyncio.Event().wait()
        finally:
            _write({"ev": "stop", "t": time.monotonic(), "pid": os.getpid(), **base})
