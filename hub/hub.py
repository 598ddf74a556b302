"""The Hub: one node's membership in a named cluster of workers, and the public API.

``async with Hub("my_hub", endpoints=[...]) as hub:`` joins the cluster: it grants the
node's lease, lists and watches the hub's keys, registers the node, and starts the
reconciler, which runs this node's share of the children. Leaving the block drains the node
(its children move to other nodes) and revokes its lease.

Start order (each step waits for the previous one to be ready): store -> lease -> informer
synced -> batcher, supervisor, reconciler -> membership registered -> static children.
Every background task belongs to the Hub's TaskGroup; ``start``/``stop`` (or the ``async
with`` block) must run in one task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any, Literal, overload

from hub.batcher import TxnBatcher
from hub.codec import encode_spec
from hub.config import HubConfig, make_config
from hub.errors import (
    AlreadyStarted,
    HubClosed,
    InvalidSpec,
    PartitionedError,
    StoreError,
)
from hub.informer import Informer
from hub.keys import KeySpace
from hub.membership import Membership
from hub.model import (
    ChildFailure,
    ChildHandle,
    ChildSpec,
    NodeState,
    OwnerState,
    StartResult,
    StoppedChild,
    StopResult,
    validate_child_id,
)
from hub.reconciler import Reconciler
from hub.registry import Registry
from hub.session import Session
from hub.store import Store, cmp_create, op_delete, op_put, op_txn
from hub.supervisor import Supervisor, WorkerExit
from hub.worker import AllowList, validate_target

log = logging.getLogger("hub")

Scope = Literal["global", "local"]


class Hub:
    """A node of the cluster ``hub_id``.

    Args:
        hub_id: the cluster's name; nodes with the same id (and etcd prefix) form one
            cluster, different ids are independent.
        endpoints: etcd endpoints, ``"host:port"`` strings (or one comma-separated string).
        node_id: this node's name; default ``{hostname}-{pid}``.
        lease_ttl: seconds after which a silent node is considered dead; its children
            are restarted elsewhere about this long after a crash.
        tls, username, password: etcd transport security (see :class:`hub.store.TlsConfig`).
        child_specs: static children, started (if absent) when the hub boots.
        allowed_targets: ``fnmatch`` patterns of start targets this node accepts.
        distribution: placement strategy (default consistent hashing).
        **options: the remaining :class:`hub.config.HubConfig` fields.

    Raises:
        ConfigError: an option is invalid.
    """

    def __init__(self, hub_id: str, **options: Any) -> None:
        config = options.pop("config", None)
        self.config: HubConfig = config if config is not None else make_config(hub_id, **options)
        cfg = self.config
        self.keys = KeySpace(cfg.hub_id, cfg.prefix)
        self.store = Store(cfg.etcd)
        self.registry = Registry(self.keys)
        self.allow = AllowList(cfg.allowed_targets) if cfg.allowed_targets is not None else None
        self.session = Session(
            self.store, cfg.lease_ttl, on_lost=self._on_lease_lost, on_granted=self._on_lease
        )
        self.informer = Informer(
            self.store,
            self.keys.root,
            self.registry,
            stall_timeout=max(2.0, cfg.lease_ttl / 3),
        )
        self.batcher = TxnBatcher(self.store)
        self.supervisor = Supervisor(
            hub_id=cfg.hub_id,
            node_id=cfg.node_id,
            events=self,
            allow=self.allow,
            stop_timeout=cfg.worker_stop_timeout,
        )
        self.membership = Membership(
            self.store,
            self.session,
            self.keys,
            cfg.node_id,
            address=cfg.address,
            labels=cfg.labels,
            weight=cfg.weight,
        )
        self.reconciler = Reconciler(
            node_id=cfg.node_id,
            keys=self.keys,
            registry=self.registry,
            session=self.session,
            batcher=self.batcher,
            supervisor=self.supervisor,
            distribution=cfg.distribution,
            resync_interval=cfg.resync_interval,
        )
        self.registry.listener = self
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._alive = False
        self._stopping = False

    @classmethod
    def from_config(cls, config: HubConfig) -> Hub:
        """Build a Hub from a ready :class:`HubConfig`."""
        return cls(config.hub_id, config=config)

    # -- identity ------------------------------------------------------------------------

    @property
    def hub_id(self) -> str:
        return self.config.hub_id

    @property
    def node_id(self) -> str:
        return self.config.node_id

    @property
    def revision(self) -> int:
        """The etcd revision the local registry reflects."""
        return self.registry.revision

    @property
    def incarnation(self) -> int:
        """This node's current lease id (0 while fenced)."""
        return self.session.lease_id

    def __repr__(self) -> str:
        return f"<Hub {self.hub_id!r} node={self.node_id!r} alive={self._alive}>"

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Hub:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Join the cluster; returns once this node is registered and static children run.

        Raises:
            StoreError: etcd could not be reached within ``startup_timeout``.
        """
        if self._tg is not None:
            raise HubClosed("hub already started")
        cfg = self.config
        tg = asyncio.TaskGroup()
        await tg.__aenter__()
        self._tg = tg
        try:
            async with asyncio.timeout(cfg.startup_timeout):
                await self.store.connect()
                await self._first_lease()
                self._spawn("session", self.session.run())
                self._spawn("informer", self.informer.run())
                await self.informer.synced.wait()
                self._spawn("batcher", self.batcher.run())
                self._spawn("supervisor", self.supervisor.run())
                self._spawn("reconciler", self.reconciler.run())
                self._spawn("membership", self.membership.run())
                revision = await self.membership.register()
                await self.registry.wait_revision(revision)
            self._alive = True
            log.info("node joined", extra={"hub_id": cfg.hub_id, "node_id": cfg.node_id})
            if cfg.child_specs:
                await self._start_static_children()
        except BaseException:
            await self._shutdown(drain=False)
            raise

    async def _first_lease(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self.session.grant()
                return
            except StoreError as exc:
                log.warning("waiting for etcd: %s", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    def _spawn(self, name: str, coro: Any) -> None:
        assert self._tg is not None
        self._tasks[name] = self._tg.create_task(coro, name=f"hub:{name}")

    async def _start_static_children(self) -> None:
        result = await self.start_children(
            self.config.child_specs,
            check_existing=False,
            wait=True,
            timeout=self.config.startup_timeout,
        )
        for error in result.errors:
            if error.reason != "already_started":
                log.warning("static child %r: %s", error.child_id, error.reason)

    async def stop(self, *, drain: bool = True) -> None:
        """Leave the cluster. With ``drain`` (default) children move to other nodes first.

        Bounded by ``drain_timeout`` plus the worker stop timeout.
        """
        if self._tg is None:
            return
        await self._shutdown(drain=drain)

    async def _shutdown(self, *, drain: bool) -> None:
        tg, self._tg = self._tg, None
        if tg is None:
            return
        self._stopping = True
        try:
            if drain and self._alive and self.session.is_valid():
                await self._drain()
        finally:
            self._alive = False
            # Order matters: no worker may outlive the owner keys that its lease holds.
            for name in ("reconciler", "membership"):
                await self._cancel(name)
            await self.supervisor.stop_all()
            await self._cancel("supervisor")
            await self._cancel("session")
            await self.session.revoke()
            for name in ("batcher", "informer"):
                await self._cancel(name)
            await tg.__aexit__(None, None, None)
            self._tasks.clear()
            await self.store.close()
            log.info("node left", extra={"hub_id": self.hub_id, "node_id": self.node_id})

    async def _cancel(self, name: str) -> None:
        task = self._tasks.pop(name, None)
        if task is None or task.done():
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        except Exception as exc:
            log.warning("component %s failed while stopping: %s", name, exc)

    async def _drain(self) -> None:
        """Mark this node draining and wait until its children run elsewhere."""
        try:
            async with asyncio.timeout(self.config.drain_timeout):
                await self.membership.set_state(NodeState.DRAINING)
                self.reconciler.set_draining(True)
                while self.reconciler.owned:
                    others = set(self.registry.active_members()) - {self.node_id}
                    if not others:
                        break  # nowhere to go: stop here, specs stay durable
                    await asyncio.sleep(0.01)
                    await self.reconciler.wait_idle()
        except TimeoutError:
            log.warning("drain timed out with %d children still local", len(self.reconciler.owned))

    # -- lease and registry callbacks ----------------------------------------------------

    async def _on_lease_lost(self, lease_id: int) -> None:
        """Self-fencing: stop every local worker before etcd can expire our keys."""
        await self.reconciler.fence()

    async def _on_lease(self, lease_id: int) -> None:
        """A new incarnation: publish membership again and reconcile everything."""
        self.membership.request()
        self.reconciler.mark_all()

    def registry_changed(self, child_ids: set[str], nodes_changed: bool, full: bool) -> None:
        self.reconciler.registry_changed(child_ids, nodes_changed, full)
        if nodes_changed and not self._stopping and self.session.is_valid():
            entry = self.registry.nodes.get(self.node_id)
            if entry is None or entry.info.incarnation != self.session.lease_id:
                if self.membership.registered_lease == self.session.lease_id:
                    self.membership.request()  # our record vanished: write it again

    # -- supervisor events -> reconciler --------------------------------------------------

    def worker_started(self, child_id: str, fencing_token: int, restarts: int) -> None:
        self.reconciler.worker_started(child_id, fencing_token, restarts)

    def worker_restarting(
        self, child_id: str, fencing_token: int, restarts: int, reason: str
    ) -> None:
        self.reconciler.worker_restarting(child_id, fencing_token, restarts, reason)

    def worker_exited(self, child_id: str, fencing_token: int, exit: WorkerExit) -> None:
        self.reconciler.worker_exited(child_id, fencing_token, exit)

    # -- starting and stopping children ---------------------------------------------------

    def _require_alive(self) -> None:
        if not self._alive:
            raise HubClosed("hub is not running (use 'async with Hub(...)' or await start())")

    async def start_child(
        self,
        spec: ChildSpec,
        *,
        wait: bool = False,
        timeout: float = 10.0,
        check_existing: bool = True,
        on_failure: Literal["continue", "rollback"] = "continue",
        metadata: dict[str, Any] | None = None,
    ) -> StartResult:
        """Start one child; see :meth:`start_children`."""
        return await self.start_children(
            [spec],
            wait=wait,
            timeout=timeout,
            check_existing=check_existing,
            on_failure=on_failure,
            metadata=metadata,
        )

    async def start_children(
        self,
        specs: Sequence[ChildSpec],
        *,
        wait: bool = False,
        timeout: float = 10.0,
        check_existing: bool = True,
        on_failure: Literal["continue", "rollback"] = "continue",
        metadata: dict[str, Any] | None = None,
    ) -> StartResult:
        """Start children somewhere in the cluster.

        The specs are written durably (create-if-absent, batched) before this returns;
        the ring owner of each child then acquires it and starts its worker.

        Args:
            specs: the children. Ids must be unique in the cluster.
            wait: wait until every child runs (or failed) and report handles.
            timeout: how long to wait, seconds.
            check_existing: refuse the whole request with :class:`AlreadyStarted` if any
                id already exists **anywhere in the cluster** (checked in etcd). With False,
                existing ids become ``already_started`` error entries and the rest start.
            on_failure: ``"rollback"`` stops every child of this request if any failed
                (implies waiting).
            metadata: merged into every spec's metadata (``"tag"`` feeds ``tag_query``).

        Returns:
            StartResult: ``pending`` ids when not waiting; ``started`` handles and
            ``errors`` (child id, node, reason) when waiting.

        Raises:
            InvalidSpec: empty request, a non-spec item, bad ``on_failure``/``metadata``.
            AlreadyStarted: ``check_existing`` found existing children (nothing started).
            PartitionedError: this node has no valid lease (it is fenced off from etcd).
            HubClosed: the hub is not running.
        """
        self._require_alive()
        if isinstance(specs, ChildSpec) or not isinstance(specs, Iterable):
            raise InvalidSpec("start_children takes a list of ChildSpec")
        specs = list(specs)
        if not specs:
            raise InvalidSpec("no children given")
        if on_failure not in ("continue", "rollback"):
            raise InvalidSpec("on_failure must be 'continue' or 'rollback'")
        for spec in specs:
            if not isinstance(spec, ChildSpec):
                raise InvalidSpec(f"expected ChildSpec, got {type(spec).__name__}")
        if metadata:
            specs = [replace(spec, metadata={**spec.metadata, **metadata}) for spec in specs]
        if not self.session.is_valid():
            raise PartitionedError("this node is fenced off from etcd; refusing to start")

        errors: list[ChildFailure] = []
        accepted: list[tuple[ChildSpec, bytes]] = []
        seen: set[str] = set()
        now = time.time()
        targets_checked: dict[str, str | None] = {}
        for spec in specs:
            if spec.id in seen:
                errors.append(ChildFailure(spec.id, None, "duplicate id in this request"))
                continue
            seen.add(spec.id)
            if spec.start not in targets_checked:
                reason = None
                if self.allow is not None and not self.allow.allows(spec.start):
                    reason = f"start target {spec.start!r} is not in the allow-list"
                elif self.config.validate_targets:
                    reason = validate_target(spec.start, self.allow)
                targets_checked[spec.start] = reason
            reason = targets_checked[spec.start]
            if reason is not None:
                errors.append(ChildFailure(spec.id, None, reason))
                continue
            encoded = encode_spec(spec, now)
            if len(encoded) > self.config.max_spec_bytes:
                errors.append(
                    ChildFailure(
                        spec.id,
                        None,
                        f"spec too large: {len(encoded)} bytes > {self.config.max_spec_bytes}",
                    )
                )
                continue
            accepted.append((spec, encoded))

        if check_existing:
            existing = [spec.id for spec, _ in accepted if spec.id in self.registry.specs]
            if existing:
                raise AlreadyStarted(existing)

        created, conflicts, write_errors = await self._write_specs(accepted)
        errors.extend(write_errors)
        if conflicts and check_existing:
            # Another caller won a race the local check could not see: undo our part.
            await self._delete_specs_fenced(created)
            raise AlreadyStarted(conflicts)
        for child_id in conflicts:
            handle = self.registry.handles.get(child_id)
            errors.append(
                ChildFailure(child_id, handle.node_id if handle else None, "already_started")
            )
        if not wait and on_failure != "rollback":
            return StartResult(errors=tuple(errors), pending=tuple(cid for cid, _ in created))

        started, wait_errors = await self._wait_started(created, timeout)
        errors.extend(wait_errors)
        if errors and on_failure == "rollback" and created:
            await self.stop_children([cid for cid, _ in created], wait=True, timeout=timeout)
            return StartResult(started=tuple(started), errors=tuple(errors), rollback=True)
        return StartResult(started=tuple(started), errors=tuple(errors))

    async def _write_specs(
        self, accepted: list[tuple[ChildSpec, bytes]]
    ) -> tuple[list[tuple[str, int]], list[str], list[ChildFailure]]:
        futures = []
        for spec, encoded in accepted:
            key = self.keys.spec(spec.id)
            op = op_txn([cmp_create(key, "=", 0)], [op_put(key, encoded)])
            futures.append(self.batcher.submit(op, key, len(key) * 2 + len(encoded)))
        results = await asyncio.gather(*futures, return_exceptions=True)
        created: list[tuple[str, int]] = []
        conflicts: list[str] = []
        errors: list[ChildFailure] = []
        for (spec, _), result in zip(accepted, results, strict=True):
            if isinstance(result, BaseException):
                errors.append(ChildFailure(spec.id, None, f"spec write failed: {result}"))
            elif not result.succeeded:
                conflicts.append(spec.id)
            else:
                created.append((spec.id, result.revision))
        return created, conflicts, errors

    async def _delete_specs_fenced(self, created: list[tuple[str, int]]) -> None:
        futures = []
        for child_id, revision in created:
            key = self.keys.spec(child_id)
            op = op_txn([cmp_create(key, "=", revision)], [op_delete(key)])
            futures.append(self.batcher.submit(op, key))
        await asyncio.gather(*futures, return_exceptions=True)

    async def _wait_started(
        self, created: list[tuple[str, int]], timeout: float
    ) -> tuple[list[ChildHandle], list[ChildFailure]]:
        registry = self.registry

        def settled(child_id: str, revision: int) -> Any:
            def check() -> bool:
                owner = registry.owners.get(child_id)
                return (
                    owner is not None
                    and owner.create_revision > revision
                    and owner.record is not None
                    and owner.record.state is not OwnerState.STARTING
                )

            return check

        futures = {
            child_id: registry.watch_child(child_id, settled(child_id, revision))
            for child_id, revision in created
        }
        if futures:
            await asyncio.wait(futures.values(), timeout=timeout)
        started: list[ChildHandle] = []
        errors: list[ChildFailure] = []
        for child_id, fut in futures.items():
            handle = registry.handles.get(child_id)
            if not fut.done():
                fut.cancel()
                node = handle.node_id if handle else self.reconciler.placement(child_id)
                errors.append(ChildFailure(child_id, node, "timeout"))
            elif handle is not None and handle.state is OwnerState.FAILED:
                errors.append(ChildFailure(child_id, handle.node_id, handle.last_exit or "failed"))
            elif handle is not None:
                started.append(handle)
            else:
                errors.append(ChildFailure(child_id, None, "stopped while starting"))
        return started, errors

    async def stop_child(
        self, child_id: str, *, wait: bool = False, timeout: float = 10.0
    ) -> StopResult:
        """Stop one child; see :meth:`stop_children`."""
        return await self.stop_children([child_id], wait=wait, timeout=timeout)

    async def stop_children(
        self, child_ids: Sequence[str], *, wait: bool = False, timeout: float = 10.0
    ) -> StopResult:
        """Stop children cluster-wide: their specs are deleted, their owners stop them.

        An awaited stop waits only for the nodes that ran the children.

        Returns:
            StopResult: ``stopped`` children with the node they ran on (when waiting),
            ``errors`` with reason ``"not_found"`` for unknown ids or ``"timeout"``.

        Raises:
            InvalidSpec: empty request; InvalidChildId: malformed id.
        """
        self._require_alive()
        if isinstance(child_ids, str) or not isinstance(child_ids, Iterable):
            raise InvalidSpec("stop_children takes a list of child ids")
        ids: list[str] = list(dict.fromkeys(validate_child_id(c) for c in child_ids))
        if not ids:
            raise InvalidSpec("no child ids given")
        nodes_before = {
            cid: handle.node_id
            for cid in ids
            if (handle := self.registry.handles.get(cid)) is not None
        }
        futures = []
        for child_id in ids:
            key = self.keys.spec(child_id)
            futures.append(self.batcher.submit(op_txn([], [op_delete(key)]), key))
        results = await asyncio.gather(*futures, return_exceptions=True)
        errors: list[ChildFailure] = []
        deleted: list[str] = []
        for child_id, result in zip(ids, results, strict=True):
            if isinstance(result, BaseException):
                errors.append(ChildFailure(child_id, None, f"spec delete failed: {result}"))
            elif not result.responses or not result.responses[0]:
                errors.append(ChildFailure(child_id, None, "not_found"))
            else:
                deleted.append(child_id)
        if not wait:
            return StopResult(errors=tuple(errors), pending=tuple(deleted))
        registry = self.registry

        def gone(child_id: str) -> Callable[[], bool]:
            return lambda: child_id not in registry.owners

        futures_by_id = {cid: registry.watch_child(cid, gone(cid)) for cid in deleted}
        if futures_by_id:
            await asyncio.wait(futures_by_id.values(), timeout=timeout)
        stopped: list[StoppedChild] = []
        for child_id, fut in futures_by_id.items():
            node = nodes_before.get(child_id)
            if fut.done():
                stopped.append(StoppedChild(child_id, (node,) if node else ()))
            else:
                fut.cancel()
                errors.append(ChildFailure(child_id, node, "timeout"))
        return StopResult(stopped=tuple(stopped), errors=tuple(errors))

    # -- lookups: local, no network ------------------------------------------------------

    @overload
    def process_list(self, scope: Literal["global"] = ...) -> dict[str, dict[str, ChildHandle]]: ...

    @overload
    def process_list(self, scope: Literal["local"]) -> dict[str, ChildHandle]: ...

    def process_list(self, scope: Scope = "global") -> Any:
        """Running children: ``{child_id: {node_id: handle}}`` or, for ``"local"``,
        ``{child_id: handle}`` of this node's children."""
        if scope == "global":
            return {cid: {h.node_id: h} for cid, h in self.registry.handles.items()}
        if scope == "local":
            me, lease = self.node_id, self.session.lease_id
            return {
                cid: h
                for cid, h in self.registry.handles.items()
                if h.node_id == me and h.incarnation == lease
            }
        raise InvalidSpec("scope must be 'global' or 'local'")

    def get_pid(self, child_id: str) -> ChildHandle | None:
        """Where a child's active instance runs (None if unknown). O(1), local."""
        return self.registry.handles.get(child_id)

    def get_pids(self, child_id: str) -> list[ChildHandle]:
        """Every instance of a child (one with singularity); ``[]`` if unknown."""
        handle = self.registry.handles.get(child_id)
        return [handle] if handle is not None else []

    def child_lookup(self, child_id: str, *, with_metadata: bool = False) -> tuple[Any, ...] | None:
        """``(spec, {node: handle})`` or with metadata ``(spec, {node: handle}, metadata)``;
        None if the child does not exist."""
        entry = self.registry.specs.get(child_id)
        if entry is None:
            return None
        handle = self.registry.handles.get(child_id)
        nodes = {handle.node_id: handle} if handle is not None else {}
        if with_metadata:
            return (entry.spec, nodes, dict(entry.spec.metadata))
        return (entry.spec, nodes)

    def tag_query(self, tag: str) -> dict[str, dict[str, ChildHandle]]:
        """Children whose ``metadata["tag"]`` equals ``tag``: ``{child_id: {node: handle}}``."""
        handles = self.registry.handles
        out: dict[str, dict[str, ChildHandle]] = {}
        for cid in self.registry.tagged(tag):
            handle = handles.get(cid)
            out[cid] = {handle.node_id: handle} if handle is not None else {}
        return out

    def registry_dump(self) -> dict[str, tuple[ChildSpec, dict[str, ChildHandle], dict[str, Any]]]:
        """Every child: ``{child_id: (spec, {node: handle}, metadata)}``."""
        handles = self.registry.handles
        out = {}
        for cid, entry in self.registry.specs.items():
            handle = handles.get(cid)
            nodes = {handle.node_id: handle} if handle is not None else {}
            out[cid] = (entry.spec, nodes, dict(entry.spec.metadata))
        return out

    def nodes(self, *, include_local: bool = False) -> list[str]:
        """Member node ids (draining ones included); this node only with ``include_local``."""
        return sorted(
            node_id for node_id in self.registry.nodes if include_local or node_id != self.node_id
        )

    def is_alive(self) -> bool:
        """True between a successful start and stop."""
        return self._alive

    def is_partitioned(self) -> bool:
        """True while this node holds no valid lease: it has fenced itself and runs nothing."""
        return self._alive and not self.session.is_valid()

    def placement(self, child_id: str) -> str | None:
        """The node the distribution strategy assigns ``child_id`` to right now."""
        return self.reconciler.placement(child_id)

    def is_settled(self) -> bool:
        """True when this node has no reconcile work pending (test and benchmark helper)."""
        return self.reconciler.is_idle() and self.batcher.pending() == 0

    @property
    def state(self) -> NodeState:
        """This node's membership state."""
        return self.membership.state
