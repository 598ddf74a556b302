"""The JSON read model of a node: readiness, members and children, from memory.

These functions only read the node's registry and components (no I/O); ``/readyz``,
``/api/nodes``, ``/api/children`` and the dashboard's snapshots render them.
"""

from __future__ import annotations

from typing import Any

from hub.model import NodeState, OwnerState
from hub.operate.observed import ObservedHub

#: Label values of ``processhub_*_children{state=...}``: the owner states, ``pending`` (a
#: spec nobody owns yet) and ``unknown`` (an owner record that could not be decoded).
CHILD_STATES: tuple[str, ...] = (*(s.value for s in OwnerState), "pending", "unknown")


def readiness(hub: ObservedHub) -> str | None:
    """Why ``hub`` is not ready to serve, or None when it is."""
    if not hub.is_alive():
        return "hub is not running"
    if not hub.informer.synced.is_set():
        return "informer has not synced"
    if not hub.session.is_valid():
        return "no valid lease"
    if hub.stop_requested:
        return "node is stopping"
    if hub.membership.state is NodeState.DRAINING or hub.reconciler.draining:
        return "node is draining"
    if hub.quorum.partitioned:
        return f"partitioned: {hub.quorum.reason}"
    return None


def nodes_view(hub: ObservedHub) -> dict[str, Any]:
    """The members as the registry sees them (the body of ``GET /api/nodes``)."""
    registry = hub.registry
    nodes = [
        {
            "node_id": node_id,
            "address": entry.info.address,
            "state": entry.info.state.value,
            "load": entry.info.load,
            "capacity": entry.info.capacity,
            "weight": entry.info.weight,
            "labels": dict(entry.info.labels),
            "incarnation": entry.info.incarnation,
            "version": entry.info.version,
            "started_at": entry.info.started_at,
        }
        for node_id, entry in sorted(registry.nodes.items())
    ]
    return {"hub_id": hub.hub_id, "revision": registry.revision, "nodes": nodes}


def child_state(hub: ObservedHub, child_id: str) -> str:
    owner = hub.registry.owners.get(child_id)
    if owner is None:
        return "pending"
    if owner.record is None:
        return "unknown"
    return owner.record.state.value


def children_view(hub: ObservedHub) -> dict[str, Any]:
    """Every child the registry knows (the body of ``GET /api/children``).

    A child with a spec but no owner has state ``pending`` and node None; an undecodable
    owner record gives state ``unknown``.
    """
    registry = hub.registry
    children = []
    for child_id in sorted(registry.specs.keys() | registry.owners.keys()):
        handle = registry.handles.get(child_id)
        replicas = registry.replicas.get(child_id, {})
        children.append(
            {
                "child_id": child_id,
                "node": handle.node_id if handle is not None else None,
                "state": child_state(hub, child_id),
                "token": handle.fencing_token if handle is not None else 0,
                "restarts": handle.restarts if handle is not None else 0,
                "incarnation": handle.incarnation if handle is not None else 0,
                "started_at": handle.started_at if handle is not None else 0.0,
                "last_exit": handle.last_exit if handle is not None else "",
                "has_spec": child_id in registry.specs,
                "replicas": [
                    {"node": node_id, "role": entry.handle.role}
                    for node_id, entry in sorted(replicas.items())
                ],
            }
        )
    return {"hub_id": hub.hub_id, "revision": registry.revision, "children": children}
