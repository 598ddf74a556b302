"""HubClient: the cluster's API without hosting workers.

A :class:`HubClient` watches a hub's keys and can start, stop and look up children, but it
is not a member: it holds no lease and runs nothing. Operators' tools, benchmark drivers
and web front ends use it; :class:`hub.Hub` extends it into a full node.

Lookups (``get_pid``, ``process_list``...) read the watched registry: no network, O(1).
Every background task belongs to the client's TaskGroup; ``start``/``stop`` (or the
``async with`` block) must run in one task.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal, overload

from hub.config import HubConfig, make_config
from hub.core.placement import Placement, build_placement
from hub.core.registry import Registry
from hub.errors import (
    AlreadyStarted,
    CallError,
    CallTimeout,
    ChildMoved,
    ChildNotFound,
    ChildNotRunning,
    HubClosed,
    InvalidSpec,
    NodeUnreachable,
    PayloadTooLarge,
    StaleHandle,
    StoreError,
    UnknownChild,
    UnknownNode,
)
from hub.etcd.batcher import DEFAULT_MAX_BYTES, TxnBatcher
from hub.etcd.codec import decode_spec, encode_leave, encode_spec
from hub.etcd.informer import Informer
from hub.etcd.keys import KeySpace
from hub.etcd.store import MAX_TXN_OPS, Store, cmp_create, cmp_mod, op_delete, op_put, op_txn
from hub.logs import fields, get_logger
from hub.messaging.payload import decode_payload, encode_payload
from hub.messaging.rpc import (
    CallReplyData,
    CallRequestData,
    CastRequestData,
    RpcClient,
    RpcConfig,
    raise_for_reply,
)
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
from hub.worker import AllowList, validate_target
from strategies.base import RequiresChildMapping
from strategies.errors import InvalidChildMapping

log = get_logger("hub")

Scope = Literal["global", "local"]


class HubClient:
    """Starts, stops and finds children of the cluster ``hub_id`` without joining it.

    Takes the same arguments as :class:`hub.Hub` (node-only options are ignored).
    """

    def __init__(self, hub_id: str, **options: Any) -> None:
        config = options.pop("config", None)
        self.config: HubConfig = config if config is not None else make_config(hub_id, **options)
        cfg = self.config
        self.keys = KeySpace(cfg.hub_id, cfg.prefix)
        self.store = Store(cfg.etcd)
        self.registry = Registry(self.keys)
        self.registry.listener = self
        self.allow = AllowList(cfg.allowed_targets) if cfg.allowed_targets is not None else None
        watch_start, watch_end = self.keys.watched_range()
        self.informer = Informer(
            self.store,
            watch_start,
            self.registry,
            end=watch_end,
            # Generous: a busy loop must not look like a partition; the lease deadline,
            # not the informer, is what fences.
            stall_timeout=max(3.0, cfg.lease_ttl / 2),
        )
        self.batcher = TxnBatcher(self.store)
        self.rpc_client = RpcClient(cfg.rpc if cfg.rpc is not None else RpcConfig())
        self._placement: Placement = build_placement(
            self.registry, cfg.distribution, cfg.redundancy, {}
        )
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._alive = False

    @classmethod
    def from_config(cls, config: HubConfig) -> Any:
        """Build from a ready :class:`HubConfig`."""
        return cls(config.hub_id, config=config)

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

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.hub_id!r} alive={self._alive}>"

    async def __aenter__(self) -> Any:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Connect and sync the registry. Raises StoreError if etcd stays unreachable."""
        if self._tg is not None:
            raise HubClosed("already started")
        tg = asyncio.TaskGroup()
        await tg.__aenter__()
        self._tg = tg
        try:
            async with asyncio.timeout(self.config.startup_timeout):
                await self.store.connect()
                self._spawn("informer", self.informer.run())
                await self.informer.synced.wait()
                self._spawn("batcher", self.batcher.run())
            self._alive = True
        except BaseException:
            await self._close_tasks(tg)
            raise

    async def stop(self) -> None:
        """Disconnect."""
        tg, self._tg = self._tg, None
        if tg is None:
            return
        self._alive = False
        await self._close_tasks(tg)

    async def _close_tasks(self, tg: asyncio.TaskGroup) -> None:
        self._tg = None
        for name in list(self._tasks):
            await self._cancel(name)
        await tg.__aexit__(None, None, None)
        self._tasks.clear()
        await self.rpc_client.close()
        await self.store.close()

    def _spawn(self, name: str, coro: Any) -> None:
        assert self._tg is not None
        self._tasks[name] = self._tg.create_task(coro, name=f"hub:{name}")

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

    def registry_changed(self, child_ids: set[str], nodes_changed: bool, full: bool) -> None:
        if nodes_changed or full:
            cfg = self.config
            self._placement = build_placement(self.registry, cfg.distribution, cfg.redundancy)

    def placement(self, child_id: str) -> str | None:
        """The node ``child_id`` belongs on right now: its pin, or the strategy's choice."""
        return self._placement.owner(child_id)

    def _check_can_start(self) -> None:
        """Hook: a node refuses starts while fenced; a client always may try."""

    def is_alive(self) -> bool:
        """True between a successful start and stop."""
        return self._alive

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
        child_mapping: Mapping[str, Sequence[str]] | None = None,
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
            child_mapping: ``{child_id: [node, ...]}`` pins children to nodes (guided
                placement); required for every child with ``distribution=Guided()``, where
                it is validated with ProcessHub's errors (``MissingChildMapping``,
                ``InvalidChildMapping``, ``ChildMappingMismatch``,
                ``ChildReplicationMismatch``; all ``ValueError``).

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
        distribution = self.config.distribution
        if isinstance(distribution, RequiresChildMapping):
            instances = self.config.redundancy.count(len(self.registry.active_members()))
            distribution.validate_child_mapping(
                [spec.id for spec in specs], child_mapping, max(1, instances)
            )
        if child_mapping is not None:
            if not isinstance(child_mapping, Mapping):
                raise InvalidChildMapping("child_mapping must be a mapping")
            specs = [
                replace(spec, nodes=tuple(child_mapping[spec.id]))
                if spec.id in child_mapping
                else spec
                for spec in specs
            ]
        self._check_can_start()

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

        if check_existing:
            created, conflicts, write_errors = await self._write_specs_all_or_none(accepted)
        else:
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

    async def _write_specs_all_or_none(
        self, accepted: list[tuple[ChildSpec, bytes]]
    ) -> tuple[list[tuple[str, int]], list[str], list[ChildFailure]]:
        """Create the specs of a ``check_existing`` request all together or not at all.

        One txn per chunk compares every key of the chunk, so a request refused because one
        id exists never makes its other children visible, not even briefly (with per-key
        writes a node could start them before the rollback deletes them). Requests larger
        than one txn (128 children or ~1 MiB) are written as concurrent chunks; the caller
        rolls back the chunks that succeeded if another one conflicted.
        """
        chunks: list[list[tuple[ChildSpec, bytes]]] = []
        size = 0
        for item in accepted:
            if not chunks or (
                len(chunks[-1]) >= MAX_TXN_OPS or size + len(item[1]) > DEFAULT_MAX_BYTES
            ):
                chunks.append([])
                size = 0
            chunks[-1].append(item)
            size += len(item[1])

        async def write(
            chunk: list[tuple[ChildSpec, bytes]],
        ) -> tuple[list[tuple[str, int]], list[str], list[ChildFailure]]:
            keys = [self.keys.spec(spec.id) for spec, _ in chunk]
            try:
                result = await self.store.txn(
                    [cmp_create(key, "=", 0) for key in keys],
                    [op_put(key, encoded) for key, (_, encoded) in zip(keys, chunk, strict=True)],
                )
            except StoreError as exc:
                return (
                    [],
                    [],
                    [ChildFailure(s.id, None, f"spec write failed: {exc}") for s, _ in chunk],
                )
            if result.succeeded:
                return [(spec.id, result.revision) for spec, _ in chunk], [], []
            found = await asyncio.gather(
                *(self.store.get(key) for key in keys), return_exceptions=True
            )
            existing = [
                spec.id
                for (spec, _), kv in zip(chunk, found, strict=True)
                if kv is not None and not isinstance(kv, BaseException)
            ]
            # None found (deleted meanwhile, or unreadable): the chunk as a whole conflicted.
            return [], existing or [spec.id for spec, _ in chunk], []

        created: list[tuple[str, int]] = []
        conflicts: list[str] = []
        errors: list[ChildFailure] = []
        for done, conflicted, failed in await asyncio.gather(*map(write, chunks)):
            created.extend(done)  # in request order
            conflicts.extend(conflicted)
            errors.extend(failed)
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
                node = handle.node_id if handle else self.placement(child_id)
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
            # The child's saved state goes with it (its spec delete stays response 0).
            op = op_txn(
                [],
                [
                    op_delete(key),
                    op_delete(self.keys.checkpoint(child_id)),
                    op_delete(self.keys.handover(child_id)),
                ],
            )
            futures.append(self.batcher.submit(op, key))
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

    # -- talking to children -------------------------------------------------------------

    async def call(
        self,
        target: str | ChildHandle,
        message: Any,
        *,
        timeout: float = 5.0,
        idempotency_key: str = "",
        all_replicas: bool = False,
    ) -> Any:
        """Send ``message`` to a child's ``handle_call`` and return its reply.

        With ``all_replicas`` (replication), every running instance gets the call and the
        result is ``{node_id: reply or the CallError it raised}``.

        ``target`` is a child id (whoever runs it now; under replication, the active
        replica) or a :class:`ChildHandle` (that incarnation only: a call to a stale handle
        fails with :class:`StaleHandle` and never reaches the new instance). A call in
        flight during a migration or failover follows the child: a node that no longer runs
        it answers "moved" (the message was not delivered) and the call is retried against
        the new owner within ``timeout``. Delivery is **at most once**: a message is never
        handled twice by this library; pass ``idempotency_key`` for your own dedupe when
        you retry after a timeout.

        Raises:
            ChildNotFound, StaleHandle, NotCallable, HandlerError, MailboxFull,
            PayloadTooLarge, NotSerializable, RpcAuthError, CallTimeout (no reply in time).
        """
        if all_replicas:
            return await self._call_all(target, message, timeout, idempotency_key)
        return await self._send("call", target, message, timeout, idempotency_key)

    async def _call_all(
        self, target: str | ChildHandle, message: Any, timeout: float, key: str
    ) -> dict[str, Any]:
        self._require_alive()
        child_id = target.child_id if isinstance(target, ChildHandle) else target
        instances = self.registry.instances(validate_child_id(child_id))
        if not instances:
            if child_id not in self.registry.specs:
                raise ChildNotFound(child_id)
            raise ChildNotRunning(child_id, None, "no running instance")
        payload, codec = encode_payload(message, child_id=child_id)

        async def one(handle: ChildHandle) -> Any:
            try:
                reply = await self._deliver(
                    "call", handle, payload, codec, 0, key, timeout, replica=True
                )
            except CallError as exc:
                return exc
            return decode_payload(reply.payload, reply.codec, child_id=child_id)

        results = await asyncio.gather(*(one(h) for h in instances.values()))
        return dict(zip(instances, results, strict=True))

    async def cast(self, target: str | ChildHandle, message: Any, *, timeout: float = 5.0) -> None:
        """Queue ``message`` for a child's ``handle_cast``; returns once it is enqueued.

        Raises the same errors as :meth:`call` (``MailboxFull`` when the mailbox is full).
        """
        await self._send("cast", target, message, timeout, "")

    async def _send(
        self, kind: str, target: str | ChildHandle, message: Any, timeout: float, key: str
    ) -> Any:
        self._require_alive()
        if isinstance(target, ChildHandle):
            child_id, token = target.child_id, target.fencing_token
        else:
            child_id, token = validate_child_id(target), 0
        payload, codec = encode_payload(message, child_id=child_id)
        limit = (self.config.rpc or RpcConfig()).max_message_bytes
        if len(payload) > limit:
            raise PayloadTooLarge(child_id, None, len(payload), limit)
        registry = self.registry
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last: CallError | None = None
        while True:
            left = deadline - loop.time()
            if left <= 0:
                detail = f"; last attempt: {last}" if last is not None else ""
                raise CallTimeout(child_id, None, f"no reply within {timeout}s{detail}") from last
            handle = registry.handles.get(child_id)
            if handle is None or not handle.is_running:
                if child_id not in registry.specs and handle is None:
                    raise ChildNotFound(child_id)
                await self._wait_for_owner(child_id, left)
                continue
            if token and handle.fencing_token != token:
                raise StaleHandle(child_id, handle.node_id, token, handle.fencing_token)
            try:
                reply = await self._deliver(kind, handle, payload, codec, token, key, left)
            except (ChildMoved, ChildNotRunning, NodeUnreachable) as exc:
                # Not delivered: wait for the registry to show the new owner, then retry.
                log.debug(
                    "call to %r not delivered (%s); retrying",
                    child_id,
                    exc,
                    extra=fields(child_id=child_id, token=handle.fencing_token),
                )
                last = exc
                await self._wait_for_owner(child_id, min(0.05, max(0.0, left)), moved=handle)
                continue
            if kind == "cast":
                return None
            return decode_payload(reply.payload, reply.codec, child_id=child_id)

    async def _wait_for_owner(
        self, child_id: str, timeout: float, moved: ChildHandle | None = None
    ) -> None:
        """Wait until the registry shows a running owner (other than ``moved``)."""
        registry = self.registry

        def ready() -> bool:
            handle = registry.handles.get(child_id)
            return handle is not None and handle.is_running and handle != moved

        fut = registry.watch_child(child_id, ready)
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                await fut
        except TimeoutError:
            fut.cancel()

    async def _deliver(
        self,
        kind: str,
        handle: ChildHandle,
        payload: bytes,
        codec: str,
        token: int,
        key: str,
        timeout: float,
        replica: bool = False,
    ) -> CallReplyData:
        """Deliver to the node that runs ``handle`` (over RPC; a Hub shortcuts local ones).

        ``replica``: deliver to whatever instance of the child runs there (all_replicas).
        """
        entry = self.registry.nodes.get(handle.node_id)
        if entry is None or not entry.info.address:
            raise NodeUnreachable(handle.child_id, handle.node_id, "no RPC address published")
        address = entry.info.address
        if kind == "call":
            request = CallRequestData(
                hub_id=self.hub_id,
                child_id=handle.child_id,
                payload=payload,
                codec=codec,
                fencing_token=token or handle.fencing_token,
                idempotency_key=key,
                all_replicas=replica,
            )
            reply = await self.rpc_client.call(address, request, timeout, node_id=handle.node_id)
            raise_for_reply(reply, request)
            return reply
        cast = CastRequestData(
            hub_id=self.hub_id,
            child_id=handle.child_id,
            payload=payload,
            codec=codec,
            fencing_token=token or handle.fencing_token,
        )
        reply = await self.rpc_client.cast(address, cast, timeout, node_id=handle.node_id)
        raise_for_reply(reply, cast)
        return reply

    # -- operator moves -------------------------------------------------------------------

    async def pin(self, child_id: str, nodes: Sequence[str]) -> None:
        """Pin a child to ``nodes`` (in order of preference); ``[]`` unpins it.

        A pinned child runs on its first pinned node that is an active member; if none is,
        it waits (it is not dropped). The spec is updated with a compare-and-set, so
        concurrent pins never lose an update silently.

        Raises:
            UnknownChild: no such child. InvalidSpec: a malformed node id.
        """
        self._require_alive()
        key = self.keys.spec(validate_child_id(child_id))
        for _ in range(8):
            kv = await self.store.get(key)
            if kv is None:
                raise UnknownChild(child_id)
            spec = decode_spec(key, kv.value)
            updated = replace(spec, nodes=tuple(nodes))
            value = encode_spec(updated, time.time())
            guard = [cmp_mod(key, "=", kv.mod_revision)]
            result = await self.store.txn(guard, [op_put(key, value)])
            if result.succeeded:
                return
        raise StoreError(f"child {child_id!r}: spec kept changing; pin not applied")

    async def unpin(self, child_id: str) -> None:
        """Let the distribution strategy place the child again (it may move)."""
        await self.pin(child_id, ())

    async def move(
        self, child_id: str, node_id: str, *, wait: bool = True, timeout: float = 10.0
    ) -> ChildHandle | None:
        """Move a child to ``node_id`` and pin it there (with the hub's migration strategy:
        hot swap hands its state over). Returns the new handle when waiting.

        Raises:
            UnknownChild, UnknownNode: no such child or active member.
            TimeoutError: waited longer than ``timeout``.
        """
        self._require_alive()
        if node_id not in self.registry.active_members():
            raise UnknownNode(node_id)
        await self.pin(child_id, [node_id])
        if not wait:
            return None
        registry = self.registry

        def arrived() -> bool:
            handle = registry.handles.get(child_id)
            return handle is not None and handle.node_id == node_id and handle.is_running

        fut = registry.watch_child(child_id, arrived)
        try:
            async with asyncio.timeout(timeout):
                await fut
        except TimeoutError:
            fut.cancel()
            raise TimeoutError(
                f"child {child_id!r} did not reach {node_id!r} within {timeout}s"
            ) from None
        return registry.handles.get(child_id)

    async def drain(self, node_id: str, *, wait: bool = True, timeout: float = 60.0) -> None:
        """Ask a node to hand all its children over and leave the cluster.

        The request names the node's current incarnation, so a node restarted later under
        the same id is not affected. ``processhub node`` exits 0 once drained; an embedded
        :class:`hub.Hub` sets ``hub.left``. With ``wait``, returns when the node owns no
        child any more, then withdraws the request.

        Raises:
            UnknownNode: no such member. TimeoutError: not drained within ``timeout``.
        """
        self._require_alive()
        entry = self.registry.nodes.get(node_id)
        if entry is None:
            raise UnknownNode(node_id)
        key = self.keys.leave(node_id)
        revision = await self.store.put(key, encode_leave(entry.info.incarnation, time.time()))
        if not wait:
            return
        registry = self.registry
        incarnation = entry.info.incarnation
        deadline = time.monotonic() + timeout
        try:
            await registry.wait_revision(revision)
            while True:
                node = registry.nodes.get(node_id)
                gone = node is None or node.info.incarnation != incarnation
                draining = node is not None and node.info.state is NodeState.DRAINING
                owns = any(h.node_id == node_id for h in registry.handles.values())
                if gone or (draining and not owns):
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"node {node_id!r} did not drain within {timeout}s")
                await asyncio.sleep(0.05)  # poll with a deadline: drains take seconds
        finally:
            if wait:
                await self.store.txn([cmp_mod(key, "=", revision)], [op_delete(key)])

    # -- lookups: local, no network ------------------------------------------------------

    @overload
    def process_list(self, scope: Literal["global"] = ...) -> dict[str, dict[str, ChildHandle]]: ...

    @overload
    def process_list(self, scope: Literal["local"]) -> dict[str, ChildHandle]: ...

    def process_list(self, scope: Scope = "global") -> Any:
        """Running children: ``{child_id: {node_id: handle}}`` or, for ``"local"``,
        ``{child_id: handle}`` of this node's children (always empty for a client)."""
        if scope == "global":
            registry = self.registry
            if not registry.replicas:
                return {cid: {h.node_id: h} for cid, h in registry.handles.items()}
            ids = registry.handles.keys() | registry.replicas.keys()
            return {cid: registry.instances(cid) for cid in ids}
        if scope == "local":
            return {}  # a client hosts nothing
        raise InvalidSpec("scope must be 'global' or 'local'")

    def get_pid(self, child_id: str) -> ChildHandle | None:
        """Where a child's active instance runs (None if unknown). O(1), local."""
        return self.registry.handles.get(child_id)

    def get_pids(self, child_id: str) -> list[ChildHandle]:
        """Every instance of a child, the primary (active) first; ``[]`` if unknown."""
        return list(self.registry.instances(child_id).values())

    def active_replica(self, child_id: str) -> ChildHandle | None:
        """The instance that is active under active/passive replication (the primary:
        it holds the owner key and the fencing token); same as :meth:`get_pid`."""
        return self.registry.handles.get(child_id)

    def child_lookup(self, child_id: str, *, with_metadata: bool = False) -> tuple[Any, ...] | None:
        """``(spec, {node: handle})`` or with metadata ``(spec, {node: handle}, metadata)``;
        None if the child does not exist."""
        entry = self.registry.specs.get(child_id)
        if entry is None:
            return None
        nodes = self.registry.instances(child_id)
        if with_metadata:
            return (entry.spec, nodes, dict(entry.spec.metadata))
        return (entry.spec, nodes)

    def tag_query(self, tag: str) -> dict[str, dict[str, ChildHandle]]:
        """Children whose ``metadata["tag"]`` equals ``tag``: ``{child_id: {node: handle}}``."""
        instances = self.registry.instances
        return {cid: instances(cid) for cid in self.registry.tagged(tag)}

    def registry_dump(self) -> dict[str, tuple[ChildSpec, dict[str, ChildHandle], dict[str, Any]]]:
        """Every child: ``{child_id: (spec, {node: handle}, metadata)}``."""
        instances = self.registry.instances
        return {
            cid: (entry.spec, instances(cid), dict(entry.spec.metadata))
            for cid, entry in self.registry.specs.items()
        }

    def nodes(self, *, include_local: bool = False) -> list[str]:
        """Member node ids (draining ones included); this node only with ``include_local``."""
        return sorted(
            node_id for node_id in self.registry.nodes if include_local or node_id != self.node_id
        )
