"""Where children belong at the cached membership: a :class:`~hub.core.placement.Placement`
memoized per child, rebuilt when the membership changes, and the children that moved.

:class:`PlacementView` is the reconciler's desired-state side. It answers
:meth:`~PlacementView.owner` and :meth:`~PlacementView.instances` from a memo (planning asks
several times per child and event), and :meth:`~PlacementView.rebuild` reports which
children a membership change affects, so the reconciler marks only those (DESIGN.md
"Incremental"): with one instance per child, those whose owner moved plus those nobody
owns; with more, those whose instance set changed. A switch between one instance and
several (``Replication("cluster")`` at one member) affects every child.

A :class:`~strategies.base.ChildSetAware` distribution places with the set of children in
mind: its placement is rebuilt when children come or go, at most every
``rebuild_interval`` seconds (:meth:`~PlacementView.rebuild_due`).

It does no I/O and creates no tasks; the reconciler owns one and calls it on the loop. A
:class:`~hub.HubClient` owns one too (``processhub inspect``), so that a client places every
child exactly as the nodes do.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import NamedTuple

from hub.core.placement import Placement, build_placement
from hub.core.registry import Registry
from strategies.base import ChildSetAware, DistributionStrategy, RedundancyStrategy

_UNKNOWN = "\0unknown"  # not a valid node id


class Moved(NamedTuple):
    """What a rebuild affects: every child, or the listed ones."""

    everything: bool
    child_ids: list[str]


class PlacementView:
    """Memoized placement of the registry's children; see the module docstring."""

    def __init__(
        self,
        registry: Registry,
        distribution: DistributionStrategy,
        redundancy: RedundancyStrategy,
    ) -> None:
        self.registry = registry
        self.distribution = distribution
        self.redundancy = redundancy
        #: where children belong at the cached membership (rebuilt when it changes)
        self.current: Placement = build_placement(registry, distribution, redundancy, {})
        self._load_aware = isinstance(distribution, ChildSetAware)
        self._rebuild_interval = (
            distribution.rebuild_interval if isinstance(distribution, ChildSetAware) else 0.5
        )
        self._spec_set_changed = False
        self._built_for = 0  # how many specs the load-aware placement was built with
        self._last_rebuild = 0.0
        self._owners: dict[str, str | None] = {}
        self._instances: dict[str, tuple[str, ...]] = {}
        self._members: dict[str, int] = {}

    @property
    def replicated(self) -> bool:
        """More than one instance per child at the cached membership."""
        return self.current.replicated

    def owner(self, child_id: str) -> str | None:
        """Where the distribution strategy puts a child (memoized per membership)."""
        try:
            return self._owners[child_id]
        except KeyError:
            node = self._owners[child_id] = self.current.placer.owner(child_id)
            return node

    def instances(self, child_id: str) -> tuple[str, ...]:
        """Where a replicated child's instances belong, primary first (memoized)."""
        try:
            return self._instances[child_id]
        except KeyError:
            nodes = self._instances[child_id] = self.current.instances(child_id)
            return nodes

    def forget(self, child_ids: Iterable[str]) -> None:
        """Drop the memo of children whose spec (its pins) may have changed."""
        if self._load_aware and len(self.registry.specs) != self._built_for:
            self._spec_set_changed = True
        owners, instances = self._owners, self._instances
        for child_id in child_ids:
            owners.pop(child_id, None)
            instances.pop(child_id, None)

    def rebuild_due(self) -> float | None:
        """Seconds until a pending load-aware rebuild is due (<= 0: now); None if none."""
        if not self._spec_set_changed:
            return None
        return self._rebuild_interval - (time.monotonic() - self._last_rebuild)

    def rebuild(self, full: bool, force: bool = False, *, report: bool = True) -> Moved | None:
        """Rebuild for the registry's current active members.

        Args:
            full: after a relist: every child is affected.
            force: rebuild even if the members are unchanged (the child set changed).
            report: work out what the rebuild affects (a pass over every child; a
                :class:`~hub.HubClient` only answers lookups and skips it).

        Returns:
            None if nothing was rebuilt (or ``report`` is False), else what it affects.
        """
        members = self.registry.active_members()
        if members == self._members and not full and not force:
            return None
        old_owners, old_instances, old = self._owners, self._instances, self.current
        self._members = members
        if self._load_aware:
            self._last_rebuild = time.monotonic()
            self._spec_set_changed = False
            self._built_for = len(self.registry.specs)
        self.current = build_placement(self.registry, self.distribution, self.redundancy, members)
        self._owners, self._instances = {}, {}
        if not report:
            return None
        if full or old.replicated != self.current.replicated:
            return Moved(True, [])
        specs, owners = self.registry.specs, self.registry.owners
        if self.replicated:
            # Any change of a replica set matters (replicas move too).
            instances = self.instances
            return Moved(
                False,
                [
                    child_id
                    for child_id in specs
                    if old_instances.get(child_id) != instances(child_id) or child_id not in owners
                ],
            )
        moved = []
        owner = self.owner
        for child_id in specs:
            before = old_owners.get(child_id, _UNKNOWN)
            if before is _UNKNOWN:
                before = old.owner(child_id)
            if child_id not in owners or before != owner(child_id):
                moved.append(child_id)
        return Moved(False, moved)
