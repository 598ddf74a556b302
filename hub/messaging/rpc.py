"""Node-to-node transport for ``call``/``cast``: the ``NodeRpc`` gRPC service, server and client.

The caller's node resolves a child to the address its owner advertises, then sends one
unary RPC there: ``Call`` runs the worker's ``handle_call`` and carries its result back,
``Cast`` asks the owner to enqueue a message for ``handle_cast`` and carries back whether it
was taken. Payloads are opaque bytes plus a codec name (:mod:`hub.messaging.payload`); protobuf
types never leave this module: callers and the :class:`Dispatcher` see plain dataclasses.

What it guarantees:

* **A deadline on every call** (``RpcConfig.call_timeout`` unless the caller passes one).
  When it passes, the caller gets :class:`~hub.errors.CallTimeout` and gRPC cancels the
  handler on the receiving node (the dispatcher sees ``CancelledError``).
* **Typed errors, translated once.** gRPC status codes become errors in :func:`map_errors`
  (one table, ``_CODE_TO_ERROR``); a reply's status becomes one in :func:`raise_for_reply`
  (one table, ``_STATUS_TO_ERROR``). A remote exception travels as its type name and
  message, never as an object: nothing is unpickled.
* **Only this hub's callers are served.** A request for another ``hub_id`` is answered with
  ``WRONG_HUB`` (:class:`~hub.errors.WrongHub`); with ``RpcConfig.token`` set, a request
  without ``authorization: bearer <token>`` is refused with ``UNAUTHENTICATED``
  (:class:`~hub.errors.RpcAuthError`); with ``ServerTls.client_ca_file`` set, a client
  without a certificate from that CA cannot even connect.
* **Bounded messages** in both directions (``max_message_bytes``): gRPC refuses an oversized
  request (``RESOURCE_EXHAUSTED``, :class:`~hub.errors.PayloadTooLarge` on the caller), and
  the server replies ``TOO_LARGE`` instead of sending an oversized reply.
* **A failing dispatcher cannot take the server down.** A :class:`~hub.errors.CallError` it
  raises becomes the matching reply status; anything else is logged with its traceback and
  answered with gRPC ``INTERNAL`` (:class:`~hub.errors.NodeInternalError` on the caller).

What it does not do: retry. Whether a failed call may be sent again (``ChildMoved``,
``NodeUnreachable`` before delivery, an ``idempotency_key``) is the caller's decision.

Ownership: :class:`RpcServer` and :class:`RpcClient` belong to one Hub and one event loop.
The tasks serving RPCs belong to gRPC's server, which :meth:`RpcServer.stop` ends; this
module creates none itself.

Warning:
    The token travels as metadata. Without TLS anyone on the path can read it: enable TLS
    (``RpcConfig.tls`` and ``client_tls``) on any network you do not fully trust.
"""

from __future__ import annotations

import enum
import hmac
import ipaddress
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Protocol, TypeVar

import grpc
import grpc.aio

from hub._proto import rpc_pb2 as pb
from hub._proto import rpc_pb2_grpc as pb_grpc
from hub.errors import (
    BadPayload,
    CallError,
    CallTimeout,
    ChildMoved,
    ChildNotFound,
    ChildNotRunning,
    ConfigError,
    HandlerError,
    HubClosed,
    MailboxFull,
    NodeInternalError,
    NodeUnreachable,
    NotCallable,
    NotSerializable,
    PayloadTooLarge,
    RpcAuthError,
    StaleHandle,
    WrongHub,
)
from hub.etcd.store import TlsConfig
from hub.logs import fields, get_logger

__all__ = [
    "SCHEMA",
    "CallReplyData",
    "CallRequestData",
    "CastRequestData",
    "Dispatcher",
    "ReplyStatus",
    "RpcClient",
    "RpcConfig",
    "RpcServer",
    "ServerTls",
    "channel_options",
    "map_errors",
    "raise_for_reply",
    "server_options",
]

log = get_logger("hub.messaging.rpc")

