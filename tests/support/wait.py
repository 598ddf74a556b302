"""Poll-with-deadline helpers: the one synchronisation primitive tests use.

Never ``sleep(n)`` and hope: wait for the observable condition, with a deadline.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

__all__ = ["wait_until", "wait_until_sync"]


def _check_args(timeout: float, interval: float) -> None:
    if timeout < 0:
        raise ValueError(f"timeout must be >= 0, got {timeout}")
    if interval <= 0:
        raise ValueError(f"interval must be > 0, got {interval}")


def _failure(predicate: Callable[..., object], timeout: float, message: str) -> AssertionError:
    name = getattr(predicate, "__qualname__", repr(predicate))
    return AssertionError(message or f"condition {name} not met within {timeout:.2f}s")


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float,
    interval: float = 0.02,
    message: str = "",
) -> None:
    """Poll ``predicate`` until it returns true, at most ``timeout`` seconds.

    ``predicate`` may be a plain function or return an awaitable (e.g. an ``async def``);
    it is always evaluated at least once, and once more at the deadline. Exceptions it
    raises propagate unchanged.

    Raises:
        AssertionError: with ``message`` (or a default naming the predicate) on timeout.
    """
    _check_args(timeout, interval)
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _failure(predicate, timeout, message)
        await asyncio.sleep(min(interval, remaining))


def wait_until_sync(
    predicate: Callable[[], bool],
    timeout: float,
    interval: float = 0.02,
    message: str = "",
) -> None:
    """Blocking twin of :func:`wait_until` for synchronous tests and fixtures."""
    _check_args(timeout, interval)
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _failure(predicate, timeout, message)
        time.sleep(min(interval, remaining))
