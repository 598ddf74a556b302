"""How a child's instance ended, and whether and when it runs again.

Part of :mod:`hub.core.supervisor` (import from there). The values here are the supervisor's
vocabulary for exits: :class:`ExitKind` and :class:`WorkerExit` (what the hub is told when a
child ends for good), ``_Outcome`` (how one instance ended, before the restart policy is
applied), the restart policy itself (``_should_restart``) and :func:`backoff_delay`.

Pure functions and frozen values: no I/O, no asyncio, no tasks. Randomness is a parameter
(``rand``), so the arithmetic is deterministic in tests.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hub.errors import WorkerCrashed, WorkerStartFailed
from hub.model import RestartPolicy
from hub.worker import describe_exception, truncate_reason

__all__ = [
    "BACKOFF_JITTER",
    "ExitKind",
    "WorkerExit",
    "backoff_delay",
]

#: Backoff delays are scaled by a random factor in (1 - JITTER, 1] so restarts spread out.
BACKOFF_JITTER = 0.1
#: 2**64 times any sane initial delay is far past any cap; avoids float overflow.
_MAX_BACKOFF_EXPONENT = 64


class ExitKind(enum.StrEnum):
    """How a child ended for good on this node."""

    NORMAL = "normal"  # returned and the policy does not restart it
    CRASHED = "crashed"  # raised (or restart intensity exceeded)
    START_FAILED = "start_failed"  # target not resolvable or raised within the start window


@dataclass(frozen=True, slots=True)
class WorkerExit:
    """The final exit of a child on this node; ``reason`` is a one-line string (<= 500).

    ``restarts`` is how often the supervisor restarted the child before this exit: the
    authoritative count, which records about the child (the owner record) must not take
    from a cache that may lag behind the last ``worker_restarting``.
    """

    child_id: str
    kind: ExitKind
    reason: str
    exit_code: int | None = None
    restarts: int = 0


def backoff_delay(attempt: int, *, initial: float, maximum: float, rand: float) -> float:
    """Delay before restart number ``attempt`` (0-based since the last reset).

    ``min(maximum, initial * 2**attempt)`` scaled by ``1 - BACKOFF_JITTER * rand``, so it
    never exceeds ``maximum``.

    Args:
        attempt: restarts since the backoff was last reset.
        initial: the first delay, in seconds.
        maximum: the cap, in seconds.
        rand: a number in ``[0, 1)`` (``random.random()``); fixed in tests.
    """
    base = min(maximum, initial * 2.0 ** min(attempt, _MAX_BACKOFF_EXPONENT))
    return base * (1.0 - BACKOFF_JITTER * rand)


@dataclass(frozen=True, slots=True)
class _Outcome:
    """How one instance ended, before the restart policy is applied."""

    kind: ExitKind
    reason: str
    exit_code: int | None = None


def _should_restart(policy: RestartPolicy, kind: ExitKind) -> bool:
    if policy is RestartPolicy.PERMANENT:
        return True
    if policy is RestartPolicy.TRANSIENT:
        return kind is ExitKind.CRASHED
    return False


def _failure_reason(exc: BaseException) -> str:
    """Reason for an instance's exception; our own worker errors already carry a clean one."""
    if isinstance(exc, WorkerStartFailed | WorkerCrashed):
        return truncate_reason(f"{type(exc).__name__}: {exc.reason}")
    return describe_exception(exc)


def _exit_code(error: BaseException | None) -> int | None:
    return error.exit_code if isinstance(error, WorkerCrashed) else None
