"""A tiny JSON HTTP/1.1 server on asyncio streams: just enough for the tenants front.

Why not a web framework: the front has three routes and must start and stop with the node
(``processhub_node(hub)`` is cancelled when the node drains), which asyncio's own server
does in a few lines, without a dependency.

One request per connection (every response says ``Connection: close``). Request heads are
bounded (:data:`MAX_HEAD`) and must arrive within ``read_timeout``; a request body (none of
the routes needs one) is read, up to :data:`MAX_BODY`, and ignored. The handler's
exceptions become 500. :func:`serve` owns one task per open connection: when it is
cancelled it stops listening, lets requests in flight finish within ``shutdown_grace``
seconds, and cancels the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from hub.operate.http import parse_bind

__all__ = ["MAX_BODY", "MAX_HEAD", "Handler", "Request", "Response", "serve"]

log = logging.getLogger("examples.tenants.httpd")

#: Largest request line plus headers, in bytes.
MAX_HEAD = 8192
#: Largest request body read (and discarded), in bytes.
MAX_BODY = 65536


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed request: method, path (percent-decoding left to the handler) and query."""

    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Response:
    """A JSON response."""

    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response]]


async def serve(
    bind: str,
    handler: Handler,
    *,
    on_listening: Callable[[str], None] | None = None,
    read_timeout: float = 5.0,
    shutdown_grace: float = 2.0,
) -> None:
    """Serve ``handler`` on ``bind`` (``"host:port"``, port 0 picks one) until cancelled.

    ``on_listening`` gets the bound ``"host:port"`` once the socket listens.

    Raises:
        ConfigError: ``bind`` is not ``host:port``.
        OSError: the address cannot be bound.
    """
    host, port = parse_bind(bind)
    connections: set[asyncio.Task[Any]] = set()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        connections.add(task)
        try:
            response = await _read_and_handle(reader, handler, read_timeout)
            await _write(writer, response)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away: nobody to answer
        finally:
            connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    server = await asyncio.start_server(connected, host, port, limit=MAX_HEAD)
    bound_host, bound_port = server.sockets[0].getsockname()[:2]
    address = f"[{bound_host}]:{bound_port}" if ":" in bound_host else f"{bound_host}:{bound_port}"
    log.info("tenants front listening", extra={"address": address})
    if on_listening is not None:
        on_listening(address)
    try:
        await asyncio.Event().wait()
    finally:
        server.close()  # no new connections from here on
        if connections:
            await asyncio.wait(set(connections), timeout=shutdown_grace)
        for task in set(connections):
            task.cancel()
        if connections:
            await asyncio.wait(set(connections))
        await server.wait_closed()


async def _read_and_handle(
    reader: asyncio.StreamReader, handler: Handler, read_timeout: float
) -> Response:
    try:
        async with asyncio.timeout(read_timeout):
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            length = _content_length(lines[1:])
            if length is None or length > MAX_BODY:
                return _error(HTTPStatus.BAD_REQUEST, "bad or too large Content-Length")
            if length:
                await reader.readexactly(length)
    except TimeoutError:
        return _error(HTTPStatus.REQUEST_TIMEOUT, "request timeout")
    except asyncio.LimitOverrunError:
        return _error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return _error(HTTPStatus.BAD_REQUEST, "malformed request line")
    method, target, _ = parts
    url = urlsplit(target)
    request = Request(method=method, path=url.path, query=dict(parse_qsl(url.query)))
    try:
        return await handler(request)
    except Exception:
        log.exception("%s %s failed", method, url.path)
        return _error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")


def _content_length(header_lines: list[str]) -> int | None:
    """The request's Content-Length (0 when absent), or None when it is malformed."""
    for line in header_lines:
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() == "content-length":
            value = value.strip()
            return int(value) if value.isdigit() else None
    return 0


def _error(status: HTTPStatus, message: str) -> Response:
    return Response(int(status), {"error": message})


async def _write(writer: asyncio.StreamWriter, response: Response) -> None:
    body = json.dumps(response.body, separators=(",", ":")).encode() + b"\n"
    head = [
        f"HTTP/1.1 {response.status} {HTTPStatus(response.status).phrase}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        "Cache-Control: no-store",
        "Connection: close",
        *(f"{name}: {value}" for name, value in response.headers.items()),
    ]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
    async with asyncio.timeout(10.0):
        await writer.drain()
