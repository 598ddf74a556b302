"""Membership: this node's ``nodes/{node_id}`` record, kept on the session's lease.

Presence of the key means the node is alive: it is bound to the node's lease, so it
vanishes when the node stops renewing (crash) or revokes (graceful leave). Every node
learns the member list from the watch (see :class:`hub.core.registry.Registry`).

The record is (re)written whenever it may be missing or stale: after each new lease, when
the node starts draining, and when the watch shows our key deleted by someone else.

Ownership: the Hub runs :meth:`Membership.run` in its task group.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from hub._version import __version__
from hub.errors import SessionLost, StoreError
from hub.etcd.codec import encode_node
from hub.etcd.keys import KeySpace
from hub.etcd.session import Session
from hub.etcd.store import Store
from hub.logs import fields, get_logger
from hub.model import NodeInfo, NodeState

log = get_logger("hub.core.membership")


class Membership:
    """Publishes this node's record; see the module docstring."""

    def __init__(
        self,
        store: Store,
        session: Session,
        keys: KeySpace,
        node_id: str,
        *,
        address: str = "",
        labels: Mapping[str, str] | None = None,
        weight: int = 1,
        capacity: int = 0,
    ) -> None:
        self.store = store
        self.session = session
        self.keys = keys
        self.node_id = node_id
        self.address = address
        self.labels = dict(labels or {})
        self.weight = weight
        self.capacity = capacity
        self.load = 0
        self.state = NodeState.ACTIVE
        self.started_at = time.time()
        self.registered_lease = 0
        self._dirty = asyncio.Event()
        self._registered = asyncio.Event()

    def info(self, lease: int) -> NodeInfo:
        """The record this node publishes under ``lease``."""
        return NodeInfo(
            node_id=self.node_id,
            incarnation=lease,
            address=self.address,
            labels=self.labels,
            weight=self.weight,
            state=self.state,
            version=__version__,
            started_at=self.started_at,
            capacity=self.capacity,
            load=self.load,
        )

    def request(self) -> None:
        """Ask for the record to be written again."""
        self._registered.clear()
        self._dirty.set()

    async def register(self) -> int:
        """Write the record now under the current lease; returns the write's revision."""
        lease = self.session.require()
        revision = await self.store.put(
            self.keys.node(self.node_id), encode_node(self.info(lease)), lease=lease
        )
        self.registered_lease = lease
        self._registered.set()
        return revision

    async def set_state(self, state: NodeState) -> None:
        """Publish a new state (draining) and wait until it is written."""
        self.state = state
        self.request()
        await self.wait_registered()

    async def wait_registered(self) -> None:
        """Wait until the latest requested record has been written."""
        await self._registered.wait()

    async def run(self) -> None:
        """Rewrite the record whenever requested; retry until written or the lease is lost."""
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            while True:
                lease = await self.session.wait_valid()
                try:
                    await self.register()
                    log.info(
                        "registered",
                        extra=fields(node_id=self.node_id, lease_id=f"{lease:x}"),
                    )
                    break
                except (StoreError, SessionLost) as exc:
                    log.warning(
                        "membership write failed: %s", exc, extra=fields(node_id=self.node_id)
                    )
                    await asyncio.sleep(0.2)
