"""The calling side of node-to-node RPC: :class:`RpcClient`, its channel pool, and the
translation of gRPC errors into :class:`~hub.errors.CallError`.

Part of :mod:`hub.messaging.rpc` (import from there). The client keeps one cached channel per
address, opened on first use and closed by :meth:`RpcClient.discard` (a node that left) or
:meth:`RpcClient.close`. Every call has a deadline (``RpcConfig.call_timeout`` unless the
caller passes one) and carries the token when one is configured.

gRPC errors are translated once, in :func:`map_errors`, through one table
(``_CODE_TO_ERROR``); a TLS verification failure on our side is configuration, so
:class:`~hub.errors.RpcAuthError`, not an outage. A reply with an error status is *returned*,
not raised (see :func:`~hub.messaging.rpc.raise_for_reply`). Nothing is retried: whether a
failed call may be sent again is the caller's decision.

Ownership: one :class:`RpcClient` per hub and event loop. Channels are gRPC's; this module
creates no tasks.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any, Final

import grpc
import grpc.aio

from hub._proto import rpc_pb2_grpc as pb_grpc
from hub.errors import (
    CallError,
    CallTimeout,
    ConfigError,
    HubClosed,
    NodeInternalError,
    NodeUnreachable,
    PayloadTooLarge,
    RpcAuthError,
)
from hub.etcd.store import TlsConfig
from hub.messaging._rpc_config import RpcConfig, channel_options
from hub.messaging._rpc_wire import (
    CallReplyData,
    CallRequestData,
    CastRequestData,
    _call_request_to_pb,
    _cast_request_to_pb,
    _reply_from_pb,
    _sizes,
)

__all__ = ["RpcClient", "map_errors", "translate"]


#: gRPC status code -> error. Codes not listed become a plain CallError.
_CODE_TO_ERROR: Final[Mapping[grpc.StatusCode, type[CallError]]] = MappingProxyType(
    {
        grpc.StatusCode.UNAVAILABLE: NodeUnreachable,
        grpc.StatusCode.CANCELLED: NodeUnreachable,  # the connection or the server went away
        grpc.StatusCode.DEADLINE_EXCEEDED: CallTimeout,
        grpc.StatusCode.UNAUTHENTICATED: RpcAuthError,
        grpc.StatusCode.PERMISSION_DENIED: RpcAuthError,
        grpc.StatusCode.RESOURCE_EXHAUSTED: PayloadTooLarge,
        grpc.StatusCode.INTERNAL: NodeInternalError,
        grpc.StatusCode.UNKNOWN: NodeInternalError,
        grpc.StatusCode.UNIMPLEMENTED: NodeInternalError,  # a node without NodeRpc
        grpc.StatusCode.DATA_LOSS: NodeInternalError,
    }
)

#: An UNAVAILABLE whose details name one of these is a TLS verification failure on our side
#: (wrong CA, wrong server name, TLS against a plaintext server): configuration, not an
#: outage, so RpcAuthError. (A server refusing *our* certificate just closes the socket.)
_TLS_FAILURES: Final = (
    "certificate_verify_failed",
    "verification check failed",
    "wrong_version_number",
)


def translate(
    exc: grpc.aio.AioRpcError,
    child_id: str,
    address: str,
    *,
    node_id: str | None = None,
    size: int = 0,
    limit: int = 0,
) -> CallError:
    """Map a gRPC error of a call to ``address`` to the most specific CallError."""
    code = exc.code()
    details = exc.details() or ""
    cls = _CODE_TO_ERROR.get(code, CallError)
    if cls is NodeUnreachable and any(f in details.lower() for f in _TLS_FAILURES):
        cls = RpcAuthError
    if cls is PayloadTooLarge:
        return PayloadTooLarge(child_id, node_id, *_sizes(details, size, limit))
    name = code.name if code is not None else "UNKNOWN"
    return cls(child_id, node_id, f"{address}: {name}: {details}")


@contextmanager
def map_errors(
    child_id: str,
    address: str,
    *,
    node_id: str | None = None,
    size: int = 0,
    limit: int = 0,
) -> Iterator[None]:
    """Re-raise gRPC errors of a call as CallErrors, ``from`` the original.

    ``size`` (of the request) and ``limit`` fill PayloadTooLarge when gRPC's message does
    not name them.
    """
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        raise translate(exc, child_id, address, node_id=node_id, size=size, limit=limit) from exc
    except grpc.aio.UsageError as exc:  # the channel was closed under the call
        raise NodeUnreachable(child_id, node_id, f"{address}: {exc}") from exc
    except TimeoutError as exc:
        raise CallTimeout(child_id, node_id, f"{address}: no reply in time") from exc


class RpcClient:
    """Sends calls and casts to other nodes, one cached channel per address.

    Use ``async with RpcClient(config) as client:`` or call :meth:`close`. Every call has
    a deadline. Errors come out as :class:`~hub.errors.CallError` subclasses; a reply with
    an error status is *returned* (pass it to :func:`~hub.messaging.rpc.raise_for_reply`).

    Raises:
        ConfigError: a ``client_tls`` file cannot be read (when constructed).
    """

    def __init__(self, config: RpcConfig) -> None:
        self.config = config
        self._options = channel_options(config)
        self._credentials = self._client_credentials(config.client_tls)
        self._metadata: tuple[tuple[str, str], ...] | None = (
            (("authorization", f"bearer {config.token}"),) if config.token is not None else None
        )
        self._stubs: dict[str, Any] = {}
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._closed = False

    @staticmethod
    def _client_credentials(tls: TlsConfig | None) -> grpc.ChannelCredentials | None:
        if tls is None:
            return None
        try:
            return tls.credentials()
        except OSError as exc:
            raise ConfigError(f"cannot read a client TLS file: {exc}") from exc

    async def __aenter__(self) -> RpcClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def call(
        self,
        address: str,
        request: CallRequestData,
        timeout: float | None = None,
        *,
        node_id: str | None = None,
    ) -> CallReplyData:
        """Send a call to the node at ``address`` and wait for its reply.

        Args:
            address: the node's advertised ``host:port``.
            request: the call.
            timeout: deadline in seconds (default ``RpcConfig.call_timeout``).
            node_id: the node expected there, to name it in errors.

        Returns:
            The reply, OK or not (see :func:`~hub.messaging.rpc.raise_for_reply`).

        Raises:
            NodeUnreachable: no connection (the request was not delivered).
            CallTimeout: no reply within the deadline (it may have been delivered).
            RpcAuthError: the node refused our token.
            PayloadTooLarge: the request exceeds a size limit (not delivered), or the
                reply exceeds ours (handled, result lost).
            NodeInternalError: the node failed while handling it (outcome unknown).
            HubClosed: the client is closed.
        """
        message = _call_request_to_pb(request)
        return await self._unary("Call", address, message, request.child_id, timeout, node_id)

    async def cast(
        self,
        address: str,
        request: CastRequestData,
        timeout: float | None = None,
        *,
        node_id: str | None = None,
    ) -> CallReplyData:
        """Send a cast to the node at ``address``; returns once it is enqueued or refused.

        Args and Raises as :meth:`call`.
        """
        message = _cast_request_to_pb(request)
        return await self._unary("Cast", address, message, request.child_id, timeout, node_id)

    async def _unary(
        self,
        method: str,
        address: str,
        message: Any,
        child_id: str,
        timeout: float | None,
        node_id: str | None,
    ) -> CallReplyData:
        if self._closed:
            raise HubClosed("RPC client is closed")
        if not address:
            raise NodeUnreachable(child_id, node_id, "the node advertises no RPC address")
        stub = self._stubs.get(address) or self._connect(address)
        deadline = self.config.call_timeout if timeout is None else timeout
        with map_errors(
            child_id,
            address,
            node_id=node_id,
            size=message.ByteSize(),
            limit=self.config.max_message_bytes,
        ):
            reply = await getattr(stub, method)(message, timeout=deadline, metadata=self._metadata)
        return _reply_from_pb(reply)

    def _connect(self, address: str) -> Any:
        if self._credentials is not None:
            channel = grpc.aio.secure_channel(address, self._credentials, self._options)
        else:
            channel = grpc.aio.insecure_channel(address, self._options)
        self._channels[address] = channel
        stub = self._stubs[address] = pb_grpc.NodeRpcStub(channel)  # type: ignore[no-untyped-call]
        return stub

    async def discard(self, address: str) -> None:
        """Close the channel to ``address`` (a node that left); its calls in flight fail."""
        self._stubs.pop(address, None)
        channel = self._channels.pop(address, None)
        if channel is not None:
            await channel.close(grace=None)

    async def close(self) -> None:
        """Close every channel; calls in flight fail with NodeUnreachable."""
        self._closed = True
        while self._channels:
            await self.discard(next(iter(self._channels)))