#: Schema of the messages this node writes; a request without one (0) is refused.
SCHEMA: Final = 1
#: Default size limit of one message (request or reply, envelope included): gRPC's own.
DEFAULT_MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024
#: Ping a connection every 20 s, only while calls are in flight (the etcd lesson: servers
#: answer pings on idle connections with GOAWAY "too_many_pings"); deadlines do the rest.
KEEPALIVE_TIME_MS: Final = 20_000
#: A ping unanswered for 10 s closes the connection: its calls fail as NodeUnreachable.
KEEPALIVE_TIMEOUT_MS: Final = 10_000
#: The server accepts pings this often, below KEEPALIVE_TIME_MS so our own clients are
#: never told too_many_pings.
MIN_PEER_PING_INTERVAL_MS: Final = 10_000
#: Reconnect quickly after a peer restarts: gRPC's default backoff grows to 120 s.
RECONNECT_BACKOFF_MS: Final = (100, 1_000)

_WILDCARD_HOSTS: Final = frozenset({"0.0.0.0", "::", "[::]", "*"})


# ---------------------------------------------------------------------------------------
# Configuration


def _split_host_port(value: str, what: str, *, allow_port_zero: bool) -> tuple[str, int]:
    """``host:port`` with a port in range; an IPv6 host in brackets; no scheme or path."""
    host, sep, port = value.rpartition(":")
    lowest = 0 if allow_port_zero else 1
    if not sep or not host or not port.isdigit() or not lowest <= int(port) <= 65535:
        raise ConfigError(f"{what} {value!r} must look like host:port (port {lowest}..65535)")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not bare or any(c.isspace() or c in "/@[]" for c in bare):
        raise ConfigError(f"{what} {value!r} must look like host:port")
    if ":" in bare:
        if bare == host:
            raise ConfigError(f"{what} {value!r}: put an IPv6 address in brackets, [::1]:port")
        try:
            ipaddress.IPv6Address(bare)
        except ValueError:
            raise ConfigError(f"{what} {value!r}: {bare!r} is not an IPv6 address") from None
    return host, int(port)


@dataclass(frozen=True, slots=True)
class ServerTls:
    """TLS for the RPC server. With ``client_ca_file``, clients must present a certificate
    signed by that CA (mutual TLS)."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None

    def credentials(self) -> grpc.ServerCredentials:
        """Read the PEM files and build gRPC server credentials.

        Raises:
            ConfigError: a file cannot be read.
        """

        def read(path: str) -> bytes:
            try:
                with open(path, "rb") as fh:
                    return fh.read()
            except OSError as exc:
                raise ConfigError(f"cannot read TLS file {path!r}: {exc}") from exc

        ca = read(self.client_ca_file) if self.client_ca_file is not None else None
        return grpc.ssl_server_credentials(
            [(read(self.key_file), read(self.cert_file))],
            root_certificates=ca,
            require_client_auth=ca is not None,
        )


@dataclass(frozen=True, slots=True)
class RpcConfig:
    """How this node serves and sends node-to-node calls.

    Args:
        bind: ``host:port`` to listen on; port 0 picks a free port.
        advertise: ``host:port`` other nodes use to reach this one (the membership
            record's address). Default: the bound address; required when ``bind`` is a
            wildcard (``0.0.0.0``, ``[::]``).
        tls: server certificate and key, and optionally a CA that client certificates must
            chain to. None: plaintext.
        client_tls: what this node uses to call others (CA to verify servers, optional
            client certificate, ``server_name`` to override the checked name). None:
            plaintext.
        token: shared secret every RPC must carry (``authorization: bearer <token>``);
            the same on every node. None: no token.
        max_message_bytes: largest message (request or reply, envelope included) sent
            or accepted.
        call_timeout: deadline of a call or cast when the caller passes none, seconds.
    """

    bind: str = "127.0.0.1:0"
    advertise: str | None = None
    tls: ServerTls | None = None
    client_tls: TlsConfig | None = None
    token: str | None = field(default=None, repr=False)  # never in logs or reprs
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    call_timeout: float = 5.0

    def __post_init__(self) -> None:
        host, _ = _split_host_port(self.bind, "RPC bind address", allow_port_zero=True)
        if self.advertise is not None:
            _split_host_port(self.advertise, "RPC advertise address", allow_port_zero=False)
        elif host in _WILDCARD_HOSTS:
            raise ConfigError(
                f"RPC bind address {self.bind!r} is a wildcard: set advertise to an address "
                "other nodes can reach"
            )
        if self.token is not None and not (
            self.token
            and self.token.isascii()
            and self.token.isprintable()
            and self.token == self.token.strip()
        ):
            raise ConfigError("RPC token must be non-empty printable ASCII without edge spaces")
        if self.max_message_bytes < 1024:
            raise ConfigError("max_message_bytes must be at least 1024")
        if self.call_timeout <= 0:
            raise ConfigError("call_timeout must be > 0")


def server_options(config: RpcConfig) -> list[tuple[str, Any]]:
    """gRPC server options for ``config`` (size limits, ping policy, exclusive port)."""
    return [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        # gRPC sets SO_REUSEPORT by default: a second node could then share a busy port.
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", MIN_PEER_PING_INTERVAL_MS),
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_PEER_PING_INTERVAL_MS),
    ]


def channel_options(config: RpcConfig) -> list[tuple[str, Any]]:
    """gRPC channel options for ``config`` (size limits, keepalive, reconnect, TLS name)."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 0),
        # Keep pinging during a long call with no data frames (the default stops after 2).
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
        ("grpc.min_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
        ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[1]),
    ]
    if config.client_tls is not None and config.client_tls.server_name:
        options.append(("grpc.ssl_target_name_override", config.client_tls.server_name))
    return options


