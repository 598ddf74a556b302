"""Node-to-node transport for ``call``/``cast``: the ``NodeRpc`` gRPC service, server and client.

The caller's node resolves a child to the address its owner advertises, then sends one
unary RPC there: ``Call`` runs the worker's ``handle_call`` and carries its result back,
``Cast`` asks the owner to enqueue a message for ``handle_cast`` and carries back whether it
was taken. Payloads are opaque bytes plus a codec name (:mod:`hub.messaging.payload`); protobuf
types never leave this layer: callers and the :class:`Dispatcher` see plain dataclasses.

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
layer creates none itself.

Layout: this module is the public namespace; import from here. The implementation lives in
private modules, one concept each: ``_rpc_config`` (:class:`RpcConfig`, :class:`ServerTls`,
the gRPC options), ``_rpc_wire`` (the request and reply dataclasses, their protobuf form,
the status/error table and :func:`raise_for_reply`), ``_rpc_server`` (:class:`RpcServer`,
:class:`Dispatcher`) and ``_rpc_client`` (:class:`RpcClient`, :func:`map_errors`). All of
them log as ``hub.messaging.rpc``.

Warning:
    The token travels as metadata. Without TLS anyone on the path can read it: enable TLS
    (``RpcConfig.tls`` and ``client_tls``) on any network you do not fully trust.
"""

from __future__ import annotations

from hub.messaging._rpc_client import RpcClient, map_errors, translate
from hub.messaging._rpc_config import (
    DEFAULT_MAX_MESSAGE_BYTES,
    KEEPALIVE_TIME_MS,
    KEEPALIVE_TIMEOUT_MS,
    MIN_PEER_PING_INTERVAL_MS,
    RECONNECT_BACKOFF_MS,
    RpcConfig,
    ServerTls,
    channel_options,
    server_options,
)
from hub.messaging._rpc_server import Dispatcher, RpcServer
from hub.messaging._rpc_wire import (
    SCHEMA,
    CallReplyData,
    CallRequestData,
    CastRequestData,
    ReplyStatus,
    raise_for_reply,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "KEEPALIVE_TIMEOUT_MS",
    "KEEPALIVE_TIME_MS",
    "MIN_PEER_PING_INTERVAL_MS",
    "RECONNECT_BACKOFF_MS",
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
    "translate",
]
