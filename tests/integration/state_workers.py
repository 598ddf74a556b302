"""Stateful workers for the migration tests (imported as ``integration.state_workers``)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from hub.worker import Context

#: child id -> the latest instance (all hubs of a test share this module)
INSTANCES: dict[str, Counter] = {}
#: (child id, node, token, "start"|"stop", monotonic time): activations across all hubs
EVENTS: list[tuple[str, str, int, str, float]] = []
#: (child id, node) -> the latest instance there (replication runs several per child)
BY_NODE: dict[tuple[str, str], Counter] = {}


class Counter:
    """Holds a count; hands it over on migration; can checkpoint it."""

    def __init__(self) -> None:
        self.count = 0
        self.ctx: Context | None = None
        self.active = False

    async def run(self, ctx: Context) -> None:
        self.ctx = ctx
        state = ctx.state if isinstance(ctx.state, dict) else {}
        self.count = int(state.get("count", 0))
        INSTANCES[ctx.child_id] = self
        BY_NODE[(ctx.child_id, ctx.node_id)] = self
        self.active = True
        EVENTS.append((ctx.child_id, ctx.node_id, ctx.fencing_token, "start", time.monotonic()))
        try:
            await asyncio.Event().wait()
        finally:
            self.active = False
            EVENTS.append((ctx.child_id, ctx.node_id, ctx.fencing_token, "stop", time.monotonic()))

    def handover_state(self) -> dict[str, Any]:
        return {"count": self.count}


class Doubling(Counter):
    """Alters the state it receives by handover (ProcessHub's alter_handover_state)."""

    def alter_handover_state(self, state: dict[str, Any]) -> dict[str, Any]:
        return {"count": int(state["count"]) * 2}


class BytesState(Counter):
    """Hands over raw bytes instead of JSON."""

    async def run(self, ctx: Context) -> None:
        self.blob = ctx.state if isinstance(ctx.state, bytes) else b""
        await super().run(ctx)

    def handover_state(self) -> bytes:  # type: ignore[override]
        return self.blob


def reset() -> None:
    INSTANCES.clear()
    EVENTS.clear()
    BY_NODE.clear()


def overlaps() -> list[str]:
    """Children that had two active instances at once, from EVENTS."""
    open_: dict[str, int] = {}
    bad = []
    for child_id, _node, _token, kind, _t in sorted(EVENTS, key=lambda e: e[4]):
        if kind == "start":
            open_[child_id] = open_.get(child_id, 0) + 1
            if open_[child_id] > 1:
                bad.append(child_id)
        else:
            open_[child_id] -= 1
    return bad


class CrashOnce:
    """Crashes right after its first start on a node (ProcessHub 8a scenario 7)."""

    crashed: set[tuple[str, int]] = set()

    async def run(self, ctx: Context) -> None:
        key = (ctx.child_id, ctx.fencing_token)
        await asyncio.sleep(0.05)
        if key not in CrashOnce.crashed:
            CrashOnce.crashed.add(key)
            raise RuntimeError("crash once")
        await asyncio.Event().wait()


class Echo(Counter):
    """Answers calls in order; counts casts (a message-driven worker)."""

    async def handle_call(self, message: Any) -> Any:
        if message == "boom":
            raise ValueError("handler exploded")
        if message == "count":
            return self.count
        assert self.ctx is not None
        return {"echo": message, "node": self.ctx.node_id, "token": self.ctx.fencing_token}

    async def handle_cast(self, message: Any) -> None:
        self.count += int(message)
