"""The receiving side of node-to-node RPC: :class:`RpcServer` and the :class:`Dispatcher` seam.

Part of :mod:`hub.messaging.rpc` (import from there). The server checks every request before
the dispatcher sees it, in this order: the token (``UNAUTHENTICATED``, never logged), the
schema (``BAD_PAYLOAD``), the hub id (``WRONG_HUB``). It then hands the request, payload still
encoded, to the :class:`Dispatcher` and sends back its reply, or ``TOO_LARGE`` when the reply
would exceed ``max_message_bytes``.

A failing dispatcher cannot take the server down: a :class:`~hub.errors.CallError` becomes the
matching reply status (or a gRPC error when it has none); a ``TimeoutError`` becomes
``DEADLINE_EXCEEDED``; anything else is logged with its traceback and answered ``INTERNAL``.

Ownership: one :class:`RpcServer` per hub and event loop. The handler tasks belong to gRPC's
server, which :meth:`RpcServer.stop` ends; this module creates none itself.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc
import grpc.aio

from hub._proto import rpc_pb2 as pb
from hub._proto import rpc_pb2_grpc as pb_grpc
from hub.errors import CallError, HubClosed
from hub.logs import fields, get_logger
from hub.messaging._rpc_config import RpcConfig, _split_host_port, server_options
from hub.messaging._rpc_wire import (
    SCHEMA,
    CallReplyData,
    CallRequestData,
    CastRequestData,
    ReplyStatus,
    _call_request_from_pb,
    _cast_request_from_pb,
    _reply_fields,
    _reply_for_error,
    _too_large_message,
)

__all__ = ["Dispatcher", "RpcServer"]

# One logger for the whole RPC layer: its records keep the public module's name.
log = get_logger("hub.messaging.rpc")


class Dispatcher(Protocol):
    """What :class:`RpcServer` hands requests to: the hub, which owns the mailboxes.

    Both methods return a :class:`CallReplyData` (OK or an error status) or raise a
    :class:`~hub.errors.CallError`, which the server turns into the matching status (for
    example ``ChildMoved`` -> ``MOVED``, ``HandlerError`` -> ``HANDLER_ERROR`` with its
    remote type and message, ``NotSerializable`` of a result -> ``HANDLER_ERROR``). Any
    other exception is a bug: it is logged and the caller gets ``NodeInternalError``
    (a ``TimeoutError``, including ``CallTimeout``, gives the caller ``CallTimeout``).
    The request has already passed the token, schema and hub id checks; its payload is
    still encoded (decode with :func:`hub.messaging.payload.decode_payload`, whose
    ``BadPayload`` becomes ``BAD_PAYLOAD``). Both run in a gRPC handler task that is
    cancelled when the caller's deadline passes or it goes away.
    """

    async def dispatch_call(self, request: CallRequestData) -> CallReplyData:
        """Run ``handle_call`` of the addressed child and return its encoded result."""
        ...

    async def dispatch_cast(self, request: CastRequestData) -> CallReplyData:
        """Enqueue the message for ``handle_cast``; return once it is accepted or refused."""
        ...


_Request = TypeVar("_Request", CallRequestData, CastRequestData)


class _Servicer(pb_grpc.NodeRpcServicer):
    """The generated servicer, bound to one hub's dispatcher."""

    def __init__(
        self, dispatcher: Dispatcher, hub_id: str, node_id: str, config: RpcConfig
    ) -> None:
        self._dispatcher = dispatcher
        self._hub_id = hub_id
        self._node_id = node_id
        self._token = config.token.encode() if config.token is not None else None
        self._limit = config.max_message_bytes

    async def Call(self, request: pb.CallRequest, context: grpc.aio.ServicerContext) -> Any:
        data = _call_request_from_pb(request)
        fields = await self._serve(request.schema, data, self._dispatcher.dispatch_call, context)
        return self._bounded(pb.CallReply(**fields), pb.CallReply)

    async def Cast(self, request: pb.CastRequest, context: grpc.aio.ServicerContext) -> Any:
        data = _cast_request_from_pb(request)
        fields = await self._serve(request.schema, data, self._dispatcher.dispatch_cast, context)
        return self._bounded(pb.CastReply(**fields), pb.CastReply)

    def _is_authorized(self, context: grpc.aio.ServicerContext) -> bool:
        if self._token is None:
            return True
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str):
                scheme, _, given = value.partition(" ")
                return scheme.lower() == "bearer" and hmac.compare_digest(
                    given.strip().encode(), self._token
                )
        return False

    async def _serve(
        self,
        schema: int,
        data: _Request,
        dispatch: Callable[[_Request], Awaitable[CallReplyData]],
        context: grpc.aio.ServicerContext,
    ) -> dict[str, Any]:
        if not self._is_authorized(context):
            # Never log what the peer sent: a wrong token may be a near miss of the right one.
            log.warning(
                "refused an RPC from %s: missing or wrong token",
                context.peer(),
                extra=fields(node_id=self._node_id or None, peer=context.peer()),
            )
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token")
        if schema < 1:
            return self._refusal(ReplyStatus.BAD_PAYLOAD, "request without a schema")
        if data.hub_id != self._hub_id:
            return self._refusal(
                ReplyStatus.WRONG_HUB,
                f"this node serves hub {self._hub_id!r}, not {data.hub_id!r}",
            )
        code = grpc.StatusCode.INTERNAL
        try:
            reply = await dispatch(data)
            return _reply_fields(reply)
        except CallError as exc:
            error_reply = _reply_for_error(exc, self._node_id)
            if error_reply is not None:
                return _reply_fields(error_reply)
            failure = f"{type(exc).__name__}: {exc.reason}"
            if isinstance(exc, TimeoutError):  # e.g. no room in the mailbox in time
                code = grpc.StatusCode.DEADLINE_EXCEEDED
            else:
                log.error(
                    "dispatcher raised %s for child %r",
                    failure,
                    data.child_id,
                    extra=fields(
                        node_id=self._node_id, child_id=data.child_id, token=data.fencing_token
                    ),
                )
        except TimeoutError:
            code, failure = grpc.StatusCode.DEADLINE_EXCEEDED, "timed out"
        except Exception as exc:
            log.exception(
                "dispatcher failed for child %r",
                data.child_id,
                extra=fields(
                    node_id=self._node_id, child_id=data.child_id, token=data.fencing_token
                ),
            )
            failure = type(exc).__name__
        await context.abort(code, f"dispatch failed: {failure}")
        raise AssertionError("unreachable")  # pragma: no cover; abort() raises

    def _refusal(self, status: ReplyStatus, message: str) -> dict[str, Any]:
        return _reply_fields(
            CallReplyData(
                status=status,
                error_type=status.name,
                error_message=message,
                node_id=self._node_id,
            )
        )

    def _bounded(self, message: Any, message_type: Any) -> Any:
        """``message``, or a TOO_LARGE reply when it would exceed the size limit."""
        size = message.ByteSize()
        if size <= self._limit:
            return message
        log.warning(
            "reply of %d bytes exceeds the %d byte limit",
            size,
            self._limit,
            extra=fields(node_id=self._node_id or None),
        )
        return message_type(
            schema=SCHEMA,
            status=int(ReplyStatus.TOO_LARGE),
            error_type="PayloadTooLarge",
            error_message=_too_large_message(size, self._limit),
            node_id=message.node_id,
            fencing_token=message.fencing_token,
        )


