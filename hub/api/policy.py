"""What differs between a node and a client in the shared cluster API.

The :class:`~hub.api.cluster.Cluster` is the same object in a :class:`hub.Hub` and in a
:class:`hub.HubClient`; a :class:`Policy` answers the few questions where they differ:
whether this process may start children now, where a child belongs, and whether a child's
instance runs in this very process (then calls are delivered to its mailbox directly, with
the same semantics as over RPC). :class:`ClientPolicy` is the client's; the node's is
:class:`hub.node.policy.NodePolicy`.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Literal, NamedTuple, Protocol

from hub.config import HubConfig
from hub.core.placement_view import PlacementView
from hub.core.registry import Registry
from hub.messaging.rpc import CallReplyData
from hub.model import ChildHandle


class Delivery(NamedTuple):
    """One call or cast to a child instance in this process (still encoded). A NamedTuple:
    one is built per local call, and a frozen dataclass costs several times as much."""

    kind: Literal["call", "cast"]
    child_id: str
    #: The fencing token the caller addressed (0: whoever owns the child now).
    token: int
    payload: bytes
    codec: str
    #: Seconds the handler may take to reply (calls only).
    timeout: float
    #: Deliver to whatever instance runs here, replica or owner (``all_replicas``).
    replica: bool = False


class Policy(Protocol):
    """The node- or client-specific answers the shared cluster API needs."""

    def check_can_start(self) -> None:
        """Raise :class:`~hub.errors.PartitionedError` if this process must refuse starts."""
        ...

    def placement(self, child_id: str) -> str | None:
        """The node ``child_id`` belongs on right now (None: no eligible node)."""
        ...

    def hosts(self, handle: ChildHandle) -> bool:
        """True when ``handle``'s instance runs in this process (deliver it locally)."""
        ...

    def deliver(self, delivery: Delivery) -> Awaitable[CallReplyData]:
        """Deliver to the local instance; only called when :meth:`hosts` said so. Returns
        the awaitable itself (no coroutine of its own: one less frame per local call).

        Raises:
            CallError: the subclass the RPC server would map to a reply status.
        """
        ...


class ClientPolicy:
    """A client hosts nothing and may always try to start; it places children with the
    nodes' own :class:`~hub.core.placement_view.PlacementView` (it listens to the
    registry), so ``placement()`` agrees with them, also under a strategy whose placement
    depends on the set of children."""

    def __init__(self, config: HubConfig, registry: Registry) -> None:
        self._view = PlacementView(registry, config.distribution, config.redundancy)

    def registry_changed(self, child_ids: set[str], nodes_changed: bool, full: bool) -> None:
        """Registry listener: forget changed children; rebuild when the members changed."""
        self._view.forget(child_ids)
        if nodes_changed or full:
            self._view.rebuild(full, report=False)

    def check_can_start(self) -> None:
        """A client always may try: the owner nodes decide."""

    def placement(self, child_id: str) -> str | None:
        """The child's pin, or the distribution strategy's choice."""
        if self._view.rebuild_due() is not None:
            # The children changed under a ChildSetAware strategy. Nodes rebuild on a
            # timer; a client has no loop of its own and rebuilds when it is asked.
            self._view.rebuild(full=False, force=True, report=False)
        return self._view.owner(child_id)

    def hosts(self, handle: ChildHandle) -> bool:
        """Never: a client runs no child."""
        return False

    def deliver(self, delivery: Delivery) -> Awaitable[CallReplyData]:
        """Never called (:meth:`hosts` is always False)."""
        raise AssertionError("a HubClient hosts no child")
