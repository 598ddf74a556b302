"""The reconciler: turns (specs, owners, membership) into acquire/start/stop/release actions.

It is **level-triggered**: :func:`plan` decides from the current registry snapshot and this
node's own state only, never from the event that woke it, and every action is idempotent.
Changes are **coalesced**: ids marked dirty while a round is being planned join the same
round; an id is never acted on twice at once (the in-flight set, as in client-go's
workqueue). Work is **incremental**: a spec or owner change marks that child; a membership
change marks the children whose ring owner moved, plus every child without an owner and
every child this node owns. Writes go through the :class:`~hub.etcd.batcher.TxnBatcher`, one
nested compare-and-set per key, so a round costs a few etcd round trips, not one per child.

Safety rules (the guarantees of DESIGN.md):

* A worker is started only after ``owners/{id}`` was created by *this* node incarnation, on
  its lease, in a txn whose compares proved the key absent; the create revision is the
  fencing token handed to the worker.
* A worker is stopped *before* its owner key is deleted (release = stop, then delete).
* An owner key of a previous incarnation of this node is foreign: it is left to expire.
* An owner key nobody can decode is left alone while a lease holds it; without a lease it
  can never expire, so the ring owner deletes it (compare on its mod revision).

Ownership: the Hub runs :meth:`Reconciler.run`; each round's actions are tasks of the
reconciler's TaskGroup.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from hub.core.hooks import (
    ChildFailed,
    ChildrenMigrated,
    ChildStarting,
    ChildStopped,
    HookName,
    Hooks,
)
from hub.core.placement import Placement, build_placement
from hub.core.registry import OwnerEntry, Registry, SpecEntry
from hub.core.supervisor import ExitKind, Supervisor, WorkerExit
from hub.errors import (
    CorruptRecord,
    HubClosed,
    InvalidSpec,
    RequestTooLarge,
    RevisionCompacted,
    StaleFence,
    StoreError,
)
from hub.etcd.batcher import TxnBatcher
from hub.etcd.codec import (
    REPLICA_FAILED,
    ReplicaRecord,
    decode_state,
    encode_owner,
    encode_replica,
    encode_state,
)
from hub.etcd.keys import KeySpace
from hub.etcd.session import Session
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
from hub.model import ChildSpec, OwnerRecord, OwnerState, RestartPolicy
from strategies.base import ChildSetAware, DistributionStrategy, RedundancyStrategy
from strategies.migration import ColdSwap, MigrationStrategy
from strategies.redundancy import Singularity

log = get_logger("hub.core.reconciler")

_UNKNOWN = "\0unknown"  # not a valid node id

#: Children released per step: one etcd txn's worth of owner deletes.
RELEASE_CHUNK = 126

#: Largest encoded worker state (checkpoint or handover) a node writes: it must fit one etcd
#: request (1.5 MiB by default) beside its key and owner compare, like a spec
#: (``max_spec_bytes``). Larger states are refused when written, never discovered when read.
MAX_STATE_BYTES = 1024 * 1024


class Action(enum.Enum):
    """What :func:`plan` asks the executor to do for one child."""

    NOOP = "noop"
    ACQUIRE = "acquire"  # create owners/{id} on our lease, then start the worker
    ADOPT = "adopt"  # the cache shows we own it but we did not know: take it over
    RELEASE = "release"  # stop the local worker, then delete owners/{id} (fenced)
    STOP_LOCAL = "stop_local"  # a local worker without ownership: stop it, forget it
    CLEAR_FOREIGN = "clear_foreign"  # an undecodable owner key with no lease: delete it
    #: write replicas/{id}/{me} and start a non-primary instance; a parked replica's key is
    #: marked failed instead, and nothing starts
    REPLICA_UP = "replica_up"
    REPLICA_DOWN = "replica_down"  # stop the local replica, delete its key


@dataclass(frozen=True, slots=True)
class Self:
    """What :func:`plan` needs to know about this node."""

    node_id: str
    lease: int  # 0 while no valid lease is held
    draining: bool  # leaving, or partitioned: owns nothing, acquires nothing


def _ownership(
    me: Self,
    owner: OwnerEntry | None,
    owned_token: int | None,
    cache_revision: int,
    released_token: int | None,
) -> bool | None:
    """Whether this node owns the child; None when it believed so but the cache, having
    seen its acquire, no longer shows it (ownership lost: stop the local instance)."""
    record = owner.record if owner is not None else None
    cache_says_mine = (
        me.lease != 0
        and owner is not None
        and record is not None
        and record.node_id == me.node_id
        and record.incarnation == me.lease
        and owner.create_revision != released_token
    )
    if owned_token is None:
        return cache_says_mine
    if cache_revision >= owned_token and not (
        cache_says_mine and owner is not None and owner.create_revision == owned_token
    ):
        return None
    return True


def plan(
    me: Self,
    spec: SpecEntry | None,
    owner: OwnerEntry | None,
    desired: str | None,
    owned_token: int | None,
    running: bool,
    cache_revision: int,
    adopt_running: bool = False,
    released_token: int | None = None,
) -> Action:
    """Decide the next action for one child from a snapshot. Pure.

    Args:
        me: this node.
        spec: ``specs/{id}`` as cached, or None.
        owner: ``owners/{id}`` as cached, or None.
        desired: the node the distribution strategy places the child on (None if no
            eligible node).
        owned_token: the fencing token if this node believes it owns the child.
        running: whether the local supervisor has a worker for it.
        cache_revision: the revision the cache reflects.
        adopt_running: availability mode: a worker kept running through a lease loss may
            be re-acquired (and restarted with a new token) if nobody owns the child.
        released_token: the token of an ownership this node already gave up for the child
            (the cache may still show it until the watch catches up): never adopted again.
    """
    mine = _ownership(me, owner, owned_token, cache_revision, released_token)
    if mine is None:
        return Action.STOP_LOCAL
    record = owner.record if owner is not None else None
    if spec is None:
        if mine:
            return Action.RELEASE
        return Action.STOP_LOCAL if running else Action.NOOP
    if mine:
        if owned_token is None:
            return Action.ADOPT
        if me.draining or (desired is not None and desired != me.node_id):
            # Placed elsewhere, or this node hands everything back (draining, no quorum).
            return Action.RELEASE
        return Action.NOOP
    if running:
        if (
            adopt_running
            and owner is None
            and desired == me.node_id
            and me.lease != 0
            and not me.draining
        ):
            return Action.ACQUIRE
        return Action.STOP_LOCAL
    if owner is None:
        if desired == me.node_id and me.lease != 0 and not me.draining:
            return Action.ACQUIRE
        return Action.NOOP
    if record is None and owner.lease == 0 and desired == me.node_id and me.lease != 0:
        return Action.CLEAR_FOREIGN
    return Action.NOOP


def plan_replicated(
    me: Self,
    spec: SpecEntry | None,
    owner: OwnerEntry | None,
    replica_set: tuple[str, ...],
    owned_token: int | None,
    running: bool,
    my_replica: bool,
    cache_revision: int,
    released_token: int | None = None,
    *,
    parked: bool = False,
    recorded_failed: bool = False,
) -> Action:
    """:func:`plan` for replication > 1. Pure.

    ``replica_set`` is where the child's instances belong, in order; its first node is the
    primary, which holds ``owners/{id}`` exactly like a singular child. ``running`` is
    whether a local instance exists (primary or replica); ``my_replica`` whether the cache
    shows this node's ``replicas/{id}/{node}`` key. ``parked``: the local replica ran out
    of restart intensity (under this lease and spec); it stays down, as a parked owner
    does, and its key says so (``recorded_failed`` once the cache shows that).
    """
    mine = _ownership(me, owner, owned_token, cache_revision, released_token)
    if mine is None:
        return Action.STOP_LOCAL
    if spec is None:
        if mine:
            return Action.RELEASE
        return Action.REPLICA_DOWN if running or my_replica else Action.NOOP
    primary = bool(replica_set) and replica_set[0] == me.node_id and not me.draining
    member = me.node_id in replica_set and not me.draining
    if mine:
        if owned_token is None:
            return Action.ADOPT
        return Action.NOOP if primary else Action.RELEASE
    if primary:
        # A local replica instance is promoted by the acquire (stopped, restarted active).
        return Action.ACQUIRE if owner is None and me.lease != 0 else Action.NOOP
    if member:
        if parked:  # stays down; REPLICA_UP only marks its key failed
            return Action.REPLICA_UP if my_replica and not recorded_failed else Action.NOOP
        if not running and me.lease != 0:
            return Action.REPLICA_UP
        return Action.NOOP
    return Action.REPLICA_DOWN if running or my_replica else Action.NOOP


class Reconciler:
    """Executes :func:`plan` for dirty children; also the supervisor's event sink."""

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
        self._replica_sets: dict[str, tuple[str, ...]] = {}
        #: child id -> (lease, spec create revision) of a local replica parked by its
        #: restart intensity: not started again while both still hold
        self._parked: dict[str, tuple[int, int]] = {}
        self.resync_interval = resync_interval
        #: children parked as failed because their saved state is too large to read
        self.unreadable_states = 0
        self.draining = False
        #: quorum lost: hand everything back, acquire nothing (like draining, but staying)
        self.partitioned = False
        #: availability mode: keep workers through a lease loss, re-acquire afterwards
        self.keep_running = False
        self._frozen = False
        #: child id -> fencing token of every child this incarnation owns
        self.owned: dict[str, int] = {}
        #: where children belong at the cached membership (rebuilt when it changes)
        self.current_placement: Placement = build_placement(
            registry, distribution, self.redundancy, {}
        )
        #: a ChildSetAware strategy places with the set of children in mind: rebuilt (at
        #: most every rebuild_interval seconds) when children come or go
        self._load_aware = isinstance(distribution, ChildSetAware)
        self._rebuild_interval = (
            distribution.rebuild_interval if isinstance(distribution, ChildSetAware) else 0.5
        )
        self._spec_set_changed = False
        self._built_for = 0  # how many specs the load-aware placement was built with
        self._last_rebuild = 0.0
        self._placement: dict[str, str | None] = {}
        self._members: dict[str, int] = {}
        self._dirty: set[str] = set()
        self._in_flight: set[str] = set()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._rounds = asyncio.Semaphore(max_in_flight_rounds)
        self._tg: asyncio.TaskGroup | None = None
        self._value_cache: dict[tuple[Any, ...], bytes] = {}
        #: children started with handed-over state: its key is deleted with the running write
        self._handover_consumed: set[str] = set()
        #: child id -> token this node released; the cache may lag behind the delete
        self._released: dict[str, int] = {}
        self._handover_lease: tuple[int, float] = (0, 0.0)  # (lease id, monotonic expiry)
        self.rounds = 0
        #: called after every reconcile round: (seconds, actions) — metrics
        self.round_observer: Callable[[float, int], None] | None = None
        #: called per child this node handed to another node (migration kind "hot" or
        #: "cold", seconds from the decision to release it to the commit of the release)
        self.handover_observer: Callable[[str, float], None] | None = None

    # -- inputs --------------------------------------------------------------------------

    def mark(self, child_ids: Iterable[str]) -> None:
        """Ask for these children to be reconciled."""
        self._dirty.update(child_ids)
        if self._dirty:
            self._idle.clear()
            self._wakeup.set()

    def mark_all(self) -> None:
        """Reconcile every known child (after a new lease, a relist, or periodically)."""
        self.mark(self.registry.specs.keys() | self.registry.owners.keys() | self.owned.keys())
        self.mark(self.supervisor.child_ids())

    def registry_changed(self, child_ids: set[str], nodes_changed: bool, full: bool) -> None:
        """Registry listener: mark what changed; rebuild placement on membership change."""
        if nodes_changed or full:
            self._rebuild_placement(full)
        if child_ids:
            placement, released, owners = self._placement, self._released, self.registry.owners
            sets = self._replica_sets
            if self._load_aware and len(self.registry.specs) != self._built_for:
                self._spec_set_changed = True
            for child_id in child_ids:
                placement.pop(child_id, None)  # its spec (pins) may have changed
                sets.pop(child_id, None)
                if child_id in released:
                    owner = owners.get(child_id)
                    if owner is None or owner.create_revision != released[child_id]:
                        del released[child_id]  # the cache has seen the release
            self.mark(child_ids)

    def set_draining(self, draining: bool) -> None:
        """A draining node acquires nothing and hands everything it owns back."""
        self.draining = draining
        self.mark(self.owned.keys())

    def placement(self, child_id: str) -> str | None:
        """Where the distribution strategy puts a child, at the cached membership.

        Memoized per membership: planning asks several times per child and event.
        """
        try:
            return self._placement[child_id]
        except KeyError:
            node = self._placement[child_id] = self.current_placement.owner(child_id)
            return node

    def replica_set(self, child_id: str) -> tuple[str, ...]:
        """Where a replicated child's instances belong, primary first (memoized)."""
        try:
            return self._replica_sets[child_id]
        except KeyError:
            pass
        nodes = self._replica_sets[child_id] = self.current_placement.instances(child_id)
        return nodes

    @property
    def replicated(self) -> bool:
        """More than one instance per child at the cached membership, or replicas left
        from a larger count (the replicated plan stops them and removes their keys)."""
        return self.current_placement.replicated or bool(self.registry.replicas)

    def _build_placement(self, members: dict[str, int]) -> Placement:
        if self._load_aware:
            self._last_rebuild = time.monotonic()
            self._spec_set_changed = False
            self._built_for = len(self.registry.specs)
        return build_placement(self.registry, self.distribution, self.redundancy, members)

    def _rebuild_placement(self, full: bool, force: bool = False) -> None:
        members = self.registry.active_members()
        if members == self._members and not full and not force:
            return
        old_placement = self._placement
        old = self.current_placement
        self._members = members
        self.current_placement = self._build_placement(members)
        self._placement = {}
        old_sets, self._replica_sets = self._replica_sets, {}
        if full:
            self.mark_all()
            return
        # Incremental: only children whose ring owner changed, children nobody owns and
        # children we own (they may have to move) need a look.
        owners = self.registry.owners
        placement = self.placement
        moved = []
        if self.replicated:
            # Any change of a replica set matters (replicas move too).
            moved = [
                child_id
                for child_id in self.registry.specs
                if old_sets.get(child_id) != self.replica_set(child_id) or child_id not in owners
            ]
            moved.extend(self.supervisor.child_ids())
        for child_id in self.registry.specs if not self.replicated else ():
            before = old_placement.get(child_id, _UNKNOWN)
            if before is _UNKNOWN:
                before = old.owner(child_id)
            if child_id not in owners or before != placement(child_id):
                moved.append(child_id)
        self.mark(moved)
        self.mark(self.owned.keys())

    def is_idle(self) -> bool:
        """True when nothing is dirty or in flight."""
        return not self._dirty and not self._in_flight

    async def wait_idle(self) -> None:
        """Wait until no reconcile work is pending."""
        while not self.is_idle():
            self._idle.clear()
            await self._idle.wait()

    # -- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        """Reconcile forever; returns only on cancellation."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            try:
                while True:
                    try:
                        async with asyncio.timeout(self.resync_interval):
                            await self._wakeup.wait()
                    except TimeoutError:
                        self.mark_all()  # periodic level-triggered safety net
                        continue
                    self._wakeup.clear()
                    await asyncio.sleep(0)  # coalesce the current burst
                    if self._spec_set_changed:
                        wait = self._rebuild_interval - (time.monotonic() - self._last_rebuild)
                        if wait > 0:
                            asyncio.get_running_loop().call_later(wait, self._wakeup.set)
                        else:
                            self._rebuild_placement(full=False, force=True)
                    ready = self._dirty - self._in_flight
                    if not ready:
                        self._check_idle()
                        continue
                    self._dirty -= ready
                    actions = self._plan(ready)
                    decided = time.monotonic()
                    if not actions:
                        self._check_idle()
                        continue
                    self._in_flight.update(actions.keys())
                    await self._rounds.acquire()
                    tg.create_task(self._execute(actions, decided))
            finally:
                self._tg = None

    def _check_idle(self) -> None:
        if self.is_idle():
            self._idle.set()

    def _me(self) -> Self:
        return Self(self.node_id, self.session.lease_id, self.draining or self.partitioned)

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
        self.owned.clear()
        self._frozen = True

    def lease_granted(self) -> None:
        self._frozen = False
        self._parked.clear()  # parked under the old lease: a new one starts afresh
        self.mark_all()

    def _plan(self, child_ids: Iterable[str]) -> dict[str, Action]:
        me = self._me()
        if self._frozen and not me.lease:
            return {}  # availability mode during an outage: keep everything as it is
        adopt = self.keep_running
        released = self._released
        reg = self.registry
        specs, owners, revision = reg.specs, reg.owners, reg.revision
        owned, placement, supervisor = self.owned, self.placement, self.supervisor
        out: dict[str, Action] = {}
        if self.replicated:
            replicas, node_id, parked = reg.replicas, self.node_id, self._parked
            for child_id in child_ids:
                spec = specs.get(child_id)
                mine_replica = replicas.get(child_id, {}).get(node_id)
                action = plan_replicated(
                    me,
                    spec,
                    owners.get(child_id),
                    self.replica_set(child_id),
                    owned.get(child_id),
                    supervisor.is_running(child_id),
                    mine_replica is not None,
                    revision,
                    released.get(child_id),
                    parked=bool(parked) and self._is_parked(child_id, me.lease),
                    recorded_failed=mine_replica is not None
                    and mine_replica.record.role == REPLICA_FAILED,
                )
                if action is not Action.NOOP:
                    out[child_id] = action
            return out
        for child_id in child_ids:
            spec = specs.get(child_id)
            action = plan(
                me,
                spec,
                owners.get(child_id),
                placement(child_id) if spec is not None else None,
                owned.get(child_id),
                supervisor.is_running(child_id),
                revision,
                adopt,
                released.get(child_id),
            )
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
        retry: list[str] = []
        try:
            try:
                async with asyncio.TaskGroup() as tg:
                    if Action.ACQUIRE in groups:
                        tg.create_task(self._acquire(groups[Action.ACQUIRE], retry))
                    if Action.RELEASE in groups:
                        tg.create_task(self._release(groups[Action.RELEASE], retry, decided))
                    if Action.STOP_LOCAL in groups:
                        tg.create_task(self._stop_local(groups[Action.STOP_LOCAL]))
                    if Action.CLEAR_FOREIGN in groups:
                        tg.create_task(self._clear_foreign(groups[Action.CLEAR_FOREIGN], retry))
                    if Action.ADOPT in groups:
                        tg.create_task(self._adopt(groups[Action.ADOPT], retry))
                    if Action.REPLICA_UP in groups:
                        tg.create_task(self._replica_up(groups[Action.REPLICA_UP], retry))
                    if Action.REPLICA_DOWN in groups:
                        tg.create_task(self._replica_down(groups[Action.REPLICA_DOWN], retry))
            except Exception as exc:  # a bug or an unexpected error must not kill the loop
                log.exception("reconcile round failed: %s", exc, extra=fields(node_id=self.node_id))
                retry.extend(actions.keys())
            if retry:
                # Outcome unknown or etcd unavailable: look again after a jittered pause.
                await asyncio.sleep(0.2 + 0.3 * random.random())
        finally:
            self._in_flight.difference_update(actions.keys())
            self._rounds.release()
            if self.round_observer is not None:
                with contextlib.suppress(Exception):
                    self.round_observer(time.monotonic() - began, len(actions))
            if retry:
                self.mark(retry)
            if self._dirty:
                self._wakeup.set()
            self._check_idle()

    # -- actions -------------------------------------------------------------------------

    def _owner_value(
        self, lease: int, state: OwnerState, restarts: int = 0, last: str = ""
    ) -> bytes:
        """Encoded owner record; identical records within 100 ms share one encoding."""
        now = time.time()
        key = (lease, state, restarts, last, int(now * 10))
        value = self._value_cache.get(key)
        if value is None:
            if len(self._value_cache) > 1024:
                self._value_cache.clear()
            value = encode_owner(OwnerRecord(self.node_id, lease, state, now, restarts, last))
            self._value_cache[key] = value
        return value

    async def _acquire(self, child_ids: list[str], retry: list[str]) -> None:
        lease = self.session.lease_id
        if not lease:
            retry.extend(child_ids)
            return
        value = self._owner_value(lease, OwnerState.STARTING)
        keys = self.keys
        replicated = self.replicated
        entries: list[SpecEntry] = []
        futures = []
        for child_id in child_ids:
            entry = self.registry.specs.get(child_id)
            if entry is None:
                continue
            owner_key = keys.owner(child_id)
            # The same txn reads the state the child may start from (handed over by its
            # previous owner, or checkpointed). If the reply is too large for the channel,
            # etcd has applied the txn but its outcome is lost to us: the watch then shows
            # these owner keys as ours and ADOPT reads their state in replies that fit.
            success = [op_put(owner_key, value, lease)]
            success += [op_get(key) for key in self._state_keys(child_id)]
            if replicated:  # promotion of a replica: its standby key goes in the same txn
                success.append(op_delete(keys.replica(child_id, self.node_id)))
            op = op_txn(
                [
                    cmp_create(owner_key, "=", 0),
                    cmp_create(keys.spec(child_id), "=", entry.create_revision),
                ],
                success,
            )
            entries.append(entry)
            futures.append(self.batcher.submit(op, owner_key, len(owner_key) * 5 + len(value)))
        results = await asyncio.gather(*futures, return_exceptions=True)
        acquired: list[tuple[str, int, tuple[bytes, ...]]] = []
        read: dict[bytes, KeyValue] = {}
        lost_replies = 0
        for entry, result in zip(entries, results, strict=True):
            child_id = entry.spec.id
            if isinstance(result, ResponseTooLarge):
                lost_replies += 1  # applied by etcd: the watch shows it ours, ADOPT follows
                retry.append(child_id)
                continue
            if isinstance(result, BaseException):
                log.warning(
                    "acquire of %r failed: %s",
                    child_id,
                    result,
                    extra=fields(node_id=self.node_id, child_id=child_id),
                )
                retry.append(child_id)
                continue
            if not result.succeeded:
                continue  # someone else holds it; the watch will show who
            if self.session.lease_id != lease:
                continue  # fenced meanwhile: the key dies with the old lease
            self.owned[child_id] = result.revision
            self._parked.pop(child_id, None)  # a promoted replica starts afresh as owner
            state_keys = self._state_keys(child_id)
            saved = [got[0] for got in result.responses[1 : 1 + len(state_keys)] if got]
            read.update((kv.key, kv) for kv in saved)
            acquired.append((child_id, result.revision, tuple(kv.key for kv in saved)))
        if lost_replies:
            log.info(
                "acquire reply with saved states too large for %d children: adopting them",
                lost_replies,
                extra=fields(node_id=self.node_id),
            )
        await self._start_owned(acquired, lease, retry, read=read)

    def _state_keys(self, child_id: str) -> tuple[bytes, ...]:
        """Where a child's saved state may be, in order of precedence on equal tokens."""
        if self.migration.handover:  # only hot swap ever writes handover keys
            return (self.keys.checkpoint(child_id), self.keys.handover(child_id))
        return (self.keys.checkpoint(child_id),)

    async def _start_owned(
        self,
        owned: list[tuple[str, int, tuple[bytes, ...]]],
        lease: int,
        retry: list[str],
        *,
        read: Mapping[bytes, KeyValue] | None = None,
    ) -> None:
        """Start children this node just came to own, each with its saved state.

        ``owned`` holds (child id, fencing token, state keys present). With ``read`` (the
        acquire txn read them) those are the states; otherwise the keys are read at the
        token's revision: nobody else can write them after it (their writes are fenced by
        the owner key, now ours), so this is what the acquire txn itself would have read.
        """
        if read is not None:
            states = {child_id: self._incoming_state(child_id, read) for child_id, _, _ in owned}
        else:
            states = await self._read_states(owned, retry)
        for child_id, token, _ in owned:
            if child_id not in states:
                continue
            if self.owned.get(child_id) != token or self.session.lease_id != lease:
                continue  # lost (fenced, released) while its state was read
            state, source = states[child_id]
            if self.supervisor.is_running(child_id):
                # A promoted replica, or a worker kept through an outage (availability
                # mode): restart it as the primary, under its new fencing token.
                kept = await self.supervisor.stop_many(
                    [child_id], collect_state=True, state_timeout=self.migration.state_timeout
                )
                local_state = kept.get(child_id)
                if state is None and local_state is not None:
                    state, source = local_state, "promotion"
            if self.hooks.has_handlers(HookName.CHILD_DATA_ALTER):
                await self._start_altered(child_id, token, lease, state, source)
            else:
                self._start(child_id, token, lease, state, source)

    async def _read_states(
        self, owned: list[tuple[str, int, tuple[bytes, ...]]], retry: list[str]
    ) -> dict[str, tuple[Any, str | None]]:
        """The state each child starts from, as :meth:`_incoming_state` picks it.

        A child whose state could not be read is left out: after an etcd error it is given
        back to the plan (unowned locally, it is adopted again, state and all); a state too
        large for the channel parks it as failed (:meth:`_state_unreadable`).
        """
        reads = [(key, token) for _, token, keys in owned for key in keys]
        found: dict[bytes, KeyValue] = {}
        too_large: dict[bytes, ResponseTooLarge] = {}
        store = self.session.store
        try:
            try:
                if reads:
                    found, too_large = await store.get_many(reads)
            except RevisionCompacted:
                # Only their owner, this node, may have written them since: the same values
                # (but for handed-over state whose short lease ran out meanwhile).
                found, too_large = await store.get_many([(key, 0) for key, _ in reads])
        except StoreError as exc:
            log.warning(
                "could not read the state of %d children (%s); they will be retried",
                len(owned),
                exc,
                extra=fields(node_id=self.node_id),
            )
            for child_id, token, _ in owned:
                if self.owned.get(child_id) == token:
                    del self.owned[child_id]
                retry.append(child_id)
            return {}
        out: dict[str, tuple[Any, str | None]] = {}
        for child_id, token, keys in owned:
            unreadable = [key for key in keys if key in too_large]
            if unreadable:
                self._state_unreadable(child_id, token, too_large[unreadable[0]])
            else:
                out[child_id] = self._incoming_state(child_id, found)
        return out

    def _state_unreadable(self, child_id: str, token: int, exc: ResponseTooLarge) -> None:
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
            extra=fields(node_id=self.node_id, child_id=child_id, token=token),
        )
        self.hooks.dispatch(ChildFailed(child_id, token, reason))
        self._write_owner(child_id, token, OwnerState.FAILED, 0, reason)

    def _incoming_state(
        self, child_id: str, found: Mapping[bytes, KeyValue]
    ) -> tuple[Any, str | None]:
        """The fresher of handed-over and checkpointed state (by the writer's token)."""
        best: tuple[int, int, Any, str] | None = None
        sources = zip(("checkpoint", "handover"), self._state_keys(child_id), strict=False)
        for rank, (source, key) in enumerate(sources):
            kv = found.get(key)
            if kv is None:
                continue
            try:
                record = decode_state(kv.key, kv.value)
            except CorruptRecord as exc:
                log.warning(
                    "ignoring %s state of %r: %s",
                    source,
                    child_id,
                    exc,
                    extra=fields(node_id=self.node_id, child_id=child_id),
                )
                continue
            candidate = (record.token, rank, record.value, source)
            if best is None or candidate[:2] > best[:2]:
                best = candidate
        if best is None:
            return None, None
        if best[3] == "handover":
            self._handover_consumed.add(child_id)
        return best[2], best[3]

    async def _start_altered(
        self, child_id: str, token: int, lease: int, state: Any, source: str | None
    ) -> None:
        """Run the ``child_data_alter`` chain, then start what it returns."""
        entry = self.registry.specs.get(child_id)
        if entry is None:
            return
        payload = ChildStarting(
            entry.spec,
            self.node_id,
            token,
            migrated=source == "handover",
            handover=source == "handover",
        )
        altered = await self.hooks.dispatch_alter(payload)
        if self.owned.get(child_id) != token or self.session.lease_id != lease:
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
        entry = self.registry.specs.get(child_id)
        if entry is None:
            self.mark([child_id])
            return
        try:
            self.supervisor.start(
                spec if spec is not None else entry.spec,
                fencing_token=token,
                incarnation=lease,
                state=state,
                state_source=source,
            )
        except (HubClosed, ValueError) as exc:
            log.warning(
                "could not start %r: %s",
                child_id,
                exc,
                extra=fields(node_id=self.node_id, child_id=child_id, token=token),
            )

    async def _adopt(self, child_ids: list[str], retry: list[str]) -> None:
        """Take over children the cache shows this incarnation owns (an acquire whose reply
        was lost): start them with the state their acquire would have read."""
        lease = self.session.lease_id
        to_start: list[tuple[str, int, tuple[bytes, ...]]] = []
        for child_id in child_ids:
            owner = self.registry.owners.get(child_id)
            if owner is None or owner.record is None or not lease:
                continue
            if self._released.get(child_id) == owner.create_revision:
                continue
            self.owned[child_id] = owner.create_revision
            if owner.record.state is not OwnerState.FAILED and not self.supervisor.is_running(
                child_id
            ):
                to_start.append((child_id, owner.create_revision, self._state_keys(child_id)))
        await self._start_owned(to_start, lease, retry)

    async def _release(self, child_ids: list[str], retry: list[str], decided: float) -> None:
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
        specs = self.registry.specs
        committed: dict[str, float] = {}
        timed = self.handover_observer is not None
        for first in range(0, len(child_ids), RELEASE_CHUNK):
            chunk = child_ids[first : first + RELEASE_CHUNK]
            moving = migration.handover and any(c in specs for c in chunk)
            states = await self.supervisor.stop_many(
                chunk, collect_state=moving, state_timeout=migration.state_timeout
            )
            handover_lease = await self._lease_for_handover() if states else 0
            now = time.time()
            for child_id in chunk:
                token = self.owned.get(child_id) or self._cached_token(child_id)
                if token is None:
                    continue
                owner_key = self.keys.owner(child_id)
                success = [op_delete(owner_key)]
                if child_id in states and child_id in specs and handover_lease:
                    try:
                        value = self._encode_state(states[child_id], token, now)
                    except InvalidSpec as exc:
                        log.warning(
                            "%r moves without state: %s",
                            child_id,
                            exc,
                            extra=fields(node_id=self.node_id, child_id=child_id, token=token),
                        )
                    else:
                        success.append(op_put(self.keys.handover(child_id), value, handover_lease))
                op = op_txn([cmp_create(owner_key, "=", token)], success)
                released.append(child_id)
                future = self.batcher.submit(op, owner_key)
                if timed and child_id in specs:
                    future.add_done_callback(_stamp(committed, child_id))
                futures.append(future)
        results = await asyncio.gather(*futures, return_exceptions=True)
        migrated: dict[str, str] = {}
        kind = "hot" if migration.handover else "cold"
        for child_id, result in zip(released, results, strict=True):
            if isinstance(result, BaseException):
                log.warning(
                    "release of %r failed: %s%s",
                    child_id,
                    result,
                    # etcd applied nothing; the retry carries no state (the worker stopped)
                    "; it moves without its handed-over state"
                    if isinstance(result, RequestTooLarge)
                    else "",
                    extra=fields(node_id=self.node_id, child_id=child_id),
                )
                retry.append(child_id)
                continue
            token = self.owned.pop(child_id, None) or 0
            if token:
                self._released[child_id] = token
            moving = child_id in specs
            if moving and result.succeeded and child_id in committed:
                self._observe_handover(kind, committed[child_id] - decided)
            self.hooks.dispatch(ChildStopped(child_id, token, "migrated" if moving else "stopped"))
            if moving:
                migrated[child_id] = self.placement(child_id) or ""
        if migrated:
            self.hooks.dispatch(ChildrenMigrated(migrated))

    def _observe_handover(self, kind: str, seconds: float) -> None:
        observer = self.handover_observer
        if observer is not None:
            with contextlib.suppress(Exception):
                observer(kind, seconds)

    def _is_parked(self, child_id: str, lease: int) -> bool:
        """Whether the local replica was parked under this lease and the current spec."""
        entry = self.registry.specs.get(child_id)
        return entry is not None and self._parked.get(child_id) == (lease, entry.create_revision)

    async def _replica_up(self, child_ids: list[str], retry: list[str]) -> None:
        """Publish ``replicas/{id}/{me}`` and start a non-primary instance (a parked
        replica: record it as failed, start nothing)."""
        lease = self.session.lease_id
        if not lease:
            retry.extend(child_ids)
            return
        parked = [c for c in child_ids if self._is_parked(c, lease)] if self._parked else []
        if parked:
            await self._replica_park(parked, lease, retry)
            skip = set(parked)
            child_ids = [c for c in child_ids if c not in skip]
        role = "active" if self.redundancy.mode == "active_active" else "passive"
        value = encode_replica(ReplicaRecord(self.node_id, lease, role, time.time()))
        futures, started = [], []
        for child_id in child_ids:
            key = self.keys.replica(child_id, self.node_id)
            futures.append(self.batcher.submit(op_txn([], [op_put(key, value, lease)]), key))
            started.append(child_id)
        results = await asyncio.gather(*futures, return_exceptions=True)
        for child_id, result in zip(started, results, strict=True):
            if isinstance(result, BaseException):
                retry.append(child_id)
                continue
            entry = self.registry.specs.get(child_id)
            if entry is None or self.session.lease_id != lease:
                continue
            if self.supervisor.is_running(child_id):
                continue
            try:
                self.supervisor.start(entry.spec, fencing_token=0, incarnation=lease, role=role)
            except (HubClosed, ValueError) as exc:
                log.warning(
                    "could not start replica of %r: %s",
                    child_id,
                    exc,
                    extra=fields(node_id=self.node_id, child_id=child_id),
                )

    async def _replica_down(self, child_ids: list[str], retry: list[str]) -> None:
        """Stop local replicas and withdraw their keys (a parked one's too)."""
        local = [c for c in child_ids if c not in self.owned]
        for child_id in local:
            self._parked.pop(child_id, None)
        await self.supervisor.stop_many(local)
        futures = []
        for child_id in local:
            key = self.keys.replica(child_id, self.node_id)
            futures.append(self.batcher.submit(op_txn([], [op_delete(key)]), key))
        results = await asyncio.gather(*futures, return_exceptions=True)
        for child_id, result in zip(local, results, strict=True):
            if isinstance(result, BaseException):
                retry.append(child_id)

    async def _replica_park(self, child_ids: list[str], lease: int, retry: list[str]) -> None:
        """Turn the keys of parked local replicas ``failed``, so every node (``ls``,
        ``inspect``, ``get_pids``) sees a dead standby rather than a running one.

        Only the key the cache shows, on this lease, is rewritten (compared on its create
        revision): one deleted meanwhile (promotion, withdrawal) must not come back.
        """
        value = encode_replica(ReplicaRecord(self.node_id, lease, REPLICA_FAILED, time.time()))
        futures, parked = [], []
        for child_id in child_ids:
            entry = self.registry.replicas.get(child_id, {}).get(self.node_id)
            if entry is None or entry.lease != lease:
                continue
            key = self.keys.replica(child_id, self.node_id)
            op = op_txn([cmp_create(key, "=", entry.create_revision)], [op_put(key, value, lease)])
            futures.append(self.batcher.submit(op, key))
            parked.append(child_id)
        results = await asyncio.gather(*futures, return_exceptions=True)
        for child_id, result in zip(parked, results, strict=True):
            if isinstance(result, BaseException):
                log.warning(
                    "could not record the parked replica of %r: %s",
                    child_id,
                    result,
                    extra=fields(node_id=self.node_id, child_id=child_id),
                )
                retry.append(child_id)

    async def _lease_for_handover(self) -> int:
        """A short lease for handed-over state, shared by releases while it is fresh."""
        ttl = self.migration.handover_ttl
        lease_id, expires = self._handover_lease
        now = time.monotonic()
        if lease_id and expires - now > ttl / 2:
            return lease_id
        try:
            lease_id, granted = await self.session.store.lease_grant(ttl)
        except StoreError as exc:
            log.warning(
                "no lease for handed-over state (%s); moving without state",
                exc,
                extra=fields(node_id=self.node_id),
            )
            return 0
        self._handover_lease = (lease_id, now + granted)
        return lease_id

    async def checkpoint(self, child_id: str, token: int, state: Any) -> None:
        """Persist a worker's state under ``checkpoints/{id}``, fenced by its token.

        Raises:
            StaleFence: the child has another owner now (or none).
            InvalidSpec: the state is neither bytes nor JSON-serializable, or larger than
                MAX_STATE_BYTES once encoded.
        """
        owner_key = self.keys.owner(child_id)
        value = self._encode_state(state, token, time.time())
        op = op_txn(
            [cmp_create(owner_key, "=", token)], [op_put(self.keys.checkpoint(child_id), value)]
        )
        result = await self.batcher.submit(op, self.keys.checkpoint(child_id))
        if not result.succeeded:
            raise StaleFence(child_id, token)

    def _encode_state(self, state: Any, token: int, saved_at: float) -> bytes:
        """Encode worker state, refusing it here if etcd could not store it in one request.

        Raises:
            InvalidSpec: not bytes or JSON, or larger than MAX_STATE_BYTES encoded.
        """
        value = encode_state(state, token, saved_at)
        if len(value) > MAX_STATE_BYTES:
            raise InvalidSpec(
                f"worker state of {len(value)} bytes (encoded) is larger than the "
                f"{MAX_STATE_BYTES} bytes a checkpoint or handover may take"
            )
        return value

    def _cached_token(self, child_id: str) -> int | None:
        """Our token as the cache shows it (an acquire whose reply was lost, for example)."""
        owner = self.registry.owners.get(child_id)
        lease = self.session.lease_id
        if owner is None or owner.record is None or not lease:
            return None
        record = owner.record
        if record.node_id == self.node_id and record.incarnation == lease:
            return owner.create_revision
        return None

    async def _stop_local(self, child_ids: list[str]) -> None:
        await self.supervisor.stop_many(child_ids)
        for child_id in child_ids:
            self.owned.pop(child_id, None)

    async def _clear_foreign(self, child_ids: list[str], retry: list[str]) -> None:
        for child_id in child_ids:
            owner = self.registry.owners.get(child_id)
            if owner is None:
                continue
            owner_key = self.keys.owner(child_id)
            log.warning(
                "deleting undecodable lease-less owner key of %r",
                child_id,
                extra=fields(node_id=self.node_id, child_id=child_id),
            )
            op = op_txn([cmp_mod(owner_key, "=", owner.mod_revision)], [op_delete(owner_key)])
            try:
                await self.batcher.submit(op, owner_key)
            except Exception as exc:
                log.warning(
                    "could not clear owner key of %r: %s",
                    child_id,
                    exc,
                    extra=fields(node_id=self.node_id, child_id=child_id),
                )
                retry.append(child_id)

    async def fence(self) -> None:
        """Self-fencing: stop every local worker now and forget all ownership."""
        fenced, self.owned = self.owned, {}
        await self.supervisor.stop_all()
        if self.hooks.has_handlers(HookName.CHILD_STOPPED):
            for child_id, token in fenced.items():
                self.hooks.dispatch(ChildStopped(child_id, token, "fenced"))

    # -- supervisor events (synchronous; they only queue writes) --------------------------

    def worker_started(self, child_id: str, fencing_token: int, restarts: int) -> None:
        self._write_owner(child_id, fencing_token, OwnerState.RUNNING, restarts)

    def worker_restarting(
        self, child_id: str, fencing_token: int, restarts: int, reason: str
    ) -> None:
        self._write_owner(child_id, fencing_token, OwnerState.RESTARTING, restarts, reason)

    def worker_exited(self, child_id: str, fencing_token: int, exit: WorkerExit) -> None:
        entry = self.registry.specs.get(child_id)
        removes = exit.kind is ExitKind.NORMAL or (
            entry is not None
            and entry.spec.restart is RestartPolicy.TEMPORARY
            and exit.kind is ExitKind.CRASHED
        )
        if fencing_token == 0 and not removes:
            self._replica_failed(child_id, entry, exit)
            return
        if self.owned.get(child_id) != fencing_token:
            return
        if removes:
            # Self-termination (transient normal exit, temporary any exit): the child
            # leaves the cluster. Delete spec and owner together, fenced by our token.
            owner_key = self.keys.owner(child_id)
            op = op_txn(
                [cmp_create(owner_key, "=", fencing_token)],
                [
                    op_delete(self.keys.spec(child_id)),
                    op_delete(owner_key),
                    op_delete(self.keys.checkpoint(child_id)),
                    op_delete(self.keys.handover(child_id)),
                ],
            )
            fut = self.batcher.submit(op, owner_key)
            fut.add_done_callback(lambda f: self._after_write(f, child_id))
            reason = "normal" if exit.kind is ExitKind.NORMAL else f"crashed: {exit.reason}"
            self.hooks.dispatch(ChildStopped(child_id, fencing_token, reason))
            return
        self.hooks.dispatch(ChildFailed(child_id, fencing_token, exit.reason))
        # The supervisor's count: the cached owner record may not show the last restart yet.
        self._write_owner(child_id, fencing_token, OwnerState.FAILED, exit.restarts, exit.reason)

    def _replica_failed(self, child_id: str, entry: SpecEntry | None, exit: WorkerExit) -> None:
        """A local replica (no fencing token) was parked: report it like a parked owner
        (``ChildFailed``, token 0) and keep it down; the plan records it in its key."""
        lease = self.session.lease_id
        if child_id in self.owned or not lease or entry is None:
            return  # promoted meanwhile (it starts afresh as owner), fenced, or stopped
        self._parked[child_id] = (lease, entry.create_revision)
        self.hooks.dispatch(ChildFailed(child_id, 0, exit.reason))
        self.mark([child_id])

    def _write_owner(
        self, child_id: str, token: int, state: OwnerState, restarts: int, last: str = ""
    ) -> None:
        if self.owned.get(child_id) != token:
            return
        lease = self.session.lease_id
        if not lease:
            return
        owner_key = self.keys.owner(child_id)
        value = self._owner_value(lease, state, restarts, last[:500])
        success = [op_put(owner_key, value, lease)]
        if state is OwnerState.RUNNING and child_id in self._handover_consumed:
            # The new instance runs with the handed-over state: drop it from etcd.
            self._handover_consumed.discard(child_id)
            success.append(op_delete(self.keys.handover(child_id)))
        op = op_txn([cmp_create(owner_key, "=", token)], success)
        try:
            fut = self.batcher.submit(op, owner_key, len(owner_key) * 2 + len(value))
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
                    node_id=self.node_id, child_id=child_id, token=self.owned.get(child_id)
                ),
            )
            if record is not None:
                self._rewrite_later(child_id, record)

    def _rewrite_later(self, child_id: str, record: _OwnerWrite) -> None:
        """Write ``record`` again after a failed write, if it still says what is true: the
        same owner token, and ``running`` only while the worker runs, ``failed`` only while
        it is parked (a newer write has superseded a transient state)."""

        def again() -> None:
            if self.owned.get(child_id) != record.token:
                return
            running = self.supervisor.is_running(child_id)
            if record.state is OwnerState.RUNNING and running:
                self._write_owner(child_id, record.token, record.state, record.restarts)
            elif record.state is OwnerState.FAILED and not running:
                self._write_owner(child_id, *record)

        asyncio.get_running_loop().call_later(0.5 + random.random() * 0.5, again)


class _OwnerWrite(NamedTuple):
    """An owner record this node wrote, kept to write it again if the write failed."""

    token: int
    state: OwnerState
    restarts: int
    last: str


def _stamp(stamps: dict[str, float], child_id: str) -> Callable[[asyncio.Future[Any]], None]:
    """A done callback noting when ``child_id``'s write completed (monotonic)."""

    def stamp(_: asyncio.Future[Any]) -> None:
        stamps[child_id] = time.monotonic()

    return stamp
