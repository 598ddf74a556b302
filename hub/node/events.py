"""The node's internal event sink: what one component reports, relayed to the others.

:class:`NodeEvents` is what the Hub hands its components instead of itself: the
Supervisor's :class:`~hub.core.supervisor.SupervisorEvents`, the Registry's listener, the
Session's ``on_lost``/``on_granted`` and the quorum gate's ``on_change``. Each callback
forwards to the reconciler (which decides), the hooks (which tell the user) and, for the
node's own record, to membership. Callbacks run synchronously in the reporting
component's task and only queue work, except the lease ones, which the session awaits.

:meth:`NodeEvents.wire` must be called once every component exists (they refer to each
other through it), before any of them runs.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hub.core.hooks import ChildRestarted, ChildStarted, Hooks, PartitionChanged
from hub.core.membership import Membership
from hub.core.quorum import QuorumGate
from hub.core.reconciler import Reconciler
from hub.core.registry import Registry
from hub.core.supervisor import WorkerExit
from hub.etcd.session import Session


class NodeEvents:
    """Relays component events of node ``node_id`` (see the module docstring)."""

    reconciler: Reconciler
    quorum: QuorumGate
    session: Session
    membership: Membership
    registry: Registry

    def __init__(self, node_id: str, hooks: Hooks) -> None:
        self.node_id = node_id
        self.hooks = hooks
        #: Set when an operator asked this incarnation to leave (``HubClient.drain``).
        self.leave_requested = asyncio.Event()
        #: True once the node is leaving: its record is no longer rewritten.
        self.stopping = False

    def wire(
        self,
        *,
        reconciler: Reconciler,
        quorum: QuorumGate,
        session: Session,
        membership: Membership,
        registry: Registry,
    ) -> None:
        """Give the sink the components it relays to."""
        self.reconciler = reconciler
        self.quorum = quorum
        self.session = session
        self.membership = membership
        self.registry = registry

    # -- supervisor -> reconciler, hooks ------------------------------------------------

    def worker_started(self, child_id: str, fencing_token: int, restarts: int) -> None:
        """:class:`~hub.core.supervisor.SupervisorEvents`: an instance passed its start."""
        self.reconciler.worker_started(child_id, fencing_token, restarts)
        self.hooks.dispatch(ChildStarted(child_id, self.node_id, fencing_token, restarts))

    def worker_restarting(
        self, child_id: str, fencing_token: int, restarts: int, reason: str
    ) -> None:
        """:class:`~hub.core.supervisor.SupervisorEvents`: an instance is in backoff."""
        self.reconciler.worker_restarting(child_id, fencing_token, restarts, reason)
        self.hooks.dispatch(ChildRestarted(child_id, fencing_token, restarts, reason))

    def worker_exited(self, child_id: str, fencing_token: int, exit: WorkerExit) -> None:
        """:class:`~hub.core.supervisor.SupervisorEvents`: the child ended on this node."""
        self.reconciler.worker_exited(child_id, fencing_token, exit)

    async def checkpoint(self, child_id: str, fencing_token: int, state: Any) -> None:
        """The supervisor's checkpointer: a worker saved its state."""
        await self.reconciler.checkpoint(child_id, fencing_token, state)

    # -- registry -> reconciler, quorum, membership --------------------------------------

    def registry_changed(self, child_ids: set[str], nodes_changed: bool, full: bool) -> None:
        """Registry listener: reconcile what changed; notice leave requests and a
        vanished node record."""
        self.reconciler.registry_changed(child_ids, nodes_changed, full)
        if nodes_changed or full:
            self.quorum.membership_changed()
        if not nodes_changed:
            return
        lease = self.session.lease_id
        if lease and self.registry.leave_requests.get(self.node_id) == lease:
            self.leave_requested.set()
        if not self.stopping and self.session.is_valid():
            entry = self.registry.nodes.get(self.node_id)
            if entry is None or entry.info.incarnation != lease:
                if self.membership.registered_lease == lease:
                    self.membership.request()  # our record vanished: write it again

    # -- session, quorum -> reconciler, hooks ------------------------------------------

    async def lease_lost(self, lease_id: int) -> None:
        """Self-fencing: stop every local worker before etcd can expire our keys (in
        availability mode: keep them running and reconcile when etcd is back)."""
        await self.reconciler.lease_lost()
        self.hooks.dispatch(PartitionChanged(True, f"lease {lease_id:x} lost"))

    async def lease_granted(self, lease_id: int) -> None:
        """A new incarnation: publish membership again and reconcile everything."""
        self.membership.request()
        self.reconciler.lease_granted()
        self.hooks.dispatch(PartitionChanged(False, f"rejoined with lease {lease_id:x}"))

    def partition_changed(self, partitioned: bool, reason: str) -> None:
        """The quorum gate's verdict changed."""
        self.reconciler.set_partitioned(partitioned)
        self.hooks.dispatch(PartitionChanged(partitioned, reason))
