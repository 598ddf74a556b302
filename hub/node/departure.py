"""Leaving the cluster in order: drain this node's children to the others first.

:class:`Departure` marks the node draining (its record says so, so no node places children
on it any more), tells the reconciler to hand its children over, and waits until it owns
none or no other member is left to take them, within ``drain_timeout``. Its
:meth:`Departure.obey_leave_requests` runs as a node component: when an operator asks this
incarnation to leave (``HubClient.drain``), it drains and sets ``left``; the embedder
should then leave its ``async with Hub(...)`` block.
"""

from __future__ import annotations

import asyncio

from hub.core.hooks import Hooks, HubStopping
from hub.core.membership import Membership
from hub.core.reconciler import Reconciler
from hub.core.registry import Registry
from hub.logs import fields, get_logger
from hub.model import NodeState

log = get_logger("hub")


class Departure:
    """Drains node ``node_id`` (see the module docstring)."""

    def __init__(
        self,
        node_id: str,
        *,
        membership: Membership,
        reconciler: Reconciler,
        registry: Registry,
        hooks: Hooks,
        drain_timeout: float,
        leave_requested: asyncio.Event,
    ) -> None:
        self._node_id = node_id
        self._membership = membership
        self._reconciler = reconciler
        self._registry = registry
        self._hooks = hooks
        self._drain_timeout = drain_timeout
        self._leave_requested = leave_requested
        #: Set once this node drained and left because an operator asked.
        self.left = asyncio.Event()

    async def drain(self) -> None:
        """Mark this node draining and wait until its children run elsewhere."""
        try:
            async with asyncio.timeout(self._drain_timeout):
                await self._membership.set_state(NodeState.DRAINING)
                self._reconciler.set_draining(True)
                while self._reconciler.owned:
                    others = set(self._registry.active_members()) - {self._node_id}
                    if not others:
                        break  # nowhere to go: stop here, specs stay durable
                    await asyncio.sleep(0.01)
                    await self._reconciler.wait_idle()
        except TimeoutError:
            log.warning(
                "drain timed out with %d children still local",
                len(self._reconciler.owned),
                extra=fields(node_id=self._node_id),
            )

    async def obey_leave_requests(self) -> None:
        """Drain when an operator asks this incarnation to leave; then set ``left``."""
        await self._leave_requested.wait()
        log.warning(
            "operator asked this node to drain and leave", extra=fields(node_id=self._node_id)
        )
        self._hooks.dispatch(HubStopping(self._node_id, True))
        await self.drain()
        self.left.set()
