"""Requests and replies of node-to-node RPC as the hub sees them, and their protobuf form.

Part of :mod:`hub.messaging.rpc` (import from there). Callers and the dispatcher see only the
frozen dataclasses here (:class:`CallRequestData`, :class:`CastRequestData`,
:class:`CallReplyData`); the functions that turn them into ``rpc.proto`` messages and back
are the only code that builds or reads request and reply fields, so a schema change is made
in this one module.

A reply's status and a :class:`~hub.errors.CallError` are the same fact in two forms, each
way through one table: :func:`raise_for_reply` reads ``_STATUS_TO_ERROR`` (caller side),
``_reply_for_error`` reads ``_ERROR_TO_STATUS`` (receiver side). A remote exception travels
as its type name and message, never as an object. A status this node does not know (a newer
peer's) becomes ``UNSPECIFIED``, which :func:`raise_for_reply` reports as
:class:`~hub.errors.NodeInternalError`.

Pure values and functions: no I/O, no tasks.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from hub._proto import rpc_pb2 as pb
from hub.errors import (
    BadPayload,
    CallError,
    ChildMoved,
    ChildNotFound,
    ChildNotRunning,
    HandlerError,
    MailboxFull,
    NodeInternalError,
    NotCallable,
    NotSerializable,
    PayloadTooLarge,
    StaleHandle,
    WrongHub,
)

__all__ = [
    "SCHEMA",
    "CallReplyData",
    "CallRequestData",
    "CastRequestData",
    "ReplyStatus",
    "raise_for_reply",
]

#: Schema of the messages this node writes; a request without one (0) is refused.
SCHEMA: Final = 1


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


# ---------------------------------------------------------------------------------------
# Status <-> error: the one table, read both ways


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


# gRPC says "(5000321 vs. 4194304)"; TOO_LARGE replies say "5000321 bytes exceeds 4194304".
_SIZES: Final = re.compile(r"(\d+) (?:vs\.|bytes exceeds) (\d+)")


def _too_large_message(size: int, limit: int) -> str:
    return f"payload of {size} bytes exceeds {limit}"


def _sizes(text: str, size: int, limit: int) -> tuple[int, int]:
    """The (size, limit) a message names, else the given fallbacks."""
    found = _SIZES.search(text)
    return (int(found[1]), int(found[2])) if found else (size, limit)


def raise_for_reply(reply: CallReplyData, request: CallRequestData | CastRequestData) -> None:
    """Raise the error a non-OK reply stands for; return if it is OK.

    Args:
        reply: what :meth:`~hub.messaging.rpc.RpcClient.call` or
            :meth:`~hub.messaging.rpc.RpcClient.cast` returned.
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
# Protobuf conversion (the only code that builds or reads rpc.proto messages)


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


def _call_request_to_pb(request: CallRequestData) -> Any:
    return pb.CallRequest(
        schema=SCHEMA,
        hub_id=request.hub_id,
        child_id=request.child_id,
        fencing_token=request.fencing_token,
        payload=request.payload,
        codec=request.codec,
        idempotency_key=request.idempotency_key,
        all_replicas=request.all_replicas,
    )


def _cast_request_to_pb(request: CastRequestData) -> Any:
    return pb.CastRequest(
        schema=SCHEMA,
        hub_id=request.hub_id,
        child_id=request.child_id,
        fencing_token=request.fencing_token,
        payload=request.payload,
        codec=request.codec,
        idempotency_key=request.idempotency_key,
    )


def _call_request_from_pb(message: pb.CallRequest) -> CallRequestData:
    return CallRequestData(
        hub_id=message.hub_id,
        child_id=message.child_id,
        payload=message.payload,
        codec=message.codec,
        fencing_token=message.fencing_token,
        idempotency_key=message.idempotency_key,
        all_replicas=message.all_replicas,
    )


def _cast_request_from_pb(message: pb.CastRequest) -> CastRequestData:
    return CastRequestData(
        hub_id=message.hub_id,
        child_id=message.child_id,
        payload=message.payload,
        codec=message.codec,
        fencing_token=message.fencing_token,
        idempotency_key=message.idempotency_key,
    )