class RpcServer:
    """Serves ``NodeRpc`` for one hub, handing requests to a :class:`Dispatcher`.

    Use ``address = await server.start()`` and ``await server.stop()``, or
    ``async with RpcServer(...) as server:``.

    Args:
        config: bind/advertise addresses, TLS, token, size limit.
        dispatcher: what runs calls and casts (the hub).
        hub_id: requests for any other hub id are answered ``WRONG_HUB``.
        node_id: put in the replies the server makes itself (refusals, TOO_LARGE).
    """

    def __init__(
        self, config: RpcConfig, dispatcher: Dispatcher, hub_id: str, *, node_id: str = ""
    ) -> None:
        self.config = config
        self._servicer = _Servicer(dispatcher, hub_id, node_id, config)
        self._server: grpc.aio.Server | None = None
        self._address: str | None = None

    async def __aenter__(self) -> RpcServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def address(self) -> str:
        """The advertised ``host:port`` (valid after :meth:`start`)."""
        if self._address is None:
            raise HubClosed("RPC server is not started")
        return self._address

    async def start(self) -> str:
        """Bind and start serving.

        Returns:
            The advertised address (``RpcConfig.advertise``, else the bound address).

        Raises:
            HubClosed: already started.
            ConfigError: a TLS file cannot be read.
            OSError: the address cannot be bound (in use, not local).
        """
        if self._server is not None:
            raise HubClosed("RPC server is already started")
        cfg = self.config
        credentials = cfg.tls.credentials() if cfg.tls is not None else None
        server = grpc.aio.server(options=server_options(cfg))
        pb_grpc.add_NodeRpcServicer_to_server(self._servicer, server)  # type: ignore[no-untyped-call]
        try:
            if credentials is not None:
                port = server.add_secure_port(cfg.bind, credentials)
            else:
                port = server.add_insecure_port(cfg.bind)
        except RuntimeError as exc:  # recent grpcio raises instead of returning 0
            port, failure = 0, str(exc)
        else:
            failure = "no port bound"
        if not port:
            await server.stop(None)
            raise OSError(f"cannot bind the RPC server to {cfg.bind}: {failure}")
        await server.start()
        host, _ = _split_host_port(cfg.bind, "RPC bind address", allow_port_zero=True)
        self._server = server
        self._address = cfg.advertise or f"{host}:{port}"
        log.info(
            "RPC server listening on %s:%d (advertised %s)",
            host,
            port,
            self._address,
            extra=fields(node_id=self._servicer._node_id or None, address=self._address),
        )
        return self._address

    async def stop(self, grace: float | None = 1.0) -> None:
        """Stop accepting calls; cancel those still running after ``grace`` seconds."""
        if self._server is not None:
            server, self._server = self._server, None
            self._address = None
            await server.stop(grace)
