"""Placement: where every child belongs at one membership, as one value.

A :class:`Placement` is built from the registry's active members, the members' published
capacities, the pins stored in the specs and (for a
:class:`~strategies.base.ChildSetAware` strategy) the set of children, by the configured
distribution and redundancy strategies. The node's reconciler and a :class:`~hub.HubClient`
(``processhub inspect``) build it the same way from the same registry, so they agree on
where a child belongs.

The strategies are asked only through their Protocols
(:mod:`strategies.base`): this module never asks which class a strategy is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hub.core.registry import Registry
from strategies.base import (
    ChildSetAware,
    DistributionStrategy,
    PlacementInput,
    Placer,
    RedundancyStrategy,
)

__all__ = ["Placement", "build_placement", "capacities"]


def capacities(registry: Registry, members: Mapping[str, int]) -> dict[str, float] | None:
    """Relative capacity of each member (the largest published ``capacity`` is 1.0); members
    that publish none count as the largest. ``None`` when no member publishes one."""
    nodes = registry.nodes
    sized = {
        node_id: nodes[node_id].info.capacity
        for node_id in members
        if node_id in nodes and nodes[node_id].info.capacity
    }
    if not sized:
        return None
    top = max(sized.values())
    return {node_id: sized.get(node_id, top) / top for node_id in members}


@dataclass(frozen=True, slots=True)
class Placement:
    """Where children belong, for one set of active members.

    Args:
        members: the active members it was built for (node id -> weight).
        placer: the distribution strategy's placer for them (pins honoured).
        count: instances per child, the redundancy strategy's ``count(len(members))``.
    """

    members: Mapping[str, int]
    placer: Placer
    count: int

    @property
    def replicated(self) -> bool:
        """More than one instance per child at this membership."""
        return self.count > 1

    def owner(self, child_id: str) -> str | None:
        """The node the child's (primary) instance belongs on, or None (no eligible node)."""
        return self.placer.owner(child_id)

    def instances(self, child_id: str) -> tuple[str, ...]:
        """The nodes the child's instances belong on, primary first (may be short)."""
        if not self.members:
            return ()
        return self.placer.owners(child_id, self.count)


def build_placement(
    registry: Registry,
    distribution: DistributionStrategy,
    redundancy: RedundancyStrategy,
    members: Mapping[str, int] | None = None,
) -> Placement:
    """Build the :class:`Placement` of ``registry``'s current view.

    Args:
        members: the active members, when the caller already has them
            (default: ``registry.active_members()``).
    """
    if members is None:
        members = registry.active_members()
    child_ids: Sequence[str] = ()
    if isinstance(distribution, ChildSetAware):
        child_ids = sorted(registry.specs)
    placement = PlacementInput(
        members=members,
        child_ids=child_ids,
        capacities=capacities(registry, members),
        pins=registry.pinned,  # live: a new pin counts as soon as the registry has it
    )
    count = max(1, redundancy.count(len(members)))
    return Placement(members, distribution.placer(placement), count)
