"""Executes the ownership actions of a plan: acquire, adopt, release, stop, clear.

Each method takes the children one round planned for that action and returns their
:data:`~hub.core.outcome.Outcomes` (a child left out is done); it never sleeps to retry and
never waits for another action. Writes go through the :class:`~hub.etcd.batcher.TxnBatcher`,
one nested compare-and-set per key, so a round costs a few etcd round trips.

Safety rules (the guarantees of DESIGN.md):

* A worker is started only after ``owners/{id}`` was created by *this* node incarnation, on
  its lease, in a txn whose compares proved the key absent and the spec unchanged; the
  create revision is the fencing token handed to the worker.
* A worker is stopped *before* its owner key is deleted (release = stop, then delete, in
  chunks of one txn's worth), and the delete is fenced by the token.
* An undecodable owner key without a lease is deleted only if unchanged (compare on its
  mod revision).
* A write whose outcome is unknown is not repeated blindly: the child is retried, and its
  next plan reads the cache the watch has updated meanwhile.

Ownership: no tasks of its own; its coroutines run in the reconciler's round tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from hub.core.claims import Claims
from hub.core.hooks import (
    ChildFailed,
    ChildrenMigrated,
    ChildStarting,
    ChildStopped,
    HookName,
)
from hub.core.outcome import Outcome, Outcomes, RequeueAfter, Retry, Terminal
from hub.core.owner_records import OwnerRecords
from hub.core.parts import NodeParts
from hub.core.registry import SpecEntry
from hub.core.worker_state import Owned, WorkerStates
from hub.errors import HubClosed, InvalidSpec, RequestTooLarge
from hub.etcd.store import (
    KeyValue,
    ResponseTooLarge,
    cmp_create,
    cmp_mod,
    op_delete,
    op_get,
    op_put,
    op_txn,
)
from hub.logs import fields, get_logger
from hub.model import ChildSpec, OwnerState
from strategies.migration import MigrationStrategy

log = get_logger("hub.core.executor")

#: Children released per step: one etcd txn's worth of owner deletes.
RELEASE_CHUNK = 126

#: The lease went away between plan and execution: look again shortly (a new lease
#: re-adds every child anyway).
LEASE_RECHECK = 0.5


class Executor:
    """Runs ACQUIRE, ADOPT, RELEASE, STOP_LOCAL and CLEAR_FOREIGN; see the module docstring."""

    def __init__(
        self,
        *,
        parts: NodeParts,
        migration: MigrationStrategy,
        claims: Claims,
        states: WorkerStates,
        records: OwnerRecords,
        mark: Callable[[Iterable[str]], None],
        placement: Callable[[str], str | None],
        replicated: Callable[[], bool],
    ) -> None:
        self.parts = parts
        self.migration = migration
        self.claims = claims
        self.states = states
        self.records = records
        self._mark = mark
        self._placement = placement
        self._replicated = replicated
        #: children parked as failed because their saved state is too large to read
        self.unreadable_states = 0
        #: called per child this node handed to another node (migration kind "hot" or
        #: "cold", seconds from the decision to release it to the commit of the release)
        self.handover_observer: Callable[[str, float], None] | None = None

    def _log(self, message: str, child_id: str, *args: object, token: int | None = None) -> None:
        extra = fields(node_id=self.parts.node_id, child_id=child_id, token=token)
        log.warning(message, child_id, *args, extra=extra)

    # -- acquire and adopt ---------------------------------------------------------------

    async def acquire(self, child_ids: list[str]) -> Outcomes:
        """Create ``owners/{id}`` on our lease, then start each child with its saved state."""
        lease = self.parts.session.lease_id
        if not lease:
            return dict.fromkeys(child_ids, RequeueAfter(LEASE_RECHECK))
        owned = self.claims.owned
        value = self.records.value(lease, OwnerState.STARTING)
        keys = self.parts.keys
        replicated = self._replicated()
        replicas = self.parts.registry.replicas
        entries: list[SpecEntry] = []
        futures = []
        for child_id in child_ids:
            entry = self.parts.registry.specs.get(child_id)
            if entry is None:
                continue
            owner_key = keys.owner(child_id)
            # The same txn reads the state the child may start from (handed over by its
            # previous owner, or checkpointed). If the reply is too large for the channel,
            # etcd has applied the txn but its outcome is lost to us: the watch then shows
            # these owner keys as ours and ADOPT reads their state in replies that fit.
            success = [op_put(owner_key, value, lease)]
            success += [op_get(key) for key in self.states.state_keys(child_id)]
            if replicated or self.parts.node_id in replicas.get(child_id, ()):
                # Promotion of a replica: its standby key goes in the same txn.
                success.append(op_delete(keys.replica(child_id, self.parts.node_id)))
            op = op_txn(
                [
                    cmp_create(owner_key, "=", 0),
                    cmp_create(keys.spec(child_id), "=", entry.create_revision),
                ],
                success,
            )
            entries.append(entry)
            futures.append(
                self.parts.batcher.submit(op, owner_key, len(owner_key) * 5 + len(value))
            )
        results = await asyncio.gather(*futures, return_exceptions=True)
        outcomes: dict[str, Outcome] = {}
        acquired: list[Owned] = []
        read: dict[bytes, KeyValue] = {}
        lost_replies = 0
        for entry, result in zip(entries, results, strict=True):
            child_id = entry.spec.id
            if isinstance(result, ResponseTooLarge):
                lost_replies += 1  # applied by etcd: the watch shows it ours, ADOPT follows
                outcomes[child_id] = Retry("acquire reply too large")
                continue
            if isinstance(result, BaseException):
                self._log("acquire of %r failed: %s", child_id, result)
                outcomes[child_id] = Retry(f"acquire failed: {result}")
                continue
            if not result.succeeded:
                continue  # someone else holds it; the watch will show who
            if self.parts.session.lease_id != lease:
                continue  # fenced meanwhile: the key dies with the old lease
            owned[child_id] = result.revision
            self.claims.parked.pop(child_id, None)  # a promoted replica starts afresh as owner
            state_keys = self.states.state_keys(child_id)
            saved = [got[0] for got in result.responses[1 : 1 + len(state_keys)] if got]
            read.update((kv.key, kv) for kv in saved)
            acquired.append((child_id, result.revision, tuple(kv.key for kv in saved)))
        if lost_replies:
            log.info(
                "acquire reply with saved states too large for %d children: adopting them",
                lost_replies,
                extra=fields(node_id=self.parts.node_id),
            )
        outcomes.update(await self._start_owned(acquired, lease, read=read))
        return outcomes

    async def adopt(self, child_ids: list[str]) -> Outcomes:
        """Take over children the cache shows this incarnation owns (an acquire whose reply
        was lost): start them with the state their acquire would have read."""
        lease = self.parts.session.lease_id
        to_start: list[Owned] = []
        for child_id in child_ids:
            owner = self.parts.registry.owners.get(child_id)
            if owner is None or owner.record is None or not lease:
                continue
            if self.claims.released.get(child_id) == owner.create_revision:
                continue
            self.claims.owned[child_id] = owner.create_revision
            if owner.record.state is not OwnerState.FAILED and not self.parts.supervisor.is_running(
                child_id
            ):
                to_start.append((child_id, owner.create_revision, self.states.state_keys(child_id)))
        return await self._start_owned(to_start, lease)

    async def _start_owned(
        self, owned: list[Owned], lease: int, *, read: Mapping[bytes, KeyValue] | None = None
    ) -> Outcomes:
        """Start children this node just came to own, each with its saved state.

        ``owned`` holds (child id, fencing token, state keys present). With ``read`` (the
        acquire txn read them) those are the states; otherwise they are read now.
        """
        outcomes: dict[str, Outcome] = {}
        if read is not None:
            states = {child_id: self.states.incoming(child_id, read) for child_id, _, _ in owned}
        else:
            states, outcomes = await self._read_states(owned)
        for child_id, token, _ in owned:
            if child_id not in states:
                continue
            if self.claims.owned.get(child_id) != token or self.parts.session.lease_id != lease:
                continue  # lost (fenced, released) while its state was read
            state, source = states[child_id]
            if self.parts.supervisor.is_running(child_id):
                # A promoted replica, or a worker kept through an outage (availability
                # mode): restart it as the primary, under its new fencing token.
                kept = await self.parts.supervisor.stop_many(
                    [child_id], collect_state=True, state_timeout=self.migration.state_timeout
                )
                local_state = kept.get(child_id)
                if state is None and local_state is not None:
                    state, source = local_state, "promotion"
            if self.parts.hooks.has_handlers(HookName.CHILD_DATA_ALTER):
                await self._start_altered(child_id, token, lease, state, source)
            else:
                self._start(child_id, token, lease, state, source)
        return outcomes

    async def _read_states(
        self, owned: list[Owned]
    ) -> tuple[dict[str, tuple[Any, str | None]], dict[str, Outcome]]:
        """The states to start from, and the outcomes of children that cannot start.

        After an etcd error a child is given back to the plan (unowned locally, it is
        adopted again, state and all); a state too large for the channel parks it as
        failed (:meth:`_state_unreadable`).
        """
        reads = await self.states.read(owned)
        outcomes: dict[str, Outcome] = {}
        if reads.error is not None:
            log.warning(
                "could not read the state of %d children (%s); they will be retried",
                len(owned),
                reads.error,
                extra=fields(node_id=self.parts.node_id),
            )
            for child_id, token, _ in owned:
                if self.claims.owned.get(child_id) == token:
                    del self.claims.owned[child_id]
                outcomes[child_id] = Retry(f"state read failed: {reads.error}")
            return {}, outcomes
        for child_id, token, _ in owned:
            if child_id in reads.too_large:
                outcomes[child_id] = self._state_unreadable(
                    child_id, token, reads.too_large[child_id]
                )
        return reads.states, outcomes

    def _state_unreadable(self, child_id: str, token: int, exc: ResponseTooLarge) -> Terminal:
        """Park a child whose saved state is larger than this node accepts from etcd.

        Starting it without that state would lose it, and retrying cannot succeed: it is
        marked failed, with the reason, until an operator raises ``max_response_bytes`` or
        moves it to a node that accepts it.
        """
        self.unreadable_states += 1
        reason = f"saved state too large to read (raise max_response_bytes): {exc}"
        log.error(
            "%r not started: %s",
            child_id,
            reason,
            extra=fields(node_id=self.parts.node_id, child_id=child_id, token=token),
        )
        self.parts.hooks.dispatch(ChildFailed(child_id, token, reason))
        self.records.write(child_id, token, OwnerState.FAILED, 0, reason)
        return Terminal(reason)

    async def _start_altered(
        self, child_id: str, token: int, lease: int, state: Any, source: str | None
    ) -> None:
        """Run the ``child_data_alter`` chain, then start what it returns."""
        entry = self.parts.registry.specs.get(child_id)
        if entry is None:
            return
        payload = ChildStarting(
            entry.spec,
            self.parts.node_id,
            token,
            migrated=source == "handover",
            handover=source == "handover",
        )
        altered = await self.parts.hooks.dispatch_alter(payload)
        if self.claims.owned.get(child_id) != token or self.parts.session.lease_id != lease:
            return  # lost while the hooks ran
        self._start(child_id, token, lease, state, source, spec=altered.spec)

    def _start(
        self,
        child_id: str,
        token: int,
        lease: int,
        state: Any = None,
        source: str | None = None,
        *,
        spec: ChildSpec | None = None,
    ) -> None:
        entry = self.parts.registry.specs.get(child_id)
        if entry is None:
            self._mark([child_id])
            return
        try:
            self.parts.supervisor.start(
                spec if spec is not None else entry.spec,
                fencing_token=token,
                incarnation=lease,
                state=state,
                state_source=source,
            )
        except (HubClosed, ValueError) as exc:
            self._log("could not start %r: %s", child_id, exc, token=token)

    # -- release, stop, clear ------------------------------------------------------------

    def _cached_token(self, child_id: str) -> int | None:
        """Our token as the cache shows it (an acquire whose reply was lost, for example)."""
        owner = self.parts.registry.owners.get(child_id)
        lease = self.parts.session.lease_id
        if owner is None or owner.record is None or not lease:
            return None
        record = owner.record
        if record.node_id == self.parts.node_id and record.incarnation == lease:
            return owner.create_revision
        return None

    async def release(self, child_ids: list[str], decided: float) -> Outcomes:
        """Stop, then delete the owner key, in chunks of one txn's worth.

        Chunks pipeline the hand-over: the new owners can start the first children while
        this node is still stopping the rest. With a hot-swap migration, a child that moves
        (its spec still exists) hands its state over in the very txn that releases it.
        ``decided`` (monotonic) is when the release was decided: each moving child's
        hand-over lasts from then to the commit of its txn (:attr:`handover_observer`).
        """
        futures = []
        released = []
        migration = self.migration
        specs = self.parts.registry.specs
        committed: dict[str, float] = {}
        timed = self.handover_observer is not None
        for first in range(0, len(child_ids), RELEASE_CHUNK):
            chunk = child_ids[first : first + RELEASE_CHUNK]
            moving = migration.handover and any(c in specs for c in chunk)
            states = await self.parts.supervisor.stop_many(
                chunk, collect_state=moving, state_timeout=migration.state_timeout
            )
            handover_lease = await self.states.handover_lease() if states else 0
            now = time.time()
            for child_id in chunk:
                token = self.claims.owned.get(child_id) or self._cached_token(child_id)
                if token is None:
                    continue
                owner_key = self.parts.keys.owner(child_id)
                success = [op_delete(owner_key)]
                if child_id in states and child_id in specs and handover_lease:
                    try:
                        value = self.states.encode(states[child_id], token, now)
                    except InvalidSpec as exc:
                        self._log("%r moves without state: %s", child_id, exc, token=token)
                    else:
                        success.append(
                            op_put(self.parts.keys.handover(child_id), value, handover_lease)
                        )
                op = op_txn([cmp_create(owner_key, "=", token)], success)
                released.append(child_id)
                future = self.parts.batcher.submit(op, owner_key)
                if timed and child_id in specs:
                    future.add_done_callback(_stamp(committed, child_id))
                futures.append(future)
        results = await asyncio.gather(*futures, return_exceptions=True)
        outcomes: dict[str, Outcome] = {}
        migrated: dict[str, str] = {}
        kind = "hot" if migration.handover else "cold"
        for child_id, result in zip(released, results, strict=True):
            if isinstance(result, BaseException):
                # etcd applied nothing; the retry carries no state (the worker stopped)
                lost = "; it moves without its handed-over state"
                lost = lost if isinstance(result, RequestTooLarge) else ""
                self._log("release of %r failed: %s%s", child_id, result, lost)
                outcomes[child_id] = Retry(f"release failed: {result}")
                continue
            token = self.claims.owned.pop(child_id, None) or 0
            if token:
                self.claims.released[child_id] = token
            moving = child_id in specs
            if moving and result.succeeded and child_id in committed:
                self._observe_handover(kind, committed[child_id] - decided)
            self.parts.hooks.dispatch(
                ChildStopped(child_id, token, "migrated" if moving else "stopped")
            )
            if moving:
                migrated[child_id] = self._placement(child_id) or ""
        if migrated:
            self.parts.hooks.dispatch(ChildrenMigrated(migrated))
        return outcomes

    def _observe_handover(self, kind: str, seconds: float) -> None:
        observer = self.handover_observer
        if observer is not None:
            with contextlib.suppress(Exception):
                observer(kind, seconds)

    async def stop_local(self, child_ids: list[str]) -> Outcomes:
        """Stop local workers this node does not own (any more) and forget them."""
        await self.parts.supervisor.stop_many(child_ids)
        for child_id in child_ids:
            self.claims.owned.pop(child_id, None)
        return {}

    async def clear_foreign(self, child_ids: list[str]) -> Outcomes:
        """Delete undecodable owner keys no lease holds, if still unchanged."""
        outcomes: dict[str, Outcome] = {}
        for child_id in child_ids:
            owner = self.parts.registry.owners.get(child_id)
            if owner is None:
                continue
            owner_key = self.parts.keys.owner(child_id)
            self._log("deleting undecodable lease-less owner key of %r", child_id)
            op = op_txn([cmp_mod(owner_key, "=", owner.mod_revision)], [op_delete(owner_key)])
            try:
                await self.parts.batcher.submit(op, owner_key)
            except Exception as exc:
                self._log("could not clear owner key of %r: %s", child_id, exc)
                outcomes[child_id] = Retry(f"clear failed: {exc}")
        return outcomes


def _stamp(stamps: dict[str, float], child_id: str) -> Callable[[asyncio.Future[Any]], None]:
    """A done callback noting when ``child_id``'s write completed (monotonic)."""

    def stamp(_: asyncio.Future[Any]) -> None:
        stamps[child_id] = time.monotonic()

    return stamp
