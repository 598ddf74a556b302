"""Operator moves: pin, move and drain, by writing the specs and leave requests.

:class:`Moves` changes where children run only through etcd: a pin rewrites a spec with a
compare-and-set, a move is a pin plus a wait, a drain writes ``leave/{node_id}`` naming the
node's incarnation. The nodes' reconcilers do the rest. The documented API is
:class:`hub.api.facade.ClusterApi`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace

from hub.api.connection import Connection
from hub.errors import StoreError, UnknownChild, UnknownNode
from hub.etcd.codec import decode_spec, encode_leave, encode_spec
from hub.etcd.store import cmp_mod, op_delete, op_put
from hub.model import ChildHandle, NodeState, validate_child_id


class Moves:
    """Pins, moves and drains over one connection (see the module docstring)."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection

    async def pin(self, child_id: str, nodes: Sequence[str]) -> None:
        """:meth:`hub.api.facade.ClusterApi.pin`."""
        conn = self._conn
        conn.require_alive()
        key = conn.keys.spec(validate_child_id(child_id))
        for _ in range(8):
            kv = await conn.store.get(key)
            if kv is None:
                raise UnknownChild(child_id)
            spec = decode_spec(key, kv.value)
            updated = replace(spec, nodes=tuple(nodes))
            value = encode_spec(updated, time.time())
            guard = [cmp_mod(key, "=", kv.mod_revision)]
            result = await conn.store.txn(guard, [op_put(key, value)])
            if result.succeeded:
                return
        raise StoreError(f"child {child_id!r}: spec kept changing; pin not applied")

    async def move(
        self, child_id: str, node_id: str, *, wait: bool, timeout: float
    ) -> ChildHandle | None:
        """:meth:`hub.api.facade.ClusterApi.move`."""
        conn = self._conn
        conn.require_alive()
        if node_id not in conn.registry.active_members():
            raise UnknownNode(node_id)
        await self.pin(child_id, [node_id])
        if not wait:
            return None
        registry = conn.registry

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

    async def drain(self, node_id: str, *, wait: bool, timeout: float) -> None:
        """:meth:`hub.api.facade.ClusterApi.drain`."""
        conn = self._conn
        conn.require_alive()
        entry = conn.registry.nodes.get(node_id)
        if entry is None:
            raise UnknownNode(node_id)
        key = conn.keys.leave(node_id)
        revision = await conn.store.put(key, encode_leave(entry.info.incarnation, time.time()))
        if not wait:
            return
        registry = conn.registry
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
                await conn.store.txn([cmp_mod(key, "=", revision)], [op_delete(key)])
