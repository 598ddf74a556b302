"""The reconciler: turns (specs, owners, membership) into acquire/start/stop/release actions.

It is **level-triggered**: each child is planned (:mod:`hub.core.plan`) from one view of the
current registry snapshot and this node's own state, never from the event that marked it,
and every action is idempotent. Work is **incremental**: a spec or owner change marks that
child; a membership change marks the children it moves (:mod:`hub.core.placement_view`),
plus every child this node owns. Marks go to a :class:`~hub.core.workqueue.WorkQueue`:
marks of a burst are **coalesced** into one round, and a child is never acted on twice at
once (a child marked while in flight is planned again when its action is done).

Each round groups its children by action and runs the groups concurrently
(:class:`~hub.core.executor.Executor`, :class:`~hub.core.replicas.ReplicaActions`). Every
child is settled on its own as soon as its group is done, by its
:mod:`~hub.core.outcome`: a child whose write failed is retried after *its own* backoff,
and never holds back the others. Worker state lives in :mod:`hub.core.worker_state`; the
owner records the supervisor's events cause are written by :mod:`hub.core.owner_records`.
The safety rules (start only under an owner key this incarnation created, stop before
release, fenced writes) are stated where they are kept: :mod:`hub.core.plan` and
:mod:`hub.core.executor`.

Ownership: the Hub runs :meth:`Reconciler.run`; each round is a task of its TaskGroup,
and each round's action groups are tasks of the round's TaskGroup. At most
``max_in_flight_rounds`` rounds run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from hub.core.claims import Claims
from hub.core.executor import Executor
from hub.core.hooks import ChildStopped, HookName, Hooks
from hub.core.outcome import Outcomes, Retry, settle_many
from hub.core.owner_records import OwnerRecords
from hub.core.parts import NodeParts
from hub.core.placement_view import PlacementView
from hub.core.plan import Action, ChildView, Self, plan, plan_replicated
from hub.core.registry import Registry
from hub.core.replicas import ReplicaActions
from hub.core.supervisor import Supervisor, WorkerExit
from hub.core.worker_state import WorkerStates
from hub.core.workqueue import Backoff, WorkQueue
from hub.etcd.batcher import TxnBatcher
from hub.etcd.codec import REPLICA_FAILED
from hub.etcd.keys import KeySpace
from hub.etcd.session import Session
from hub.logs import fields, get_logger
from strategies.base import DistributionStrategy, RedundancyStrategy
from strategies.migration import ColdSwap, MigrationStrategy
from strategies.redundancy import Singularity

log = get_logger("hub.core.reconciler")


class Reconciler:
    """Plans and executes dirty children; also the supervisor's event sink."""

    def __init__(
        self,
        *,
        node_id: str,
        keys: KeySpace,
        registry: Registry,
        session: Session,
        batcher: TxnBatcher,
        supervisor: Supervisor,
        distribution: DistributionStrategy,
        migration: MigrationStrategy | None = None,
        hooks: Hooks | None = None,
        redundancy: RedundancyStrategy | None = None,
        resync_interval: float = 30.0,
        max_in_flight_rounds: int = 8,
        backoff: Backoff | None = None,
    ) -> None:
        self.node_id = node_id
        self.keys = keys
        self.registry = registry
        self.session = session
        self.batcher = batcher
        self.supervisor = supervisor
        self.distribution = distribution
        self.migration: MigrationStrategy = migration if migration is not None else ColdSwap()
        self.hooks = hooks if hooks is not None else Hooks()
        self.redundancy: RedundancyStrategy = (
            redundancy if redundancy is not None else Singularity()
        )
        self.resync_interval = resync_interval
        self.draining = False
        #: quorum lost: hand everything back, acquire nothing (like draining, but staying)
        self.partitioned = False
        #: availability mode: keep workers through a lease loss, re-acquire afterwards
        self.keep_running = False
        self._frozen = False
        self.rounds = 0
        #: called after every reconcile round: (seconds, actions) — metrics
        self.round_observer: Callable[[float, int], None] | None = None
        self.claims = Claims()
        #: children to plan: dedup, one round at a time per child, per-child backoff
        self.queue: WorkQueue[str] = WorkQueue(backoff=backoff)
        self.view = PlacementView(registry, distribution, self.redundancy)
        self._rounds = asyncio.Semaphore(max_in_flight_rounds)
        self.states = WorkerStates(
            node_id=node_id, keys=keys, session=session, batcher=batcher, migration=self.migration
        )
        parts = NodeParts(node_id, keys, registry, session, batcher, supervisor, self.hooks)
        self.replicas = ReplicaActions(
            parts=parts,
            redundancy=self.redundancy,
            claims=self.claims,
            mark=self.mark,
        )
        self.records = OwnerRecords(
            parts=parts,
            claims=self.claims,
            states=self.states,
            replica_parked=self.replicas.replica_parked,
        )
        self.executor = Executor(
            parts=parts,
            migration=self.migration,
            claims=self.claims,
            states=self.states,
            records=self.records,
            mark=self.mark,
            placement=self.placement,
            replicated=lambda: self.replicated,
        )

    # -- state others read ---------------------------------------------------------------

    @property
    def owned(self) -> dict[str, int]:
        """child id -> fencing token of every child this incarnation owns (read-only use)."""
        return self.claims.owned

    @property
    def unreadable_states(self) -> int:
        """Children parked as failed because their saved state is too large to read."""
        return self.executor.unreadable_states

    @property
    def handover_observer(self) -> Callable[[str, float], None] | None:
        """Called per child this node handed to another node (migration kind "hot" or
        "cold", seconds from the decision to release it to the commit of the release)."""
        return self.executor.handover_observer

    @handover_observer.setter
    def handover_observer(self, observer: Callable[[str, float], None] | None) -> None:
        self.executor.handover_observer = observer

    def placement(self, child_id: str) -> str | None:
        """Where the distribution strategy puts a child, at the cached membership."""
        return self.view.owner(child_id)

    def replica_set(self, child_id: str) -> tuple[str, ...]:
        """Where a replicated child's instances belong, primary first."""
        return self.view.instances(child_id)

    @property
    def replicated(self) -> bool:
        """More than one instance per child at the cached membership."""
        return self.view.replicated

    def is_idle(self) -> bool:
        """True when no child is marked, in flight or waiting out a retry backoff."""
        return self.queue.is_idle()

    async def wait_idle(self) -> None:
        """Wait until no reconcile work is pending."""
        await self.queue.wait_idle()

    # -- inputs --------------------------------------------------------------------------

    def mark(self, child_ids: Iterable[str]) -> None:
        """Ask for these children to be reconciled."""
        self.queue.add_many(child_ids)

    def mark_all(self) -> None:
        """Reconcile every known child (after a new lease, a relist, or periodically)."""
        registry = self.registry
        self.mark(registry.specs.keys() | registry.owners.keys() | self.claims.owned.keys())
        self.mark(registry.replicas.keys())
        self.mark(self.supervisor.child_ids())

    def registry_changed(self, child_ids: set[str], nodes_changed: bool, full: bool) -> None:
        """Registry listener: mark what changed; rebuild placement on membership change."""
        if nodes_changed or full:
            self._rebuild_placement(full)
        if child_ids:
            self.view.forget(child_ids)  # their specs (pins) may have changed
            released, owners = self.claims.released, self.registry.owners
            if released:
                for child_id in child_ids & released.keys():
                    owner = owners.get(child_id)
                    if owner is None or owner.create_revision != released[child_id]:
                        del released[child_id]  # the cache has seen the release
            self.mark(child_ids)

    def _rebuild_placement(self, full: bool, force: bool = False) -> None:
        moved = self.view.rebuild(full, force)
        if moved is None:
            return
        if moved.everything:
            self.mark_all()
            return
        self.mark(moved.child_ids)
        if self.replicated:
            self.mark(self.supervisor.child_ids())
        self.mark(self.claims.owned.keys())  # they may have to move

    def set_draining(self, draining: bool) -> None:
        """A draining node acquires nothing and hands everything it owns back."""
        self.draining = draining
        self.mark(self.claims.owned.keys())

    def set_partitioned(self, partitioned: bool) -> None:
        """Enter or leave partitioned mode (see :mod:`hub.core.quorum`)."""
        self.partitioned = partitioned
        self.mark_all()

    async def lease_lost(self) -> None:
        """Strict: fence (stop everything). Availability: keep the workers, forget the dead
        tokens, and act on nothing until a new lease is held."""
        if not self.keep_running:
            await self.fence()
            return
        self.claims.owned.clear()
        self._frozen = True

    def lease_granted(self) -> None:
        self._frozen = False
        self.claims.parked.clear()  # parked under the old lease: a new one starts afresh
        self.mark_all()

    async def fence(self) -> None:
        """Self-fencing: stop every local worker now and forget all ownership."""
        fenced = dict(self.claims.owned)
        self.claims.owned.clear()
        await self.supervisor.stop_all()
        if self.hooks.has_handlers(HookName.CHILD_STOPPED):
            for child_id, token in fenced.items():
                self.hooks.dispatch(ChildStopped(child_id, token, "fenced"))

    async def checkpoint(self, child_id: str, token: int, state: Any) -> None:
        """Persist a worker's state, fenced by its token (:meth:`WorkerStates.checkpoint`).

        Raises:
            StaleFence: the child has another owner now (or none).
            InvalidSpec: the state cannot be encoded, or is too large.
            StoreError: etcd did not answer.
        """
        await self.states.checkpoint(child_id, token, state)

    # -- supervisor events (synchronous; they only queue writes) --------------------------

    def worker_started(self, child_id: str, fencing_token: int, restarts: int) -> None:
        self.records.worker_started(child_id, fencing_token, restarts)

    def worker_restarting(
        self, child_id: str, fencing_token: int, restarts: int, reason: str
    ) -> None:
        self.records.worker_restarting(child_id, fencing_token, restarts, reason)

    def worker_exited(self, child_id: str, fencing_token: int, exit: WorkerExit) -> None:
        self.records.worker_exited(child_id, fencing_token, exit)

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Reconcile forever; returns only on cancellation."""
        async with asyncio.TaskGroup() as tg:
            while True:
                batch = await self._next_batch()
                actions = self._plan(batch)
                decided = time.monotonic()
                if actions:
                    self.queue.finish_many([c for c in batch if c not in actions])
                else:
                    self.queue.finish_many(batch)
                if not actions:
                    continue
                await self._rounds.acquire()
                tg.create_task(self._execute(actions, decided))

    async def _next_batch(self) -> list[str]:
        """The next children to plan; meanwhile the periodic resync and a due load-aware
        rebuild (they mark children)."""
        while True:
            due = self.view.rebuild_due()
            if due is not None and due <= 0:
                self._rebuild_placement(full=False, force=True)
                due = None
            resync = due is None or due >= self.resync_interval
            timeout = self.resync_interval if due is None or resync else due
            try:
                async with asyncio.timeout(timeout):
                    return await self.queue.get()
            except TimeoutError:
                if resync:
                    self.mark_all()  # periodic level-triggered safety net

    def _me(self) -> Self:
        return Self(self.node_id, self.session.lease_id, self.draining or self.partitioned)

    def _plan(self, child_ids: Iterable[str]) -> dict[str, Action]:
        """The actions for ``child_ids`` (NOOPs left out), from one view each."""
        me = self._me()
        if self._frozen and not me.lease:
            return {}  # availability mode during an outage: keep everything as it is
        reg = self.registry
        specs, owners, replicas, revision = reg.specs, reg.owners, reg.replicas, reg.revision
        owned, released = self.claims.owned, self.claims.released
        running, node_id = self.supervisor.is_running, self.node_id
        out: dict[str, Action] = {}
        if self.replicated:
            replica_set, is_parked = self.replica_set, self.replicas.is_parked
            for child_id in child_ids:
                mine = replicas.get(child_id, {}).get(node_id)
                view = ChildView(
                    me,
                    specs.get(child_id),
                    owners.get(child_id),
                    owned.get(child_id),
                    running(child_id),
                    revision,
                    released.get(child_id),
                    replica_set=replica_set(child_id),
                    my_replica=mine is not None,
                    parked=is_parked(child_id, me.lease),
                    recorded_failed=mine is not None and mine.record.role == REPLICA_FAILED,
                )
                action = plan_replicated(view)
                if action is not Action.NOOP:
                    out[child_id] = action
            return out
        adopt, placement = self.keep_running, self.placement
        for child_id in child_ids:
            spec = specs.get(child_id)
            view = ChildView(  # the first seven by position: this runs per child and round
                me,
                spec,
                owners.get(child_id),
                owned.get(child_id),
                running(child_id),
                revision,
                released.get(child_id),
                desired=placement(child_id) if spec is not None else None,
                # a leftover of a time with more instances per child (withdrawn)
                my_replica=bool(replicas) and node_id in replicas.get(child_id, ()),
                adopt_running=adopt,
            )
            action = plan(view)
            if action is not Action.NOOP:
                out[child_id] = action
        return out

    async def _execute(self, actions: Mapping[str, Action], decided: float) -> None:
        """Run one round's actions; ``decided`` is when :meth:`_plan` chose them."""
        self.rounds += 1
        began = time.monotonic()
        groups: dict[Action, list[str]] = {}
        for child_id, action in actions.items():
            groups.setdefault(action, []).append(child_id)
        try:
            async with asyncio.TaskGroup() as tg:
                for action, child_ids in groups.items():
                    tg.create_task(self._execute_group(action, child_ids, decided))
        finally:
            self._rounds.release()
            if self.round_observer is not None:
                with contextlib.suppress(Exception):
                    self.round_observer(time.monotonic() - began, len(actions))

    async def _execute_group(self, action: Action, child_ids: list[str], decided: float) -> None:
        """Run one action for its children, then settle each by its own outcome."""
        outcomes: Outcomes = {}
        try:
            outcomes = await self._dispatch(action, child_ids, decided)
        except Exception as exc:  # a bug or an unexpected error must not kill the loop
            log.exception(
                "reconcile of %d children (%s) failed: %s",
                len(child_ids),
                action.value,
                exc,
                extra=fields(node_id=self.node_id),
            )
            outcomes = dict.fromkeys(child_ids, Retry(f"{action.value} raised {exc!r}"))
        finally:  # also when cancelled: the children must not stay in flight
            settle_many(self.queue, child_ids, outcomes)

    async def _dispatch(self, action: Action, child_ids: list[str], decided: float) -> Outcomes:
        executor, replicas = self.executor, self.replicas
        if action is Action.ACQUIRE:
            return await executor.acquire(child_ids)
        if action is Action.RELEASE:
            return await executor.release(child_ids, decided)
        if action is Action.STOP_LOCAL:
            return await executor.stop_local(child_ids)
        if action is Action.CLEAR_FOREIGN:
            return await executor.clear_foreign(child_ids)
        if action is Action.ADOPT:
            return await executor.adopt(child_ids)
        if action is Action.REPLICA_UP:
            return await replicas.replica_up(child_ids)
        if action is Action.REPLICA_DOWN:
            return await replicas.replica_down(child_ids)
        return {}
