"""The shared cluster API: one object that a Hub and a HubClient both contain.

A :class:`Cluster` is built from a :class:`~hub.api.connection.Connection` (store, registry,
batcher, RPC client) and a :class:`~hub.api.policy.Policy` (what differs between a node and
a client). It groups the API's parts, :class:`~hub.api.children.Children` (start, stop),
:class:`~hub.api.calls.Calls` (call, cast) and :class:`~hub.api.moves.Moves` (pin, move,
drain), and answers the lookups itself: they read the watched registry, with no network,
in O(1) per child. Users reach it through :class:`~hub.api.facade.ClusterApi`, whose
methods are documented there.
"""

from __future__ import annotations

from typing import Any

from hub.api.calls import Calls
from hub.api.children import Children
from hub.api.connection import Connection
from hub.api.moves import Moves
from hub.api.policy import Policy
from hub.errors import InvalidSpec
from hub.model import ChildHandle, ChildSpec


class Cluster:
    """The cluster API over one connection and policy (see the module docstring)."""

    def __init__(self, connection: Connection, policy: Policy) -> None:
        self.connection = connection
        self.policy = policy
        self.children = Children(connection, policy)
        self.calls = Calls(connection, policy)
        self.moves = Moves(connection)

    # -- lookups: local, no network ------------------------------------------------------

    def process_list(self, scope: str) -> Any:
        """:meth:`hub.api.facade.ClusterApi.process_list`: running instances only."""
        registry = self.connection.registry
        if scope == "global":
            if not registry.replicas:
                return {
                    child_id: {handle.node_id: handle}
                    for child_id, handle in registry.handles.items()
                    if handle.is_running
                }
            listed: dict[str, dict[str, ChildHandle]] = {}
            for child_id in registry.handles.keys() | registry.replicas.keys():
                running = {
                    node_id: handle
                    for node_id, handle in registry.instances(child_id).items()
                    if handle.is_running
                }
                if running:
                    listed[child_id] = running
            return listed
        if scope == "local":
            hosts = self.policy.hosts
            return {
                child_id: handle
                for child_id, handle in registry.handles.items()
                if handle.is_running and hosts(handle)
            }
        raise InvalidSpec("scope must be 'global' or 'local'")

    def get_pid(self, child_id: str) -> ChildHandle | None:
        """:meth:`hub.api.facade.ClusterApi.get_pid`."""
        return self.connection.registry.handles.get(child_id)

    def get_pids(self, child_id: str) -> list[ChildHandle]:
        """:meth:`hub.api.facade.ClusterApi.get_pids`."""
        return list(self.connection.registry.instances(child_id).values())

    def child_lookup(self, child_id: str, *, with_metadata: bool) -> tuple[Any, ...] | None:
        """:meth:`hub.api.facade.ClusterApi.child_lookup`."""
        registry = self.connection.registry
        entry = registry.specs.get(child_id)
        if entry is None:
            return None
        nodes = registry.instances(child_id)
        if with_metadata:
            return (entry.spec, nodes, dict(entry.spec.metadata))
        return (entry.spec, nodes)

    def tag_query(self, tag: str) -> dict[str, dict[str, ChildHandle]]:
        """:meth:`hub.api.facade.ClusterApi.tag_query`."""
        registry = self.connection.registry
        return {child_id: registry.instances(child_id) for child_id in registry.tagged(tag)}

    def registry_dump(self) -> dict[str, tuple[ChildSpec, dict[str, ChildHandle], dict[str, Any]]]:
        """:meth:`hub.api.facade.ClusterApi.registry_dump`."""
        registry = self.connection.registry
        return {
            child_id: (entry.spec, registry.instances(child_id), dict(entry.spec.metadata))
            for child_id, entry in registry.specs.items()
        }

    def nodes(self, *, include_local: bool) -> list[str]:
        """:meth:`hub.api.facade.ClusterApi.nodes`."""
        me = self.connection.config.node_id
        return sorted(
            node_id for node_id in self.connection.registry.nodes if include_local or node_id != me
        )
