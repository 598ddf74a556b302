"""Worker targets for the supervisor and worker unit tests.

Tests name them as ``f"{sample_workers.__name__}:Attr"``, so the supervisor imports exactly the
module object the test imported (pytest puts ``tests/unit`` on ``sys.path``).

Workers report through module-level dicts keyed by child id; :func:`reset` clears them and an
autouse fixture calls it around every test.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hub.worker import Context

#: Every ctx a worker was started with, per child id, in order.
SEEN: dict[str, list[Context]] = {}
#: Per child id: was ``ctx.stopping`` set when the worker saw its cancellation?
STOPPING_AT_CANCEL: dict[str, bool] = {}
#: Per child id: set by the test to let a :class:`Stubborn` worker finish.
RELEASE: dict[str, asyncio.Event] = {}


def reset() -> None:
    """Forget everything recorded by earlier tests."""
    SEEN.clear()
    STOPPING_AT_CANCEL.clear()
    RELEASE.clear()


def _record(ctx: Context) -> None:
    SEEN.setdefault(ctx.child_id, []).append(ctx)


def runs(child_id: str) -> int:
    """How many instances of ``child_id`` started so far."""
    return len(SEEN.get(child_id, ()))


async def _run_until_cancelled(ctx: Context) -> None:
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        STOPPING_AT_CANCEL[ctx.child_id] = ctx.stopping.is_set()
        raise


class Sleeper:
    """Runs until cancelled."""

    async def run(self, ctx: Context) -> None:
        _record(ctx)
        await _run_until_cancelled(ctx)


async def sleeper(ctx: Context) -> None:
    """Function form of :class:`Sleeper`."""
    _record(ctx)
    await _run_until_cancelled(ctx)


class Scripted:
    """Exits as ``ctx.args`` says, after the start window.

    ``args``: ``exit`` is ``"normal"``, ``"crash"`` or ``"cancel"`` (raise CancelledError
    without being cancelled); the first ``times`` instances (default: all) exit that way after
    ``steps`` loop iterations (default 5, past the start window), later ones run until
    cancelled. ``message`` is the crash message.
    """

    async def run(self, ctx: Context) -> None:
        _record(ctx)
        args: dict[str, Any] = ctx.args
        times = args.get("times")
        if times is not None and runs(ctx.child_id) > times:
            await _run_until_cancelled(ctx)
            return
        for _ in range(args.get("steps", 5)):
            await asyncio.sleep(0)
        exit_kind = args["exit"]
        if exit_kind == "crash":
            raise ValueError(args.get("message", "boom"))
        if exit_kind == "cancel":
            raise asyncio.CancelledError
        args["mutated"] = True  # the next instance must still get pristine args


async def raise_at_start(ctx: Context) -> None:
    """Raises before its first suspension."""
    _record(ctx)
    raise ValueError("boom")


async def raise_after_one_step(ctx: Context) -> None:
    """Raises on its second step, still inside the start window."""
    _record(ctx)
    await asyncio.sleep(0)
    raise ValueError("boom")


async def return_at_once(ctx: Context) -> None:
    """Returns before its first suspension."""
    _record(ctx)


class Stubborn:
    """Ignores its first cancellation until ``RELEASE[child_id]`` is set, then stops."""

    async def run(self, ctx: Context) -> None:
        _record(ctx)
        release = RELEASE.setdefault(ctx.child_id, asyncio.Event())
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await release.wait()
            raise


class Outer:
    """Holds a nested worker class, for dotted attribute paths."""

    class Inner:
        async def run(self, ctx: Context) -> None:
            _record(ctx)


class BrokenInit:
    """Its constructor raises."""

    def __init__(self) -> None:
        raise RuntimeError("no constructor for you")

    async def run(self, ctx: Context) -> None:  # pragma: no cover - never built
        _record(ctx)


class SyncRun:
    """``run`` is not async."""

    def run(self, ctx: Context) -> None:  # pragma: no cover - rejected at resolution
        _record(ctx)


def sync_function(ctx: Context) -> None:  # pragma: no cover - rejected at resolution
    """Not async."""
    _record(ctx)


NOT_CALLABLE = 42


class Keeper:
    """Keeps the state it started from and hands it over unchanged."""

    def __init__(self) -> None:
        self.state: Any = None

    async def run(self, ctx: Context) -> None:
        self.state = ctx.state
        await ctx.stopping.wait()

    def handover_state(self) -> Any:
        return self.state
