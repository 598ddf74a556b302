"""The one-ring cache the ring-based distribution strategies share."""

from __future__ import annotations

from collections.abc import Mapping

from strategies.ring import HashRing

__all__ = ["reuse_or_build"]


def reuse_or_build(last: HashRing | None, members: Mapping[str, int], vnodes: int) -> HashRing:
    """Return ``last`` if it was built from equal ``members``, else a new ring.

    Raises:
        ValueError: as :class:`HashRing` does, for a malformed member or weight.
    """
    # The type check keeps validation identical on a hit: True == 1, but is refused.
    if (
        last is not None
        and last.vnodes_per_weight == vnodes
        and last.weights == members
        and all(type(weight) is int for weight in members.values())
    ):
        return last
    return HashRing(members, vnodes)
