"""A token bucket with usage counters, as pure values: no clock, no I/O, no asyncio.

A bucket holds up to ``capacity`` tokens and gains ``refill_per_second`` tokens per second;
a hit takes one token if there is one (allowed) and is refused otherwise (limited). Time is
passed in, so the worker can use wall-clock seconds (meaningful on every node a tenant moves
to) and tests can use any sequence of instants.

Clocks of different machines disagree a little: an instant earlier than the bucket's last
update adds no tokens and never moves ``updated_at`` back, so a tenant that moves to a node
whose clock lags is never credited twice for the same interval.

Guarantee: over any sequence of hits, the number allowed is at most ``capacity`` plus
``refill_per_second`` times the time elapsed between the first and the last hit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["Bucket", "Policy"]


@dataclass(frozen=True, slots=True)
class Policy:
    """How much burst a tenant gets and how fast it earns it back.

    Raises:
        ValueError: ``capacity`` is not a positive finite number, or ``refill_per_second``
            is negative or not finite.
    """

    capacity: float = 10.0
    refill_per_second: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.capacity) and self.capacity > 0):
            raise ValueError(f"capacity must be a positive number, got {self.capacity!r}")
        if not (math.isfinite(self.refill_per_second) and self.refill_per_second >= 0):
            raise ValueError(
                f"refill_per_second must be a number >= 0, got {self.refill_per_second!r}"
            )

    def to_args(self) -> dict[str, float]:
        """The policy as child spec args (JSON)."""
        return {"capacity": self.capacity, "refill_per_second": self.refill_per_second}

    @classmethod
    def from_args(cls, args: Mapping[str, Any]) -> Policy:
        """The policy stored in a child spec's args; missing fields take the defaults."""
        defaults = cls()
        return cls(
            capacity=float(args.get("capacity", defaults.capacity)),
            refill_per_second=float(args.get("refill_per_second", defaults.refill_per_second)),
        )


@dataclass(frozen=True, slots=True)
class Bucket:
    """One tenant's tokens at ``updated_at`` (seconds) and what it has been asked so far."""

    tokens: float
    updated_at: float
    allowed: int = 0
    limited: int = 0

    @classmethod
    def full(cls, policy: Policy, now: float) -> Bucket:
        """A new tenant: a full bucket, nothing counted."""
        return cls(tokens=policy.capacity, updated_at=now)

    @property
    def hits(self) -> int:
        """Every hit counted, allowed or limited."""
        return self.allowed + self.limited

    def refilled(self, policy: Policy, now: float) -> Bucket:
        """The bucket as of ``now``: tokens earned since the last update, capped."""
        elapsed = max(0.0, now - self.updated_at)
        tokens = min(policy.capacity, self.tokens + elapsed * policy.refill_per_second)
        return replace(self, tokens=tokens, updated_at=max(self.updated_at, now))

    def hit(self, policy: Policy, now: float) -> tuple[bool, Bucket]:
        """Take one token at ``now``: ``(allowed, the bucket after the hit)``."""
        current = self.refilled(policy, now)
        if current.tokens >= 1.0:
            return True, replace(current, tokens=current.tokens - 1.0, allowed=current.allowed + 1)
        return False, replace(current, limited=current.limited + 1)

    def retry_after(self, policy: Policy) -> float | None:
        """Seconds until the next token, or None if the bucket never refills."""
        if self.tokens >= 1.0:
            return 0.0
        if policy.refill_per_second == 0:
            return None
        return (1.0 - self.tokens) / policy.refill_per_second

    def to_state(self) -> dict[str, Any]:
        """JSON state for handover and checkpoints."""
        return {
            "tokens": self.tokens,
            "updated_at": self.updated_at,
            "allowed": self.allowed,
            "limited": self.limited,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], policy: Policy) -> Bucket:
        """A bucket from :meth:`to_state` output, clamped to what ``policy`` allows.

        Raises:
            ValueError: a field is missing, of the wrong type, or negative.
        """
        try:
            tokens = float(state["tokens"])
            updated_at = float(state["updated_at"])
            allowed = int(state["allowed"])
            limited = int(state["limited"])
        except (KeyError, TypeError, ValueError, OverflowError) as exc:  # int(inf) overflows
            raise ValueError(f"not a bucket state: {exc!r}") from None
        if not (math.isfinite(tokens) and math.isfinite(updated_at)):
            raise ValueError("bucket state holds a non-finite number")
        if allowed < 0 or limited < 0:
            raise ValueError("bucket counters must be >= 0")
        # A policy may have shrunk since the state was written.
        tokens = min(max(tokens, 0.0), policy.capacity)
        return cls(tokens=tokens, updated_at=updated_at, allowed=allowed, limited=limited)
