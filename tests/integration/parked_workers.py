"""Workers for tests/integration/test_parked.py (imported as ``integration.parked_workers``).

Control is by args and by the instance's place (node, role), never by timing.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hub.worker import Context

#: (child id, node id) -> every ctx an instance was started with there, in order
SEEN: dict[tuple[str, str], list[Context]] = {}
#: child id -> opened by a test to let :class:`CrashAfterGate` start crashing
GATES: dict[str, asyncio.Event] = {}


def reset() -> None:
    SEEN.clear()
    GATES.clear()


def runs(child_id: str, node_id: str) -> int:
    """Instances of ``child_id`` started on ``node_id`` so far."""
    return len(SEEN.get((child_id, node_id), ()))


def gate(child_id: str) -> asyncio.Event:
    return GATES.setdefault(child_id, asyncio.Event())


async def _pass_start_window() -> None:
    # Past the supervisor's start window (two loop iterations), so raising is a crash.
    for _ in range(5):
        await asyncio.sleep(0)


def _args(ctx: Context) -> dict[str, Any]:
    return ctx.args if isinstance(ctx.args, dict) else {}


class CrashAfterGate:
    """Waits for its gate once; from then on every instance crashes right after starting."""

    async def run(self, ctx: Context) -> None:
        SEEN.setdefault((ctx.child_id, ctx.node_id), []).append(ctx)
        await gate(ctx.child_id).wait()
        await _pass_start_window()
        raise RuntimeError(f"crash after restart {ctx.restarts}")


class CrashAsReplicaOn:
    """Crashes as a replica (no fencing token) on the node ``args["node"]``; runs as
    anything else: a standby that cannot work on one node while the child is healthy."""

    async def run(self, ctx: Context) -> None:
        SEEN.setdefault((ctx.child_id, ctx.node_id), []).append(ctx)
        await _pass_start_window()
        if ctx.fencing_token == 0 and ctx.node_id == _args(ctx).get("node"):
            raise RuntimeError(f"standby cannot run on {ctx.node_id}")
        await asyncio.Event().wait()