# ---------------------------------------------------------------------------------------
# Requests and replies, as the hub sees them


class ReplyStatus(enum.IntEnum):
    """Outcome of a call or cast on the receiving node (``Status`` in ``rpc.proto``)."""

    UNSPECIFIED = pb.STATUS_UNSPECIFIED
    OK = pb.OK
    UNKNOWN_CHILD = pb.UNKNOWN_CHILD
    NOT_RUNNING = pb.NOT_RUNNING
    MOVED = pb.MOVED
    STALE_HANDLE = pb.STALE_HANDLE
    NOT_CALLABLE = pb.NOT_CALLABLE
    HANDLER_ERROR = pb.HANDLER_ERROR
    MAILBOX_FULL = pb.MAILBOX_FULL
    TOO_LARGE = pb.TOO_LARGE
    BAD_PAYLOAD = pb.BAD_PAYLOAD
    WRONG_HUB = pb.WRONG_HUB


@dataclass(frozen=True, slots=True)
class CallRequestData:
    """A ``call``: deliver ``payload`` to ``child_id``'s ``handle_call`` and wait for the reply.

    ``fencing_token`` 0 means "whoever owns it now"; otherwise the receiver answers
    ``STALE_HANDLE`` unless that instance is the current owner. ``idempotency_key`` (empty:
    none) lets the receiver drop a repeat; ``all_replicas`` asks for every replica.
    """

    hub_id: str
    child_id: str
    payload: bytes
    codec: str
    fencing_token: int = 0
    idempotency_key: str = ""
    all_replicas: bool = False


@dataclass(frozen=True, slots=True)
class CastRequestData:
    """A ``cast``: enqueue ``payload`` for ``child_id``'s ``handle_cast``; fields as a call."""

    hub_id: str
    child_id: str
    payload: bytes
    codec: str
    fencing_token: int = 0
    idempotency_key: str = ""


