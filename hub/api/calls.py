"""Calls and casts to children: find the instance, deliver, follow it when it moves.

:class:`Calls` addresses a child by id (whoever runs it now) or by handle (that
incarnation only), delivers over node RPC or, when the :class:`~hub.api.policy.Policy` says
the instance runs in this process, to its mailbox directly, and retries what was not
delivered (moved, not running yet, node unreachable) against the new owner within the
caller's timeout. Delivery is at most once. The documented API is
:class:`hub.api.facade.ClusterApi`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, Literal

from hub.api.connection import Connection
from hub.api.policy import Delivery, Policy
from hub.errors import (
    CallError,
    CallTimeout,
    ChildMoved,
    ChildNotFound,
    ChildNotRunning,
    NodeUnreachable,
    PayloadTooLarge,
    StaleHandle,
)
from hub.logs import fields, get_logger
from hub.messaging.payload import decode_payload, encode_payload
from hub.messaging.rpc import (
    CallReplyData,
    CallRequestData,
    CastRequestData,
    RpcConfig,
    raise_for_reply,
)
from hub.model import ChildHandle, validate_child_id

log = get_logger("hub")


class Calls:
    """Call/cast delivery over one connection (see the module docstring)."""

    def __init__(self, connection: Connection, policy: Policy) -> None:
        self._conn = connection
        self._policy = policy

    def call(
        self,
        target: str | ChildHandle,
        message: Any,
        *,
        timeout: float,
        idempotency_key: str,
        all_replicas: bool,
    ) -> Awaitable[Any]:
        """:meth:`hub.api.facade.ClusterApi.call` (the send itself: no frame of its own)."""
        if all_replicas:
            return self._call_all(target, message, timeout, idempotency_key)
        return self._send("call", target, message, timeout, idempotency_key)

    def cast(self, target: str | ChildHandle, message: Any, *, timeout: float) -> Awaitable[None]:
        """:meth:`hub.api.facade.ClusterApi.cast` (the send itself: no frame of its own)."""
        return self._send("cast", target, message, timeout, "")

    async def _call_all(
        self, target: str | ChildHandle, message: Any, timeout: float, key: str
    ) -> dict[str, Any]:
        self._conn.require_alive()
        child_id = target.child_id if isinstance(target, ChildHandle) else target
        instances = self._conn.registry.instances(validate_child_id(child_id))
        if not instances:
            if child_id not in self._conn.registry.specs:
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

    async def _send(
        self,
        kind: Literal["call", "cast"],
        target: str | ChildHandle,
        message: Any,
        timeout: float,
        key: str,
    ) -> Any:
        self._conn.require_alive()
        if isinstance(target, ChildHandle):
            child_id, token = target.child_id, target.fencing_token
        else:
            child_id, token = validate_child_id(target), 0
        payload, codec = encode_payload(message, child_id=child_id)
        limit = (self._conn.config.rpc or RpcConfig()).max_message_bytes
        if len(payload) > limit:
            raise PayloadTooLarge(child_id, None, len(payload), limit)
        registry = self._conn.registry
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
        registry = self._conn.registry

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
        kind: Literal["call", "cast"],
        handle: ChildHandle,
        payload: bytes,
        codec: str,
        token: int,
        key: str,
        timeout: float,
        replica: bool = False,
    ) -> CallReplyData:
        """Deliver to the instance ``handle`` names: in this process when the policy hosts
        it (same semantics, no network), else over RPC to the node that runs it.

        ``replica``: deliver to whatever instance of the child runs there (all_replicas).
        """
        if self._policy.hosts(handle):
            return await self._policy.deliver(
                Delivery(
                    kind,
                    handle.child_id,
                    token or handle.fencing_token,
                    payload,
                    codec,
                    timeout,
                    replica,
                )
            )
        entry = self._conn.registry.nodes.get(handle.node_id)
        if entry is None or not entry.info.address:
            raise NodeUnreachable(handle.child_id, handle.node_id, "no RPC address published")
        address = entry.info.address
        if kind == "call":
            request = CallRequestData(
                hub_id=self._conn.config.hub_id,
                child_id=handle.child_id,
                payload=payload,
                codec=codec,
                fencing_token=token or handle.fencing_token,
                idempotency_key=key,
                all_replicas=replica,
            )
            reply = await self._conn.rpc_client.call(
                address, request, timeout, node_id=handle.node_id
            )
            raise_for_reply(reply, request)
            return reply
        cast = CastRequestData(
            hub_id=self._conn.config.hub_id,
            child_id=handle.child_id,
            payload=payload,
            codec=codec,
            fencing_token=token or handle.fencing_token,
        )
        reply = await self._conn.rpc_client.cast(address, cast, timeout, node_id=handle.node_id)
        raise_for_reply(reply, cast)
        return reply
