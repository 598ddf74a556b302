"""Node HTTP endpoints: health, readiness, Prometheus metrics and a JSON read model.

The server lives here; what it serves lives beside it: the JSON read model in
:mod:`hub.operate.views`, the metrics in :mod:`hub.operate.metrics`, the ``/api/events``
feed in :mod:`hub.operate.feed`. All of them read the node through
:class:`~hub.operate.observed.ObservedHub`, so none imports :mod:`hub.hub`; this module
re-exports their public names.

:class:`HttpServer` is a deliberately tiny HTTP/1.1 server on :func:`asyncio.start_server`:

=================  ==============================================================
``GET /healthz``   200 ``ok`` while the event loop answers.
``GET /readyz``    200 ``ready`` when the hub runs, holds a valid lease, its informer has
                   synced, it is not draining and not partitioned; else 503 and a
                   one-line reason.
``GET /metrics``   Prometheus text format.
``GET /api/nodes``     JSON: members (address, state, load, capacity...).
``GET /api/children``  JSON: children (node, state, token, restarts...).
``GET /``          The live dashboard (``hub/operate/dashboard.html``: one self-contained page).
``GET /api/events``    Server-Sent Events feeding the dashboard (see :class:`EventFeed`).
=================  ==============================================================

Other paths answer 404, other methods 405. Every response closes its connection. Request
heads are bounded (:data:`MAX_REQUEST_HEAD`) and must arrive within ``read_timeout``;
connections beyond ``max_connections`` get 503 at once. Handlers only read memory: nothing
blocks the event loop but the (linear) rendering of the answer.

``/api/events`` is the one long-lived response: ``text/event-stream`` without a length,
ended by the server. On connect it sends a ``snapshot`` event (``nodes`` and ``children``
shaped as ``/api/nodes`` and ``/api/children``, plus the recent ``events``), then a new
``snapshot`` after registry batches (coalesced: at most one per
:data:`SNAPSHOT_INTERVAL`), an ``event`` message per cluster event (children started,
moved, restarted, failed or stopped anywhere, derived from the registry; nodes joined or
left; this node's partition changes), and a comment line every :data:`HEARTBEAT_INTERVAL`
seconds. Each client has a bounded queue: a client
that cannot keep up is dropped, the node never waits for it.

Tasks: :func:`asyncio.start_server` runs one task per connection; the server tracks them and
cancels and awaits every one in :meth:`HttpServer.stop` (event streams are first told to
end, and get a moment to do so).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import json
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST

from hub.errors import ConfigError
from hub.logs import fields, get_logger
from hub.operate.feed import SNAPSHOT_INTERVAL, EventFeed, child_event_record, event_record
from hub.operate.metrics import HANDOVER_BUCKETS, HubMetrics
from hub.operate.observed import ObservedHub
from hub.operate.views import CHILD_STATES, children_view, nodes_view, readiness

__all__ = [
    "CHILD_STATES",
    "HANDOVER_BUCKETS",
    "HEARTBEAT_INTERVAL",
    "MAX_REQUEST_HEAD",
    "SNAPSHOT_INTERVAL",
    "EventFeed",
    "HttpServer",
    "HubMetrics",
    "child_event_record",
    "children_view",
    "event_record",
    "nodes_view",
    "parse_bind",
    "readiness",
]

log = get_logger("hub.operate.http")

#: Largest accepted request line plus headers, in bytes (larger: 431).
MAX_REQUEST_HEAD = 8192
#: Seconds between two keep-alive comments on an idle ``/api/events`` stream.
HEARTBEAT_INTERVAL = 15.0

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"
_HTML = "text/html; charset=utf-8"
_Response = tuple[int, str, bytes]
#: Returned by the ``/api/events`` route: stream instead of answering (compared by identity).
_STREAM: _Response = (200, "text/event-stream", b"")
#: Seconds event streams get to end on their own in :meth:`HttpServer.stop`.
_STREAM_GRACE = 1.0


def parse_bind(bind: str) -> tuple[str, int]:
    """``"host:port"`` (``"[v6]:port"``) -> ``(host, port)``.

    Raises:
        ConfigError: not of that form.
    """
    host, sep, port_text = bind.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"http bind address must be host:port, got {bind!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


class HttpServer:
    """A node's HTTP endpoints (see the module docstring).

    Args:
        hub: the node.
        bind: ``"host:port"``; port 0 picks a free one (:meth:`start` returns it).
        metrics: the hub's metrics; default :meth:`HubMetrics.of` ``(hub)``.
        read_timeout: seconds a client has to send its request head.
        write_timeout: seconds a client has to take the response.
        max_connections: connections served at once (event streams included); more get 503.
        heartbeat: seconds between keep-alive comments on an idle event stream.

    Raises:
        ConfigError: ``bind`` is not ``host:port``.
    """

    def __init__(
        self,
        hub: ObservedHub,
        bind: str = "127.0.0.1:0",
        *,
        metrics: HubMetrics | None = None,
        read_timeout: float = 5.0,
        write_timeout: float = 10.0,
        max_connections: int = 64,
        heartbeat: float = HEARTBEAT_INTERVAL,
    ) -> None:
        self.hub = hub
        self.host, self.port = parse_bind(bind)
        self.metrics = metrics if metrics is not None else HubMetrics.of(hub)
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.max_connections = max_connections
        self.heartbeat = heartbeat
        #: The ``/api/events`` feed; observes the hub while the server runs.
        self.feed = EventFeed(hub)
        self.address = ""
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._routes: dict[str, Callable[[], _Response]] = {
            "/healthz": lambda: (200, _TEXT, b"ok\n"),
            "/readyz": self._readyz,
            "/metrics": lambda: (200, CONTENT_TYPE_LATEST, self.metrics.render()),
            "/api/nodes": lambda: _json(nodes_view(self.hub)),
            "/api/children": lambda: _json(children_view(self.hub)),
            "/": lambda: (200, _HTML, dashboard_html()),
            "/api/events": lambda: _STREAM,
        }

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> str:
        """Listen; returns the bound ``"host:port"``.

        Raises:
            RuntimeError: already started.
            OSError: the address cannot be bound.
        """
        if self._server is not None:
            raise RuntimeError("HttpServer already started")
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=MAX_REQUEST_HEAD
        )
        self.feed.open()
        host, port = self._server.sockets[0].getsockname()[:2]
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        log.info(
            "http endpoints listening",
            extra=fields(node_id=self.hub.node_id, address=self.address),
        )
        return self.address

    async def stop(self) -> None:
        """Stop listening and end every open connection; idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        self.feed.close()  # event streams end on their own...
        if self.feed.clients:
            await asyncio.wait(set(self._connections), timeout=_STREAM_GRACE)
        connections = set(self._connections)  # ...what remains is cancelled
        for task in connections:
            task.cancel()
        if connections:
            await asyncio.wait(connections)
        await server.wait_closed()

    # -- connections -------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            if len(self._connections) > self.max_connections:
                response: _Response = (503, _TEXT, b"too many connections\n")
            else:
                response = await self._read_and_route(reader)
            if response is _STREAM:
                await self._stream(writer)
            else:
                await self._respond(writer, response)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away or stopped reading: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                # Bounded: a client that never reads cannot hold the connection open.
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()
            if task is not None:
                self._connections.discard(task)

    async def _read_and_route(self, reader: asyncio.StreamReader) -> _Response:
        try:
            async with asyncio.timeout(self.read_timeout):
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            return 408, _TEXT, b"request timeout\n"
        except asyncio.LimitOverrunError:
            return 431, _TEXT, b"request head too large\n"
        except asyncio.IncompleteReadError as exc:
            if len(exc.partial) >= MAX_REQUEST_HEAD:
                return 431, _TEXT, b"request head too large\n"
            raise
        request_line = head.split(b"\r\n", 1)[0]
        try:
            method, target, version = request_line.decode("ascii").split(" ")
        except (UnicodeDecodeError, ValueError):
            return 400, _TEXT, b"malformed request line\n"
        if not version.startswith("HTTP/1."):
            return 400, _TEXT, b"unsupported protocol version\n"
        route = self._routes.get(urlsplit(target).path)
        if route is None:
            return 404, _TEXT, b"not found\n"
        if method != "GET":
            return 405, _TEXT, b"method not allowed\n"
        try:
            return route()
        except Exception:
            log.exception(
                "http %s %s failed", method, target, extra=fields(node_id=self.hub.node_id)
            )
            return 500, _TEXT, b"internal error\n"

    async def _respond(self, writer: asyncio.StreamWriter, response: _Response) -> None:
        status, content_type, body = response
        head = (
            f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Cache-Control: no-store\r\n"
            "Connection: close\r\n"
        )
        if status == 405:
            head += "Allow: GET\r\n"
        writer.write(head.encode("ascii") + b"\r\n" + body)
        async with asyncio.timeout(self.write_timeout):
            await writer.drain()

    async def _stream(self, writer: asyncio.StreamWriter) -> None:
        """Serve ``/api/events`` until the feed ends it, the client goes, or it lags."""
        client = self.feed.subscribe()
        try:
            writer.write(
                b"HTTP/1.1 200 OK\r\n"
                b"Content-Type: text/event-stream; charset=utf-8\r\n"
                b"Cache-Control: no-store\r\n"
                b"X-Accel-Buffering: no\r\n"
                b"Connection: close\r\n\r\n"
                b"retry: 2000\n\n"
            )
            while True:
                try:
                    async with asyncio.timeout(self.heartbeat):
                        message = await client.queue.get()
                except TimeoutError:
                    message = b": keep-alive\n\n"
                if message is None:
                    return
                writer.write(message)
                async with asyncio.timeout(self.write_timeout):
                    await writer.drain()
        finally:
            self.feed.unsubscribe(client)

    # -- routes ------------------------------------------------------------------------

    def _readyz(self) -> _Response:
        reason = readiness(self.hub)
        if reason is None:
            return 200, _TEXT, b"ready\n"
        return 503, _TEXT, reason.encode("utf-8", "replace") + b"\n"


_dashboard: bytes | None = None


def dashboard_html() -> bytes:
    """The dashboard page (``hub/operate/dashboard.html``, package data), read once."""
    global _dashboard
    if _dashboard is None:
        _dashboard = (
            importlib.resources.files("hub.operate").joinpath("dashboard.html").read_bytes()
        )
    return _dashboard


def _json(document: dict[str, Any]) -> _Response:
    return 200, _JSON, json.dumps(document, separators=(",", ":")).encode("utf-8") + b"\n"
