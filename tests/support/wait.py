"""Poll-with-deadline helpers: the one synchronisation primitive tests use.

Never ``sleep(n)`` and hope: wait for the observable condition, with a deadline.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from hub.testing import wait_for

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

    The testing kit's :func:`hub.testing.wait_for`, with a timeout reported as a test
    failure: ``predicate`` may be plain or ``async``, runs at least once and once more at
    the deadline, and its own exceptions propagate unchanged.

    Raises:
        AssertionError: with ``message`` (or a default naming the predicate) on timeout.
    """
    try:
        await wait_for(predicate, timeout, interval=interval, message=message)
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None


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
