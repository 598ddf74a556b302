"""Executes the replica actions of a plan (replication > 1) and parks failed replicas.

A replica is a non-primary instance of a child: a local worker started with fencing
token 0 and a ``replicas/{id}/{node}`` key on this node's lease. The primary holds
``owners/{id}`` like a singular child (:mod:`hub.core.executor`).

Guarantees:

* ``REPLICA_UP`` publishes the key before it starts the instance, and starts nothing if
  the lease changed or the spec went away meanwhile.
* ``REPLICA_DOWN`` stops the local instance before it withdraws the key, and never touches
  a child this node owns as primary.
* A replica that ran out of restart intensity is *parked* (:meth:`ReplicaActions.replica_parked`):
  it stays down under this lease and spec revision, and its key is rewritten ``failed``
  (compared on the key's create revision, so a key deleted meanwhile never comes back);
  that outcome is :class:`~hub.core.outcome.Terminal`.

Ownership: no tasks of its own; its coroutines run in the reconciler's round tasks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from hub.core.claims import Claims
from hub.core.executor import LEASE_RECHECK
from hub.core.hooks import ChildFailed
from hub.core.outcome import Outcome, Outcomes, RequeueAfter, Retry, Terminal
from hub.core.parts import NodeParts
from hub.core.registry import SpecEntry
from hub.core.supervisor import WorkerExit
from hub.errors import HubClosed
from hub.etcd.codec import REPLICA_FAILED, ReplicaRecord, encode_replica
from hub.etcd.store import cmp_create, op_delete, op_put, op_txn
from hub.logs import fields, get_logger
from strategies.base import RedundancyStrategy

log = get_logger("hub.core.replicas")

PARKED = "parked: out of restart intensity"


class ReplicaActions:
    """Runs REPLICA_UP and REPLICA_DOWN; see the module docstring."""

    def __init__(
        self,
        *,
        parts: NodeParts,
        redundancy: RedundancyStrategy,
        claims: Claims,
        mark: Callable[[Iterable[str]], None],
    ) -> None:
        self.parts = parts
        self.redundancy = redundancy
        self.claims = claims
        self._mark = mark

    def is_parked(self, child_id: str, lease: int) -> bool:
        """Whether the local replica was parked under this lease and the current spec."""
        if not self.claims.parked:
            return False
        entry = self.parts.registry.specs.get(child_id)
        revision = entry.create_revision if entry is not None else None
        return self.claims.is_parked(child_id, lease, revision)

    def replica_parked(self, child_id: str, entry: SpecEntry | None, exit: WorkerExit) -> None:
        """Supervisor event: a local replica (no fencing token) gave up restarting. Report
        it like a parked owner (``ChildFailed``, token 0) and keep it down; the plan
        records it in its key."""
        lease = self.parts.session.lease_id
        if child_id in self.claims.owned or not lease or entry is None:
            return  # promoted meanwhile (it starts afresh as owner), fenced, or stopped
        self.claims.parked[child_id] = (lease, entry.create_revision)
        self.parts.hooks.dispatch(ChildFailed(child_id, 0, exit.reason))
        self._mark([child_id])

    async def replica_up(self, child_ids: list[str]) -> Outcomes:
        """Publish ``replicas/{id}/{me}`` and start a non-primary instance (a parked
        replica: record it as failed, start nothing)."""
        lease = self.parts.session.lease_id
        if not lease:
            return dict.fromkeys(child_ids, RequeueAfter(LEASE_RECHECK))
        outcomes: dict[str, Outcome] = {}
        parked = [c for c in child_ids if self.is_parked(c, lease)]
        if parked:
            outcomes.update(await self._park(parked, lease))
            skip = set(parked)
            child_ids = [c for c in child_ids if c not in skip]
        role = "active" if self.redundancy.mode == "active_active" else "passive"
        value = encode_replica(ReplicaRecord(self.parts.node_id, lease, role, time.time()))
        futures = []
        for child_id in child_ids:
            key = self.parts.keys.replica(child_id, self.parts.node_id)
            futures.append(self.parts.batcher.submit(op_txn([], [op_put(key, value, lease)]), key))
        results = await asyncio.gather(*futures, return_exceptions=True)
        for child_id, result in zip(child_ids, results, strict=True):
            if isinstance(result, BaseException):
                outcomes[child_id] = Retry(f"replica key write failed: {result}")
                continue
            entry = self.parts.registry.specs.get(child_id)
            if entry is None or self.parts.session.lease_id != lease:
                continue
            if self.parts.supervisor.is_running(child_id):
                continue
            try:
                self.parts.supervisor.start(
                    entry.spec, fencing_token=0, incarnation=lease, role=role
                )
            except (HubClosed, ValueError) as exc:
                log.warning(
                    "could not start replica of %r: %s",
                    child_id,
                    exc,
                    extra=fields(node_id=self.parts.node_id, child_id=child_id),
                )
        return outcomes

    async def replica_down(self, child_ids: list[str]) -> Outcomes:
        """Stop local replicas and withdraw their keys (a parked one's too)."""
        local = [c for c in child_ids if c not in self.claims.owned]
        for child_id in local:
            self.claims.parked.pop(child_id, None)
        await self.parts.supervisor.stop_many(local)
        futures = []
        for child_id in local:
            key = self.parts.keys.replica(child_id, self.parts.node_id)
            futures.append(self.parts.batcher.submit(op_txn([], [op_delete(key)]), key))
        results = await asyncio.gather(*futures, return_exceptions=True)
        return {
            child_id: Retry(f"replica key delete failed: {result}")
            for child_id, result in zip(local, results, strict=True)
            if isinstance(result, BaseException)
        }

    async def _park(self, child_ids: list[str], lease: int) -> Outcomes:
        """Turn the keys of parked local replicas ``failed``, so every node (``ls``,
        ``inspect``, ``get_pids``) sees a dead standby rather than a running one.

        Only the key the cache shows, on this lease, is rewritten (compared on its create
        revision): one deleted meanwhile (promotion, withdrawal) must not come back.
        """
        value = encode_replica(
            ReplicaRecord(self.parts.node_id, lease, REPLICA_FAILED, time.time())
        )
        futures, parked = [], []
        for child_id in child_ids:
            entry = self.parts.registry.replicas.get(child_id, {}).get(self.parts.node_id)
            if entry is None or entry.lease != lease:
                continue
            key = self.parts.keys.replica(child_id, self.parts.node_id)
            op = op_txn([cmp_create(key, "=", entry.create_revision)], [op_put(key, value, lease)])
            futures.append(self.parts.batcher.submit(op, key))
            parked.append(child_id)
        results = await asyncio.gather(*futures, return_exceptions=True)
        outcomes: dict[str, Outcome] = {}
        for child_id, result in zip(parked, results, strict=True):
            if isinstance(result, BaseException):
                log.warning(
                    "could not record the parked replica of %r: %s",
                    child_id,
                    result,
                    extra=fields(node_id=self.parts.node_id, child_id=child_id),
                )
                outcomes[child_id] = Retry(f"parked replica key write failed: {result}")
            else:
                outcomes[child_id] = Terminal(PARKED)
        return outcomes
