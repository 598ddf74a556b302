"""Poll a condition with a deadline: the one way the testing kit waits.

Tests never ``sleep(n)`` and hope; they wait for what they can observe, with a timeout
that is only a ceiling.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["poll", "wait_for"]

T = TypeVar("T")


async def poll(
    probe: Callable[[], T | None],
    timeout: float,
    *,
    interval: float = 0.02,
    explain: Callable[[], str] | None = None,
) -> T:
    """Call ``probe`` until it returns something other than None; return that.

    ``probe`` runs at least once, and once more at the deadline.

    Raises:
        TimeoutError: still None after ``timeout`` s; the message is ``explain()``'s.
        ValueError: ``timeout < 0`` or ``interval <= 0``.
    """
    if timeout < 0 or interval <= 0:
        raise ValueError(f"need timeout >= 0 and interval > 0, got {timeout}, {interval}")
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            detail = explain() if explain is not None else "condition not met"
            raise TimeoutError(f"{detail} (after {timeout:g}s)")
        await asyncio.sleep(min(interval, remaining))


async def wait_for(
    condition: Callable[[], bool | Awaitable[bool]],
    timeout: float,
    *,
    interval: float = 0.02,
    message: str = "",
) -> None:
    """Wait until ``condition()`` (plain or ``async``) is true, at most ``timeout`` s.

    Raises:
        TimeoutError: with ``message`` (or the condition's name) on timeout.
    """
    if timeout < 0 or interval <= 0:
        raise ValueError(f"need timeout >= 0 and interval > 0, got {timeout}, {interval}")
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            name = getattr(condition, "__qualname__", repr(condition))
            raise TimeoutError(f"{message or f'{name} not true'} (after {timeout:g}s)")
        await asyncio.sleep(min(interval, remaining))
