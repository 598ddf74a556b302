"""Cluster-wide child lifecycle events, derived from owner-record transitions.

Every node's registry sees every write of ``owners/{id}`` through its watch, so any node
can tell what happens to any child, wherever it runs; hooks only fire on the node
involved. :class:`ChildEvents` turns the registry's :class:`~hub.core.registry.OwnerChange`
stream into :class:`ChildEvent` values:

===================  ======================================================================
``child_started``    a new owner's worker reached ``running``
``child_moved``      the same, on another node than the child's previous owner (``from_node``)
``child_restarted``  the owner record's ``restarts`` grew: it crashed and restarts in place
``child_failed``     the owner record turned ``failed``: parked on its node (also a replica
                     instance's record, with token 0)
``child_stopped``    the owner key is gone and so is the spec: stopped for good
===================  ======================================================================

An owner key deleted while the spec remains means the child is between owners (a move, a
drain, a dead node): nothing is reported until its next owner runs it (``child_moved``) or
its spec goes (``child_stopped``). The last owner of each such child is remembered, at
most ``limit`` of them (beyond that the oldest are forgotten and their next start reads
``child_started``).

Not guaranteed: transitions hidden by a relist (after a watch compaction) are not
reported, since a relist is a new listing, not a history. Owned by the caller: it is fed
synchronously from registry observers and creates no tasks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from hub.core.registry import OwnerChange, Registry
from hub.model import ChildHandle, OwnerState

__all__ = ["ChildEvent", "ChildEvents"]


@dataclass(frozen=True, slots=True)
class ChildEvent:
    """One derived event; ``node`` is where it happened, ``token`` the owner's fence."""

    kind: str
    child_id: str
    node: str
    token: int
    restarts: int = 0
    reason: str = ""
    #: ``child_moved`` only: the node that ran the child before
    from_node: str | None = None


class ChildEvents:
    """Derives :class:`ChildEvent` values from ``registry``'s owner changes."""

    def __init__(self, registry: Registry, *, limit: int = 10_000) -> None:
        self.registry = registry
        self.limit = limit
        #: child id -> its last owner, for children between owners (insertion ordered)
        self._between: dict[str, ChildHandle] = {}

    def owner_changes(self, changes: Sequence[OwnerChange]) -> list[ChildEvent]:
        """Events for one watch batch's owner changes (a registry owner observer)."""
        events = []
        for change in changes:
            event = self._derive(change)
            if event is not None:
                events.append(event)
        return events

    def children_changed(self, child_ids: Iterable[str], full: bool) -> list[ChildEvent]:
        """Events for children whose spec went while they were between owners (a registry
        observer); after a relist, forgets children that are gone."""
        between = self._between
        if not between:
            return []
        specs, owners = self.registry.specs, self.registry.owners
        if full:
            for child_id in [c for c in between if c not in specs]:
                del between[child_id]
            return []
        events = []
        for child_id in child_ids:
            last = between.get(child_id)
            if last is not None and child_id not in specs and child_id not in owners:
                del between[child_id]
                events.append(_event("child_stopped", last, reason="stopped"))
        return events

    def _derive(self, change: OwnerChange) -> ChildEvent | None:
        before, after = change.before, change.after
        child_id = change.child_id
        if change.replica:  # a replica instance parked on its node (token 0)
            if after is None or (before is not None and before.state is OwnerState.FAILED):
                return None
            return _event("child_failed", after, reason="replica parked: restart intensity")
        if after is None:
            if before is None:
                return None
            if child_id in self.registry.specs:
                self._remember(before)  # between owners: wait for the next one
                return None
            self._between.pop(child_id, None)
            return _event("child_stopped", before, reason="stopped")
        same_owner = before is not None and before.fencing_token == after.fencing_token
        if after.state is OwnerState.FAILED:
            if same_owner and before is not None and before.state is OwnerState.FAILED:
                return None
            self._between.pop(child_id, None)
            return _event("child_failed", after, reason=after.last_exit)
        if same_owner and before is not None and after.restarts > before.restarts:
            return _event("child_restarted", after, reason=after.last_exit)
        if after.state is not OwnerState.RUNNING:
            return None
        if same_owner and before is not None and before.state is not OwnerState.STARTING:
            return None  # running again after a restart, or a rewrite of the same state
        last = self._between.pop(child_id, None)
        if last is not None and last.node_id != after.node_id:
            return _event("child_moved", after, from_node=last.node_id)
        return _event("child_started", after)

    def _remember(self, last: ChildHandle) -> None:
        between = self._between
        known = between.get(last.child_id)
        if known is not None and last.state is OwnerState.STARTING:
            return  # an owner that never ran it is not where it comes from
        between.pop(last.child_id, None)
        between[last.child_id] = last
        while len(between) > self.limit:
            del between[next(iter(between))]


def _event(
    kind: str, handle: ChildHandle, *, reason: str = "", from_node: str | None = None
) -> ChildEvent:
    return ChildEvent(
        kind,
        handle.child_id,
        handle.node_id,
        handle.fencing_token,
        handle.restarts,
        reason,
        from_node,
    )
