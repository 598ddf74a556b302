"""The protocols strategies implement, and the guarantees they can declare.

A strategy is pure: it takes a snapshot of the cluster (here, the active members and their
weights) and returns a decision. It does no I/O, starts no tasks and keeps no state that
changes what it answers. The hub executes the decisions; strategies only compute them.

Each implementation declares ``guarantees: frozenset[Guarantee]`` so the hub can refuse a
configuration that asks for a property the chosen strategies cannot deliver.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

__all__ = ["DistributionStrategy", "Guarantee", "Placer"]


class Guarantee(enum.Enum):
    """A property a strategy promises; each member's ``__doc__`` defines it."""

    def __new__(cls, value: str, doc: str) -> Guarantee:
        member = object.__new__(cls)
        member._value_ = value
        member.__doc__ = doc
        return member

    AT_MOST_ONE_OWNER = (
        "at_most_one_owner",
        "For a given member set every child has exactly one owner, so nodes that see the same "
        "members never both claim it. (Nodes with different views are settled by the hub's "
        "fenced owner key, not by the strategy.)",
    )
    MINIMAL_MOVEMENT = (
        "minimal_movement",
        "A membership change moves only the children it must: on a join, only children whose "
        "new owner is the joining node; on a leave, only the children the leaving node owned.",
    )
    DETERMINISTIC = (
        "deterministic",
        "Placement is a pure function of the child id, the members and the strategy's config: "
        "every process on every platform computes the same answer, whatever the insertion "
        "order or PYTHONHASHSEED.",
    )


@runtime_checkable
class Placer(Protocol):
    """Answers where children belong, for one fixed set of members."""

    def owners(self, child_id: str, n: int = 1) -> tuple[str, ...]:
        """Return up to ``n`` distinct node ids for ``child_id``, the owner first.

        Returns ``min(n, number of members)`` nodes, ``()`` when there are no members.

        Raises:
            ValueError: ``n`` is below 1.
        """
        ...

    def owner(self, child_id: str) -> str | None:
        """Return the node that owns ``child_id``, or ``None`` when there are no members."""
        ...


@runtime_checkable
class DistributionStrategy(Protocol):
    """Decides which node owns each child, given the active members."""

    @property
    def guarantees(self) -> frozenset[Guarantee]:
        """The properties this strategy promises."""
        ...

    def placer(self, members: Mapping[str, int]) -> Placer:
        """Return a :class:`Placer` for ``members`` (active node id -> weight).

        Raises:
            ValueError: a weight is not an int >= 1.
        """
        ...
