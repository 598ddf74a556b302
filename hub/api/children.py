"""Starting and stopping children cluster-wide: durable spec writes, then waiting.

:class:`Children` writes and deletes ``specs/{child_id}`` (create-if-absent, batched, or
one guarded txn per chunk for all-or-nothing requests) and waits on the registry for the
owners' answers. It never starts a worker itself: the owner node's reconciler does, from
the spec it watches. The documented API is :class:`hub.api.facade.ClusterApi`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

from hub.api.connection import Connection
from hub.api.policy import Policy
from hub.errors import AlreadyStarted, InvalidSpec, StoreError
from hub.etcd.batcher import DEFAULT_MAX_BYTES
from hub.etcd.codec import encode_spec
from hub.etcd.store import MAX_TXN_OPS, cmp_create, op_delete, op_put, op_txn
from hub.model import (
    ChildFailure,
    ChildHandle,
    ChildSpec,
    OwnerState,
    StartResult,
    StoppedChild,
    StopResult,
    validate_child_id,
)
from hub.worker import validate_target
from strategies.base import RequiresChildMapping
from strategies.errors import InvalidChildMapping


class Children:
    """Cluster-wide starts and stops over one connection (see the module docstring)."""

    def __init__(self, connection: Connection, policy: Policy) -> None:
        self._conn = connection
        self._policy = policy

    async def start_children(
        self,
        specs: Sequence[ChildSpec],
        *,
        wait: bool,
        timeout: float,
        check_existing: bool,
        on_failure: Literal["continue", "rollback"],
        metadata: dict[str, Any] | None,
        child_mapping: Mapping[str, Sequence[str]] | None,
    ) -> StartResult:
        """:meth:`hub.api.facade.ClusterApi.start_children`."""
        conn = self._conn
        conn.require_alive()
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
        distribution = conn.config.distribution
        if isinstance(distribution, RequiresChildMapping):
            instances = conn.config.redundancy.count(len(conn.registry.active_members()))
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
        self._policy.check_can_start()

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
                if conn.allow is not None and not conn.allow.allows(spec.start):
                    reason = f"start target {spec.start!r} is not in the allow-list"
                elif conn.config.validate_targets:
                    reason = validate_target(spec.start, conn.allow)
                targets_checked[spec.start] = reason
            reason = targets_checked[spec.start]
            if reason is not None:
                errors.append(ChildFailure(spec.id, None, reason))
                continue
            encoded = encode_spec(spec, now)
            if len(encoded) > conn.config.max_spec_bytes:
                errors.append(
                    ChildFailure(
                        spec.id,
                        None,
                        f"spec too large: {len(encoded)} bytes > {conn.config.max_spec_bytes}",
                    )
                )
                continue
            accepted.append((spec, encoded))

        if check_existing:
            existing = [spec.id for spec, _ in accepted if spec.id in conn.registry.specs]
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
            handle = conn.registry.handles.get(child_id)
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
            key = self._conn.keys.spec(spec.id)
            op = op_txn([cmp_create(key, "=", 0)], [op_put(key, encoded)])
            futures.append(self._conn.batcher.submit(op, key, len(key) * 2 + len(encoded)))
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
            keys = [self._conn.keys.spec(spec.id) for spec, _ in chunk]
            try:
                result = await self._conn.store.txn(
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
                *(self._conn.store.get(key) for key in keys), return_exceptions=True
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
            key = self._conn.keys.spec(child_id)
            op = op_txn([cmp_create(key, "=", revision)], [op_delete(key)])
            futures.append(self._conn.batcher.submit(op, key))
        await asyncio.gather(*futures, return_exceptions=True)

    async def _wait_started(
        self, created: list[tuple[str, int]], timeout: float
    ) -> tuple[list[ChildHandle], list[ChildFailure]]:
        registry = self._conn.registry

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
                node = handle.node_id if handle else self._policy.placement(child_id)
                errors.append(ChildFailure(child_id, node, "timeout"))
            elif handle is not None and handle.state is OwnerState.FAILED:
                errors.append(ChildFailure(child_id, handle.node_id, handle.last_exit or "failed"))
            elif handle is not None:
                started.append(handle)
            else:
                errors.append(ChildFailure(child_id, None, "stopped while starting"))
        return started, errors

    async def stop_children(
        self, child_ids: Sequence[str], *, wait: bool, timeout: float
    ) -> StopResult:
        """:meth:`hub.api.facade.ClusterApi.stop_children`."""
        conn = self._conn
        conn.require_alive()
        if isinstance(child_ids, str) or not isinstance(child_ids, Iterable):
            raise InvalidSpec("stop_children takes a list of child ids")
        ids: list[str] = list(dict.fromkeys(validate_child_id(c) for c in child_ids))
        if not ids:
            raise InvalidSpec("no child ids given")
        nodes_before = {
            cid: handle.node_id
            for cid in ids
            if (handle := conn.registry.handles.get(cid)) is not None
        }
        futures = []
        for child_id in ids:
            key = conn.keys.spec(child_id)
            # The child's saved state goes with it (its spec delete stays response 0).
            op = op_txn(
                [],
                [
                    op_delete(key),
                    op_delete(conn.keys.checkpoint(child_id)),
                    op_delete(conn.keys.handover(child_id)),
                ],
            )
            futures.append(conn.batcher.submit(op, key))
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
        registry = conn.registry

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