@dataclass(frozen=True, slots=True)
class CallReplyData:
    """The receiving node's answer to a call or a cast.

    With ``status`` OK, ``payload``/``codec`` hold the handler's result (empty for a cast).
    Otherwise ``error_type``/``error_message`` explain; :func:`raise_for_reply` turns it
    into the matching :class:`~hub.errors.CallError`. ``node_id`` is the answering node and
    ``fencing_token`` the token of the instance that answered (the current owner's for
    ``STALE_HANDLE``; 0 when none).
    """

    status: ReplyStatus
    payload: bytes = b""
    codec: str = ""
    error_type: str = ""
    error_message: str = ""
    node_id: str = ""
    fencing_token: int = 0

    @property
    def is_ok(self) -> bool:
        """True when the call was delivered and handled (or the cast enqueued)."""
        return self.status is ReplyStatus.OK


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


# ---------------------------------------------------------------------------------------
# Error translation: the two tables


#: Reply status -> the error raise_for_reply raises (and, inverted, what a dispatcher's
#: CallError becomes on the wire).
_STATUS_TO_ERROR: Final[Mapping[ReplyStatus, type[CallError]]] = MappingProxyType(
    {
        ReplyStatus.UNKNOWN_CHILD: ChildNotFound,
        ReplyStatus.NOT_RUNNING: ChildNotRunning,
        ReplyStatus.MOVED: ChildMoved,
        ReplyStatus.STALE_HANDLE: StaleHandle,
        ReplyStatus.NOT_CALLABLE: NotCallable,
        ReplyStatus.HANDLER_ERROR: HandlerError,
        ReplyStatus.MAILBOX_FULL: MailboxFull,
        ReplyStatus.TOO_LARGE: PayloadTooLarge,
        ReplyStatus.BAD_PAYLOAD: BadPayload,
        ReplyStatus.WRONG_HUB: WrongHub,
    }
)
_ERROR_TO_STATUS: Final[Mapping[type[CallError], ReplyStatus]] = MappingProxyType(
    # A handler's result the hub could not encode is the handler's error.
    {cls: status for status, cls in _STATUS_TO_ERROR.items()}
    | {NotSerializable: ReplyStatus.HANDLER_ERROR}
)

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

# gRPC says "(5000321 vs. 4194304)"; TOO_LARGE replies say "5000321 bytes exceeds 4194304".
_SIZES: Final = re.compile(r"(\d+) (?:vs\.|bytes exceeds) (\d+)")


def _too_large_message(size: int, limit: int) -> str:
    return f"payload of {size} bytes exceeds {limit}"


def _sizes(text: str, size: int, limit: int) -> tuple[int, int]:
    """The (size, limit) a message names, else the given fallbacks."""
    found = _SIZES.search(text)
    return (int(found[1]), int(found[2])) if found else (size, limit)


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


def raise_for_reply(reply: CallReplyData, request: CallRequestData | CastRequestData) -> None:
    """Raise the error a non-OK reply stands for; return if it is OK.

    Args:
        reply: what :meth:`RpcClient.call` or :meth:`RpcClient.cast` returned.
        request: the request it answers (names the child and the token in the error).

    Raises:
        ChildNotFound, ChildNotRunning, ChildMoved, StaleHandle, NotCallable,
        HandlerError, MailboxFull, PayloadTooLarge, BadPayload, WrongHub: by status.
        NodeInternalError: the reply has no status we know (a malformed or newer peer).
    """
    if reply.status is ReplyStatus.OK:
        return
    raise _error_for_reply(reply, request)


def _error_for_reply(reply: CallReplyData, request: CallRequestData | CastRequestData) -> CallError:
    child_id = request.child_id
    node_id = reply.node_id or None
    cls = _STATUS_TO_ERROR.get(reply.status)
    if cls is StaleHandle:
        return StaleHandle(child_id, node_id, request.fencing_token, reply.fencing_token or None)
    if cls is HandlerError:
        return HandlerError(child_id, node_id, reply.error_type, reply.error_message)
    if cls is PayloadTooLarge:
        return PayloadTooLarge(child_id, node_id, *_sizes(reply.error_message, 0, 0))
    if cls is None:
        return NodeInternalError(
            child_id,
            node_id,
            f"reply without a known status ({int(reply.status)}): {reply.error_message}",
        )
    return cls(child_id, node_id, reply.error_message)


