"""The quorum gate: runs the partition strategy and puts the node in or out of partitioned mode.

Every node sees the same membership through etcd, so with the static and majority quorums
every node reaches the same decision from the same revision. While partitioned, a node
hands back everything it owns and acquires nothing (the specs stay durable; nobody runs
the children), and it refuses starts with :class:`~hub.errors.PartitionedError`. It leaves
the mode as soon as the strategy says the quorum is back.

The strategy's memory (:class:`~strategies.base.QuorumState`: largest size seen, recent
losses) is stored per node under ``gates/{node_id}`` (JSON with a ``schema`` number)
without a lease, so it survives a crash and restart of the node (``MajorityQuorum`` must
remember the largest cluster it saw). A node that leaves on purpose deletes it, so pods
with fresh names (a Deployment's) leave nothing behind; strategies with nothing to remember
(``persists_state = False``: ``Strict``, ``Availability``, ``StaticQuorum``) never write it.

The gate asks the strategy only through :class:`~strategies.base.PartitionStrategy`, whose
docstring says when each member is called.

Ownership: the Hub runs :meth:`QuorumGate.run` in its task group.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

from hub.core.registry import Registry
from hub.errors import ConfigError, StoreError
from hub.etcd.keys import KeySpace
from hub.etcd.store import Store
from hub.logs import fields, get_logger
from strategies.base import MembershipView, PartitionStrategy, QuorumDecision, QuorumState
from strategies.errors import NoClusterSize

log = get_logger("hub.core.quorum")

#: Version of the stored JSON; a reader accepts this and newer (unknown keys are ignored).
SCHEMA = 1


class QuorumGate:
    """Feeds membership changes through the partition strategy; see the module docstring."""

    def __init__(
        self,
        *,
        store: Store,
        keys: KeySpace,
        registry: Registry,
        node_id: str,
        strategy: PartitionStrategy,
        on_change: Callable[[bool, str], None],
    ) -> None:
        self.store = store
        self.keys = keys
        self.registry = registry
        self.node_id = node_id
        self.strategy = strategy
        self.on_change = on_change
        self.state = QuorumState()
        #: False for strategies whose memory is not worth a write (see the module docstring)
        self.persists = strategy.persists_state
        self.partitioned = False
        self.reason = ""
        self._changed = asyncio.Event()
        self._loaded = False

    def membership_changed(self) -> None:
        """Called from the registry listener: decide again."""
        self._changed.set()

    async def load(self) -> None:
        """Read this node's stored strategy state (a restart resumes it)."""
        kv = await self.store.get(self.keys.quorum(self.node_id))
        self._loaded = True
        if kv is None:
            return
        try:
            data = json.loads(kv.value)
            if not isinstance(data, dict) or not isinstance(data.get("schema"), int):
                raise ValueError("not a quorum record (no schema)")
            self.state = QuorumState.from_dict(data).resumed()
        except (ValueError, TypeError, KeyError) as exc:
            log.warning(
                "ignoring unreadable quorum state: %s", exc, extra=fields(node_id=self.node_id)
            )

    def decide(self) -> QuorumDecision:
        """One decision at the current membership; applies it. Pure but for the callback."""
        view = MembershipView(frozenset(self.registry.active_members()), time.time(), self.node_id)
        decision = self.strategy.decide(view, self.state)
        self.state = decision.state
        if decision.partitioned != self.partitioned:
            self.partitioned = decision.partitioned
            self.reason = decision.reason
            log.warning(
                "%s partitioned mode: %s",
                "entering" if decision.partitioned else "leaving",
                decision.reason,
                extra=fields(node_id=self.node_id),
            )
            self.on_change(decision.partitioned, decision.reason)
        return decision

    def reset_cluster_size(self, size: int) -> None:
        """Take ``size`` as the cluster's size (``MajorityQuorum``: the largest seen) after an
        intentional downsize, then decide again.

        Raises:
            ConfigError: the partition strategy keeps no cluster size
                (:class:`~strategies.errors.NoClusterSize`).
            ValueError: ``size`` is not an int >= 1.
        """
        try:
            self.state = self.strategy.reset_cluster_size(self.state, size)
        except NoClusterSize as exc:
            raise ConfigError(
                f"reset_cluster_size needs a partition strategy with a cluster size, such as "
                f"MajorityQuorum; partition={type(self.strategy).__name__}: {exc}"
            ) from exc
        self._changed.set()

    async def run(self) -> None:
        """Decide on every membership change (and on the strategy's own timers)."""
        if not self._loaded:  # the Hub loads it before it reports ready; read it only once,
            try:  # or a reset_cluster_size() made meanwhile would be overwritten
                await self.load()
            except StoreError as exc:
                log.warning("quorum state not loaded: %s", exc, extra=fields(node_id=self.node_id))
        stored = None
        while True:
            self.decide()
            if self.persists and self.state != stored:
                try:
                    record = {"schema": SCHEMA, **self.state.to_dict()}
                    await self.store.put(
                        self.keys.quorum(self.node_id), json.dumps(record).encode()
                    )
                    stored = self.state
                except StoreError as exc:
                    log.debug(
                        "quorum state not stored yet: %s", exc, extra=fields(node_id=self.node_id)
                    )
            wake = self.strategy.next_expiry(self.state)
            timeout = None if wake is None else max(0.05, wake - time.time())
            try:
                async with asyncio.timeout(timeout):
                    await self._changed.wait()
            except TimeoutError:
                pass
            self._changed.clear()

    async def forget(self) -> None:
        """Delete this node's stored memory: it leaves on purpose and will not be back under
        this id with anything worth resuming. Best effort: a failure is only logged."""
        if not self.persists:
            return
        try:
            await self.store.delete(self.keys.quorum(self.node_id), timeout=1.0)
        except StoreError as exc:
            log.warning("quorum state not deleted: %s", exc, extra=fields(node_id=self.node_id))
