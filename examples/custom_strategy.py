"""A custom distribution strategy: rendezvous (highest-random-weight) hashing.

Every node scores every child with a stable hash of (node, child); the highest score wins.
Like consistent hashing it is deterministic on every node and moves only the children the
joining node wins, but it needs no virtual nodes and spreads children evenly by
construction; its cost is O(members) per lookup, fine for tens of nodes.
"""

from __future__ import annotations

from collections.abc import Mapping

from strategies import NO_PINS, Guarantee, PinnedPlacer, PlacementInput, Placer, stable_hash


class RendezvousPlacer:
    """Places children on the members given; immutable."""

    def __init__(self, members: Mapping[str, int]) -> None:
        self._members = tuple(sorted(members.items()))

    def _ranked(self, child_id: str) -> list[str]:
        # A weight-w node draws w tickets and keeps its best score.
        scores = {
            node: max(stable_hash(f"{node}/{ticket}/{child_id}") for ticket in range(weight))
            for node, weight in self._members
        }
        return sorted(scores, key=lambda node: (-scores[node], node))

    def owner(self, child_id: str) -> str | None:
        ranked = self._ranked(child_id)
        return ranked[0] if ranked else None

    def owners(self, child_id: str, n: int = 1) -> tuple[str, ...]:
        if n < 1:
            raise ValueError("n must be >= 1")
        return tuple(self._ranked(child_id)[:n])


class Rendezvous:
    """A ``strategies.DistributionStrategy``: pass ``Hub(..., distribution=Rendezvous())``."""

    guarantees = frozenset(
        {Guarantee.AT_MOST_ONE_OWNER, Guarantee.DETERMINISTIC, Guarantee.MINIMAL_MOVEMENT}
    )

    def placer(self, placement: PlacementInput) -> Placer:
        ranked = RendezvousPlacer(placement.members)
        if placement.pins is NO_PINS:
            return ranked
        # Children pinned by move/pin/a child mapping stay on their nodes.
        return PinnedPlacer(ranked, placement.members, placement.pins)