def _reply_for_error(exc: CallError, node_id: str) -> CallReplyData | None:
    """The reply a dispatcher's CallError stands for; None if it has no status."""
    status = next((_ERROR_TO_STATUS[c] for c in type(exc).__mro__ if c in _ERROR_TO_STATUS), None)
    if status is None:
        return None
    error_type, message, token = type(exc).__name__, exc.reason, 0
    if isinstance(exc, HandlerError):
        error_type, message = exc.remote_type, exc.remote_message
    elif isinstance(exc, StaleHandle):
        token = exc.current or 0
    elif isinstance(exc, PayloadTooLarge):
        message = _too_large_message(exc.size, exc.limit)
    return CallReplyData(
        status=status,
        error_type=error_type,
        error_message=message,
        node_id=exc.node_id or node_id,
        fencing_token=token,
    )


# ---------------------------------------------------------------------------------------
# Wire conversion (protobuf stays in this section)


def _status(value: int) -> ReplyStatus:
    try:
        return ReplyStatus(value)
    except ValueError:  # a newer peer's status: raise_for_reply reports it as malformed
        return ReplyStatus.UNSPECIFIED


def _reply_from_pb(message: Any) -> CallReplyData:
    return CallReplyData(
        status=_status(message.status),
        payload=message.payload,
        codec=message.codec,
        error_type=message.error_type,
        error_message=message.error_message,
        node_id=message.node_id,
        fencing_token=message.fencing_token,
    )


def _reply_fields(reply: CallReplyData) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "status": int(reply.status),
        "payload": reply.payload,
        "codec": reply.codec,
        "error_type": reply.error_type,
        "error_message": reply.error_message,
        "node_id": reply.node_id,
        "fencing_token": reply.fencing_token,
    }


# ---------------------------------------------------------------------------------------
# Server

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
        data = CallRequestData(
            hub_id=request.hub_id,
            child_id=request.child_id,
            payload=request.payload,
            codec=request.codec,
            fencing_token=request.fencing_token,
            idempotency_key=request.idempotency_key,
            all_replicas=request.all_replicas,
        )
        fields = await self._serve(request.schema, data, self._dispatcher.dispatch_call, context)
        return self._bounded(pb.CallReply(**fields), pb.CallReply)

    async def Cast(self, request: pb.CastRequest, context: grpc.aio.ServicerContext) -> Any:
        data = CastRequestData(
            hub_id=request.hub_id,
            child_id=request.child_id,
            payload=request.payload,
            codec=request.codec,
            fencing_token=request.fencing_token,
            idempotency_key=request.idempotency_key,
        )
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


# ---------------------------------------------------------------------------------------
# Client


class RpcClient:
    """Sends calls and casts to other nodes, one cached channel per address.

    Use ``async with RpcClient(config) as client:`` or call :meth:`close`. Every call has
    a deadline. Errors come out as :class:`~hub.errors.CallError` subclasses; a reply with
    an error status is *returned* (pass it to :func:`raise_for_reply`).

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
            The reply, OK or not (see :func:`raise_for_reply`).

        Raises:
            NodeUnreachable: no connection (the request was not delivered).
            CallTimeout: no reply within the deadline (it may have been delivered).
            RpcAuthError: the node refused our token.
            PayloadTooLarge: the request exceeds a size limit (not delivered), or the
                reply exceeds ours (handled, result lost).
            NodeInternalError: the node failed while handling it (outcome unknown).
            HubClosed: the client is closed.
        """
        message = pb.CallRequest(
            schema=SCHEMA,
            hub_id=request.hub_id,
            child_id=request.child_id,
            fencing_token=request.fencing_token,
            payload=request.payload,
            codec=request.codec,
            idempotency_key=request.idempotency_key,
            all_replicas=request.all_replicas,
        )
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
        message = pb.CastRequest(
            schema=SCHEMA,
            hub_id=request.hub_id,
            child_id=request.child_id,
            fencing_token=request.fencing_token,
            payload=request.payload,
            codec=request.codec,
            idempotency_key=request.idempotency_key,
        )
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
