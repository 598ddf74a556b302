"""The local registry: every node's watched copy of members, specs and owners.

The :class:`Registry` is the informer's sink. It answers every lookup (``get_pid``,
``process_list``, ``tag_query``...) from memory, without network, and tells a listener
which children and whether membership changed after each batch, so the reconciler works
incrementally.

Contract: updated only by the informer task, synchronously per batch; readers on the same
event loop always see whole batches. ``revision`` is the etcd revision the contents reflect.
Values that cannot be decoded are logged, counted in ``corrupt`` and treated as absent,
except an undecodable *owner* key, which is kept as "held by someone unknown" so that
nobody starts a second instance next to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from hub.core.hooks import (
    ChildrenRegistered,
    ChildrenUnregistered,
    HookName,
    Hooks,
    NodeJoined,
    NodeLeft,
)
from hub.errors import CorruptRecord
from hub.etcd.codec import (
    REPLICA_FAILED,
    ReplicaRecord,
    decode_leave,
    decode_node,
    decode_owner,
    decode_replica,
    decode_spec,
)
from hub.etcd.keys import KeySpace, Kind
from hub.etcd.store import Event, KeyValue
from hub.logs import get_logger
from hub.model import ChildHandle, ChildSpec, NodeInfo, NodeState, OwnerRecord, OwnerState

log = get_logger("hub.core.registry")


@dataclass(frozen=True, slots=True)
class NodeEntry:
    """A member as last seen: its record and the lease that keeps it alive."""

    info: NodeInfo
    lease: int
    mod_revision: int


@dataclass(frozen=True, slots=True)
class SpecEntry:
    """A desired child: its spec and the revisions of ``specs/{id}``."""

    spec: ChildSpec
    create_revision: int
    mod_revision: int


@dataclass(frozen=True, slots=True)
class OwnerEntry:
    """``owners/{id}``: ``record`` is None when the value could not be decoded."""

    record: OwnerRecord | None
    create_revision: int
    mod_revision: int
    lease: int
    handle: ChildHandle | None


@dataclass(frozen=True, slots=True)
class ReplicaEntry:
    """``replicas/{id}/{node}``: a non-primary replica (running, or parked as failed)."""

    record: ReplicaRecord
    create_revision: int
    lease: int
    handle: ChildHandle


@dataclass(frozen=True, slots=True)
class OwnerChange:
    """One put or delete of ``owners/{id}``, in watch order: the handle before and after
    (None: no owner key, or an undecodable one). Lets observers see every transition
    (owner created, state changed, owner gone) without keeping a copy of the registry."""

    child_id: str
    before: ChildHandle | None
    after: ChildHandle | None
    #: a replica instance's record (``replicas/{id}/{node}``) rather than the owner's; only
    #: reported when it turns ``failed`` (parked by its restart intensity)
    replica: bool = False


class Listener(Protocol):
    """Told what changed after each applied batch (or listing)."""

    def registry_changed(self, child_ids: set[str], nodes_changed: bool, full: bool) -> None: ...


class Registry:
    """In-memory view of one hub's keys; see the module docstring for the contract."""

    def __init__(self, keys: KeySpace) -> None:
        self.keys = keys
        self.nodes: dict[str, NodeEntry] = {}
        self.specs: dict[str, SpecEntry] = {}
        #: child id -> the nodes its spec is pinned to, for pinned specs only: the pins a
        #: placer reads for every child (a plain dict, so the lookup is one C call).
        #: Updated in place with ``specs``, never rebound; read-only for everyone else.
        self.pinned: dict[str, tuple[str, ...]] = {}
        self.owners: dict[str, OwnerEntry] = {}
        self.handles: dict[str, ChildHandle] = {}
        #: child id -> node id -> replica (replication > 1; the primary is in ``owners``)
        self.replicas: dict[str, dict[str, ReplicaEntry]] = {}
        self.by_tag: dict[str, set[str]] = {}
        #: node id -> the incarnation an operator asked to drain and leave
        self.leave_requests: dict[str, int] = {}
        self.revision = 0
        self.corrupt = 0
        self.listener: Listener | None = None
        #: Extra observers (metrics, dashboards, benchmarks): called after every batch with
        #: every touched child id, owner state changes included. Must be quick.
        self.observers: list[Callable[[set[str], bool, bool], None]] = []
        #: Called after every watch batch (not after a relist: that is no news) with the
        #: batch's owner changes in order, before ``observers``. Must be quick.
        self.owner_observers: list[Callable[[Sequence[OwnerChange]], None]] = []
        self._owner_changes: list[OwnerChange] = []
        #: node-local hooks (set by the Hub); registry hooks fire on every node
        self.hooks: Hooks | None = None
        self._registered: list[ChildHandle] = []
        self._unregistered: list[tuple[str, str]] = []
        self._joined: list[NodeEntry] = []
        self._left: list[NodeEntry] = []
        self._waiters: dict[str, list[tuple[Callable[[], bool], asyncio.Future[None]]]] = {}
        self._revision_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._state_only: set[str] = set()  # owner state changes of the batch being applied

    # -- informer sink -------------------------------------------------------------------

    def reset(self, kvs: Sequence[KeyValue], revision: int) -> None:
        """Replace everything with a full listing."""
        old_children = set(self.specs) | set(self.owners)
        self.nodes.clear()
        self.specs.clear()
        self.pinned.clear()
        self.owners.clear()
        self.handles.clear()
        self.replicas.clear()
        self.by_tag.clear()
        self.leave_requests.clear()
        touched: set[str] = set()
        for kv in kvs:
            self._put(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.lease, touched)
        self.revision = revision
        self._notify(touched | old_children, nodes_changed=True, full=True)

    def apply(self, events: Sequence[Event], revision: int) -> None:
        """Apply one watch batch."""
        touched: set[str] = set()
        nodes_before = len(self.nodes)
        nodes_changed = False
        for ev in events:
            if ev.is_delete:
                kind = self._delete(ev.key, touched)
            else:
                kind = self._put(
                    ev.key, ev.value, ev.create_revision, ev.mod_revision, ev.lease, touched
                )
            if kind is Kind.NODE or kind is Kind.LEAVE:
                nodes_changed = True
        self.revision = max(self.revision, revision)
        self._notify(touched, nodes_changed or nodes_before != len(self.nodes), full=False)

    def _put(
        self,
        key: bytes,
        value: bytes,
        create_revision: int,
        mod_revision: int,
        lease: int,
        touched: set[str],
    ) -> Kind | None:
        split = self.keys.split(key)
        if split is None:
            return None
        kind, ident = split
        try:
            if kind is Kind.OWNER:
                try:
                    record: OwnerRecord | None = decode_owner(key, value)
                except CorruptRecord as exc:
                    self._corrupt(exc)
                    record = None
                handle = None
                if record is not None:
                    handle = ChildHandle(
                        child_id=ident,
                        node_id=record.node_id,
                        incarnation=record.incarnation,
                        fencing_token=create_revision,
                        state=record.state,
                        started_at=record.started_at,
                        restarts=record.restarts,
                        last_exit=record.last_exit,
                    )
                    self.handles[ident] = handle
                else:
                    self.handles.pop(ident, None)
                previous = self.owners.get(ident)
                self.owners[ident] = OwnerEntry(
                    record, create_revision, mod_revision, lease, handle
                )
                if self.owner_observers:
                    before = previous.handle if previous is not None else None
                    self._owner_changes.append(OwnerChange(ident, before, handle))
                if (
                    previous is not None
                    and previous.create_revision == create_revision
                    and previous.record is not None
                    and record is not None
                    and previous.record.node_id == record.node_id
                ):
                    # Same owner, new state (running, restarting...): waiters care, the
                    # reconciler does not, so don't make every node re-plan the child.
                    self._state_only.add(ident)
                else:
                    touched.add(ident)
                    if handle is not None and self._collecting(HookName.CHILDREN_REGISTERED):
                        self._registered.append(handle)
            elif kind is Kind.SPEC:
                spec = decode_spec(key, value)
                if spec.id != ident:
                    raise CorruptRecord(key, f"spec names child {spec.id!r}")
                self._untag(ident)
                self.specs[ident] = SpecEntry(spec, create_revision, mod_revision)
                if spec.nodes:
                    self.pinned[ident] = spec.nodes
                else:
                    self.pinned.pop(ident, None)
                tag = spec.tag
                if tag is not None:
                    self.by_tag.setdefault(tag, set()).add(ident)
                touched.add(ident)
            elif kind is Kind.LEAVE:
                self.leave_requests[ident] = decode_leave(key, value)
            elif kind is Kind.REPLICA:
                parsed = self.keys.parse(key)
                if parsed is None or parsed.node_id is None:
                    return None
                replica = decode_replica(key, value)
                parked = replica.role == REPLICA_FAILED
                replica_handle = ChildHandle(
                    child_id=ident,
                    node_id=parsed.node_id,
                    incarnation=replica.incarnation,
                    fencing_token=0,
                    state=OwnerState.FAILED if parked else OwnerState.RUNNING,
                    started_at=replica.started_at,
                    role=replica.role,
                )
                hosts = self.replicas.setdefault(ident, {})
                previous_replica = hosts.get(parsed.node_id)
                hosts[parsed.node_id] = ReplicaEntry(
                    replica, create_revision, lease, replica_handle
                )
                if parked and self.owner_observers:
                    before_handle = previous_replica.handle if previous_replica else None
                    self._owner_changes.append(
                        OwnerChange(ident, before_handle, replica_handle, replica=True)
                    )
                touched.add(ident)
            elif kind is Kind.NODE:
                info = decode_node(key, value)
                if info.node_id != ident:
                    raise CorruptRecord(key, f"node record names {info.node_id!r}")
                previous_node = self.nodes.get(ident)
                self.nodes[ident] = entry = NodeEntry(info, lease, mod_revision)
                if (
                    previous_node is None or previous_node.info.incarnation != info.incarnation
                ) and self._collecting(HookName.NODE_JOINED):
                    self._joined.append(entry)
            return kind
        except CorruptRecord as exc:
            self._corrupt(exc)
            # A value we cannot read is no desired state and no member.
            return self._delete(key, touched)

    def _delete(self, key: bytes, touched: set[str]) -> Kind | None:
        split = self.keys.split(key)
        if split is None:
            return None
        kind, ident = split
        if kind is Kind.OWNER:
            if self.owners.pop(ident, None) is not None:
                gone = self.handles.pop(ident, None)
                touched.add(ident)
                if self.owner_observers and gone is not None:
                    self._owner_changes.append(OwnerChange(ident, gone, None))
                # node_left lists a crashed node's children from these too: its owner keys
                # go in the same revision as its node key, so no handle is left to read.
                if gone is not None and (
                    self._collecting(HookName.CHILDREN_UNREGISTERED)
                    or self._collecting(HookName.NODE_LEFT)
                ):
                    self._unregistered.append((ident, gone.node_id))
        elif kind is Kind.SPEC:
            if self.specs.pop(ident, None) is not None:
                self.pinned.pop(ident, None)
                self._untag(ident)
                touched.add(ident)
        elif kind is Kind.NODE:
            left = self.nodes.pop(ident, None)
            if left is not None and self._collecting(HookName.NODE_LEFT):
                self._left.append(left)
        elif kind is Kind.LEAVE:
            self.leave_requests.pop(ident, None)
        elif kind is Kind.REPLICA:
            parsed = self.keys.parse(key)
            nodes = self.replicas.get(ident)
            if parsed is not None and nodes is not None and parsed.node_id in nodes:
                del nodes[parsed.node_id]
                if not nodes:
                    del self.replicas[ident]
                touched.add(ident)
        return kind

    def _untag(self, child_id: str) -> None:
        entry = self.specs.get(child_id)
        if entry is not None and entry.spec.tag is not None:
            ids = self.by_tag.get(entry.spec.tag)
            if ids is not None:
                ids.discard(child_id)
                if not ids:
                    del self.by_tag[entry.spec.tag]

    def _corrupt(self, exc: CorruptRecord) -> None:
        self.corrupt += 1
        log.warning("skipping undecodable record: %s", exc)

    def _notify(self, touched: set[str], nodes_changed: bool, full: bool) -> None:
        if self._revision_waiters:
            waiting = []
            for revision, fut in self._revision_waiters:
                if fut.done():
                    continue
                if self.revision >= revision:
                    fut.set_result(None)
                else:
                    waiting.append((revision, fut))
            self._revision_waiters = waiting
        state_only, self._state_only = self._state_only, set()
        if self._waiters:
            for child_id in (touched | state_only) if not full else list(self._waiters):
                self._check_waiters(child_id)
        if self.listener is not None and (touched or nodes_changed or full):
            self.listener.registry_changed(touched, nodes_changed, full)
        if self.hooks is not None:
            if full:  # a relist is not news: no registry hooks for it
                self._registered, self._unregistered, self._joined, self._left = [], [], [], []
            else:
                self._dispatch_hooks()
        changes, self._owner_changes = self._owner_changes, []
        if changes and not full:
            for owner_observer in self.owner_observers:
                try:
                    owner_observer(changes)
                except Exception:
                    log.exception("registry owner observer failed")
        if self.observers:
            everything = touched | state_only
            for observer in self.observers:
                try:
                    observer(everything, nodes_changed, full)
                except Exception:
                    log.exception("registry observer failed")

    def _collecting(self, name: HookName) -> bool:
        return self.hooks is not None and self.hooks.has_handlers(name)

    def _dispatch_hooks(self) -> None:
        hooks, revision = self.hooks, self.revision
        assert hooks is not None
        if self._joined:
            for entry in self._joined:
                hooks.dispatch(NodeJoined(entry.info.node_id, entry.info.incarnation, revision))
            self._joined = []
        if self._registered:
            hooks.dispatch(ChildrenRegistered(tuple(self._registered), revision))
            self._registered = []
        if self._unregistered and hooks.has_handlers(HookName.CHILDREN_UNREGISTERED):
            hooks.dispatch(ChildrenUnregistered(tuple(self._unregistered), revision))
        if self._left:
            for entry in self._left:
                node_id = entry.info.node_id
                owned = tuple(
                    sorted(
                        {c for c, n in self._unregistered if n == node_id}
                        | {c for c, h in self.handles.items() if h.node_id == node_id}
                    )
                )
                hooks.dispatch(
                    NodeLeft(
                        node_id,
                        entry.info.incarnation,
                        entry.info.state is NodeState.DRAINING,
                        owned,
                        revision,
                    )
                )
            self._left = []
        self._unregistered = []

    # -- waiting for a child's state -----------------------------------------------------

    def _check_waiters(self, child_id: str) -> None:
        waiters = self._waiters.get(child_id)
        if not waiters:
            return
        keep = []
        for predicate, fut in waiters:
            if fut.done():
                continue
            if predicate():
                fut.set_result(None)
            else:
                keep.append((predicate, fut))
        if keep:
            self._waiters[child_id] = keep
        else:
            del self._waiters[child_id]

    def watch_child(self, child_id: str, predicate: Callable[[], bool]) -> asyncio.Future[None]:
        """A future resolved once ``predicate()`` holds after some batch touching the child.

        The predicate is checked immediately too. Cancel the future to stop waiting.
        """
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if predicate():
            fut.set_result(None)
        else:
            self._waiters.setdefault(child_id, []).append((predicate, fut))
        return fut

    async def wait_revision(self, revision: int) -> None:
        """Wait until the registry reflects ``revision`` (read-your-writes)."""
        if self.revision >= revision:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._revision_waiters.append((revision, fut))
        await fut

    # -- queries -------------------------------------------------------------------------

    def active_members(self) -> dict[str, int]:
        """Members eligible for new placements (not draining), with their weights."""
        return {
            node_id: entry.info.weight
            for node_id, entry in self.nodes.items()
            if entry.info.state is NodeState.ACTIVE
        }

    def instances(self, child_id: str) -> dict[str, ChildHandle]:
        """Every running instance of a child by node: the primary, then its replicas."""
        out: dict[str, ChildHandle] = {}
        handle = self.handles.get(child_id)
        if handle is not None:
            out[handle.node_id] = handle
        for node_id, entry in self.replicas.get(child_id, {}).items():
            out.setdefault(node_id, entry.handle)
        return out

    def tagged(self, tag: str) -> Iterable[str]:
        """Child ids whose metadata tag equals ``tag``."""
        return self.by_tag.get(tag, ())
