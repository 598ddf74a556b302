"""The node's answers to the shared cluster API (:class:`~hub.api.policy.Policy`).

A node refuses starts while it is fenced (no valid lease) or its partition strategy says
the cluster lost its quorum; it places children as its reconciler does; and it delivers
calls to the children of its current incarnation through :class:`LocalDelivery`, without
the network.
"""

from __future__ import annotations

from collections.abc import Awaitable

from hub.api.policy import Delivery
from hub.core.quorum import QuorumGate
from hub.core.reconciler import Reconciler
from hub.errors import PartitionedError
from hub.etcd.session import Session
from hub.messaging.rpc import CallReplyData
from hub.model import ChildHandle
from hub.node.delivery import LocalDelivery


class NodePolicy:
    """The :class:`~hub.api.policy.Policy` of node ``node_id``."""

    def __init__(
        self,
        node_id: str,
        *,
        session: Session,
        quorum: QuorumGate,
        reconciler: Reconciler,
        delivery: LocalDelivery,
    ) -> None:
        self._node_id = node_id
        self._session = session
        self._quorum = quorum
        self._reconciler = reconciler
        self._delivery = delivery

    def check_can_start(self) -> None:
        """Raise PartitionedError while fenced off from etcd or without quorum."""
        if not self._session.is_valid():
            raise PartitionedError("this node is fenced off from etcd; refusing to start")
        if self._quorum.partitioned:
            raise PartitionedError(f"the cluster lost its quorum ({self._quorum.reason})")

    def placement(self, child_id: str) -> str | None:
        """The node the reconciler's placement assigns ``child_id`` to."""
        return self._reconciler.placement(child_id)

    def hosts(self, handle: ChildHandle) -> bool:
        """True for instances of this node's current incarnation."""
        return handle.node_id == self._node_id and handle.incarnation == self._session.lease_id

    def deliver(self, delivery: Delivery) -> Awaitable[CallReplyData]:
        """To the local mailbox (see :class:`LocalDelivery`)."""
        return self._delivery.deliver(delivery)
