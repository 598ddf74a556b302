"""The owner-record writer: what ``owners/{id}`` says about a child this node runs.

The local supervisor reports worker events synchronously (:meth:`OwnerRecords.worker_started`,
:meth:`~OwnerRecords.worker_restarting`, :meth:`~OwnerRecords.worker_exited`); each only
queues a write on the :class:`~hub.etcd.batcher.TxnBatcher` and returns.

Guarantees:

* Every write is fenced: a txn comparing the owner key's create revision with the token
  the worker runs under, put on this node's current lease. Nothing is written for a child
  this incarnation does not own under that token (see :class:`~hub.core.claims.Claims`).
* The batcher keeps each key's writes in submission order, so a ``failed`` record is never
  overwritten by the ``running`` one queued before it.
* A failed write is retried after 0.5-1 s, but only while it still says what is true: the
  same token, ``running`` only while the worker runs, ``failed`` only while it is parked.
* A worker that left the cluster by itself (a normal exit, or any exit of a temporary
  child) has its spec, owner, checkpoint and handover keys deleted in one fenced txn.
* A local replica (token 0) that ran out of restart intensity is reported to the
  ``replica_parked`` callback; its key is the reconciler's to rewrite.

Ownership: no tasks; retries are loop timers (``call_later``) that only queue writes.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from hub.core.claims import Claims
from hub.core.hooks import ChildFailed, ChildStopped
from hub.core.parts import NodeParts
from hub.core.registry import SpecEntry
from hub.core.supervisor import ExitKind, WorkerExit
from hub.core.worker_state import WorkerStates
from hub.errors import HubClosed
from hub.etcd.codec import encode_owner
from hub.etcd.store import cmp_create, op_delete, op_put, op_txn
from hub.logs import fields, get_logger
from hub.model import OwnerRecord, OwnerState, RestartPolicy

log = get_logger("hub.core.owner_records")


class _OwnerWrite(NamedTuple):
    """An owner record this node wrote, kept to write it again if the write failed."""

    token: int
    state: OwnerState
    restarts: int
    last: str


class OwnerRecords:
    """Writes this node's owner records from supervisor events; see the module docstring."""

    def __init__(
        self,
        *,
        parts: NodeParts,
        claims: Claims,
        states: WorkerStates,
        replica_parked: Callable[[str, SpecEntry | None, WorkerExit], None],
    ) -> None:
        self.parts = parts
        self.claims = claims
        self.states = states
        self._replica_parked = replica_parked
        self._value_cache: dict[tuple[Any, ...], bytes] = {}

    def value(self, lease: int, state: OwnerState, restarts: int = 0, last: str = "") -> bytes:
        """Encoded owner record; identical records within 100 ms share one encoding."""
        now = time.time()
        key = (lease, state, restarts, last, int(now * 10))
        value = self._value_cache.get(key)
        if value is None:
            if len(self._value_cache) > 1024:
                self._value_cache.clear()
            value = encode_owner(OwnerRecord(self.parts.node_id, lease, state, now, restarts, last))
            self._value_cache[key] = value
        return value

    # -- supervisor events (synchronous; they only queue writes) --------------------------

    def worker_started(self, child_id: str, fencing_token: int, restarts: int) -> None:
        self.write(child_id, fencing_token, OwnerState.RUNNING, restarts)

    def worker_restarting(
        self, child_id: str, fencing_token: int, restarts: int, reason: str
    ) -> None:
        self.write(child_id, fencing_token, OwnerState.RESTARTING, restarts, reason)

    def worker_exited(self, child_id: str, fencing_token: int, exit: WorkerExit) -> None:
        entry = self.parts.registry.specs.get(child_id)
        removes = exit.kind is ExitKind.NORMAL or (
            entry is not None
            and entry.spec.restart is RestartPolicy.TEMPORARY
            and exit.kind is ExitKind.CRASHED
        )
        if fencing_token == 0 and not removes:
            self._replica_parked(child_id, entry, exit)
            return
        if self.claims.owned.get(child_id) != fencing_token:
            return
        if removes:
            # Self-termination (transient normal exit, temporary any exit): the child
            # leaves the cluster. Delete spec and owner together, fenced by our token.
            owner_key = self.parts.keys.owner(child_id)
            op = op_txn(
                [cmp_create(owner_key, "=", fencing_token)],
                [
                    op_delete(self.parts.keys.spec(child_id)),
                    op_delete(owner_key),
                    op_delete(self.parts.keys.checkpoint(child_id)),
                    op_delete(self.parts.keys.handover(child_id)),
                ],
            )
            fut = self.parts.batcher.submit(op, owner_key)
            fut.add_done_callback(lambda f: self._after_write(f, child_id))
            reason = "normal" if exit.kind is ExitKind.NORMAL else f"crashed: {exit.reason}"
            self.parts.hooks.dispatch(ChildStopped(child_id, fencing_token, reason))
            return
        self.parts.hooks.dispatch(ChildFailed(child_id, fencing_token, exit.reason))
        # The supervisor's count: the cached owner record may not show the last restart yet.
        self.write(child_id, fencing_token, OwnerState.FAILED, exit.restarts, exit.reason)

    # -- writing -------------------------------------------------------------------------

    def write(
        self, child_id: str, token: int, state: OwnerState, restarts: int, last: str = ""
    ) -> None:
        """Queue a fenced write of the child's owner record (if we own it under ``token``)."""
        if self.claims.owned.get(child_id) != token:
            return
        lease = self.parts.session.lease_id
        if not lease:
            return
        owner_key = self.parts.keys.owner(child_id)
        value = self.value(lease, state, restarts, last[:500])
        success = [op_put(owner_key, value, lease)]
        if state is OwnerState.RUNNING and self.states.take_consumed(child_id):
            # The new instance runs with the handed-over state: drop it from etcd.
            success.append(op_delete(self.parts.keys.handover(child_id)))
        op = op_txn([cmp_create(owner_key, "=", token)], success)
        try:
            fut = self.parts.batcher.submit(op, owner_key, len(owner_key) * 2 + len(value))
        except HubClosed:
            return
        record = _OwnerWrite(token, state, restarts, last)
        fut.add_done_callback(lambda f: self._after_write(f, child_id, record))

    def _after_write(
        self, fut: asyncio.Future[Any], child_id: str, record: _OwnerWrite | None = None
    ) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None and not isinstance(exc, HubClosed):
            log.warning(
                "state write for %r failed (%s); it will be retried",
                child_id,
                exc,
                extra=fields(
                    node_id=self.parts.node_id,
                    child_id=child_id,
                    token=self.claims.owned.get(child_id),
                ),
            )
            if record is not None:
                self._rewrite_later(child_id, record)

    def _rewrite_later(self, child_id: str, record: _OwnerWrite) -> None:
        """Write ``record`` again after a failed write, if it still says what is true: the
        same owner token, and ``running`` only while the worker runs, ``failed`` only while
        it is parked (a newer write has superseded a transient state)."""

        def again() -> None:
            if self.claims.owned.get(child_id) != record.token:
                return
            running = self.parts.supervisor.is_running(child_id)
            if record.state is OwnerState.RUNNING and running:
                self.write(child_id, record.token, record.state, record.restarts)
            elif record.state is OwnerState.FAILED and not running:
                self.write(child_id, *record)

        asyncio.get_running_loop().call_later(0.5 + random.random() * 0.5, again)
