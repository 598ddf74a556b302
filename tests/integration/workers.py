"""Worker targets for the hub integration tests.

Tests name them as ``f"{workers.__name__}:Attr"`` so the supervisor imports the very module
object the test imported. Workers record what they saw in module-level structures, keyed by
child id; :func:`reset` clears them (an autouse fixture calls it around every test).

Control is by args, never by timing: ``Crash`` raises on every start after its start
window, ``ExitNormally`` returns, ``Gate`` waits for the test to open it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hub.worker import Context

#: Every ctx a worker was started with, per child id, in order.
SEEN: dict[str, list[Context]] = {}
#: Per child id: how many instances ended because they were cancelled (stopped).
CANCELLED: dict[str, int] = {}
#: Per child id: set by a test to let a gated worker take its next step.
GATES: dict[str, asyncio.Event] = {}


def reset() -> None:
    """Forget everything recorded by earlier tests."""
    SEEN.clear()
    CANCELLED.clear()
    GATES.clear()


def runs(child_id: str) -> int:
    """How many instances of ``child_id`` started so far (on any hub of this process)."""
    return len(SEEN.get(child_id, ()))


def tokens(child_id: str) -> list[int]:
    """Fencing tokens of every instance of ``child_id``, in start order."""
    return [ctx.fencing_token for ctx in SEEN.get(child_id, ())]


def gate(child_id: str) -> asyncio.Event:
    """The event a :class:`Gated` worker waits on before it takes its action."""
    return GATES.setdefault(child_id, asyncio.Event())


def _record(ctx: Context) -> None:
    SEEN.setdefault(ctx.child_id, []).append(ctx)


async def _forever(ctx: Context) -> None:
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        CANCELLED[ctx.child_id] = CANCELLED.get(ctx.child_id, 0) + 1
        raise


async def _pass_start_window() -> None:
    # The supervisor counts an instance as started after two loop iterations; yield a few
    # more so the exit below is a crash / normal exit and not a start failure.
    for _ in range(5):
        await asyncio.sleep(0)


class Sleeper:
    """Runs until stopped."""

    async def run(self, ctx: Context) -> None:
        _record(ctx)
        await _forever(ctx)


async def sleeper(ctx: Context) -> None:
    """Function form of :class:`Sleeper`."""
    _record(ctx)
    await _forever(ctx)


class FailAtStart:
    """Raises inside its start window: a start failure."""

    async def run(self, ctx: Context) -> None:
        _record(ctx)
        raise RuntimeError(f"refusing to start {ctx.child_id}")


class ExitNormally:
    """Runs past its start window, then returns (a normal exit)."""

    async def run(self, ctx: Context) -> None:
        _record(ctx)
        await _pass_start_window()


class Crash:
    """Runs past its start window, then raises (a crash)."""

    async def run(self, ctx: Context) -> None:
        _record(ctx)
        await _pass_start_window()
        raise RuntimeError(f"crash #{runs(ctx.child_id)}")


class Gated:
    """Runs until the test opens its gate, then does ``args["then"]``: "exit" or "crash".

    Every instance waits on the same gate; a test clears it again to hold the next one.
    """

    async def run(self, ctx: Context) -> None:
        _record(ctx)
        args: dict[str, Any] = ctx.args if isinstance(ctx.args, dict) else {}
        event = gate(ctx.child_id)
        try:
            await event.wait()
        except asyncio.CancelledError:
            CANCELLED[ctx.child_id] = CANCELLED.get(ctx.child_id, 0) + 1
            raise
        event.clear()
        if args.get("then") == "crash":
            raise RuntimeError("crashed on request")


#: Not a worker: neither an async function nor a class with an async ``run``.
NOT_A_WORKER = 42
