"""An asyncio TCP proxy for simulating network faults between one node and etcd.

::

    async with TcpProxy(etcd_endpoint) as proxy:
        hub = Hub(endpoints=[proxy.endpoint], ...)
        proxy.blackhole()      # silent partition: connections stay open, nothing flows
        ...
        proxy.heal()           # traffic flows again
        await proxy.reset()    # every connection is closed abruptly (RST)

Semantics of :meth:`TcpProxy.blackhole` — a *silent* partition, as when packets are
dropped on the wire: no byte, FIN or RST crosses the proxy in either direction;
existing connections stay open; new connections are accepted by the proxy but it does
not connect to the target until :meth:`TcpProxy.heal`. The proxy stops reading while
blackholed, so peers see their writes stall (their kernel buffers fill up) rather than
fail.

After :meth:`TcpProxy.heal`, bytes caught in the proxy or in kernel buffers during the
partition are currently delivered late (in order) unless the connection was closed
meanwhile, in which case they are dropped. Tests must not rely on either: a real
partition may lose them for good once a peer gives up, so treat them as *maybe
dropped*.

Each connection is handled by the task asyncio's stream server starts for it; that
task owns its two forwarding tasks through an :class:`asyncio.TaskGroup`, and
:meth:`TcpProxy.reset` / :meth:`TcpProxy.stop` wait for every handler to finish, so no
task outlives the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from types import TracebackType
from typing import Self

__all__ = ["TcpProxy"]

_CHUNK = 64 * 1024
_CONNECT_TIMEOUT = 10.0
_LINGER_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


def _parse_target(target: str) -> tuple[str, int]:
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"target must be 'host:port', got {target!r}")
    return host.strip("[]"), int(port)


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close a connection abruptly: the peer sees a reset, buffered bytes are dropped."""
    transport = writer.transport
    if transport.is_closing():
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    transport.abort()


class _Connection:
    """One client connection and, once connected, its upstream twin."""

    def __init__(self, task: asyncio.Task[None], client: asyncio.StreamWriter) -> None:
        self.task = task
        self.writers = [client]
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def abort(self) -> None:
        for writer in self.writers:
            _abort(writer)

    def close(self) -> None:
        for writer in self.writers:
            if not writer.transport.is_closing():
                writer.close()


class TcpProxy:
    """Forward TCP connections from a free loopback port to ``target`` (``"host:port"``).

    Args:
        target: where to forward, ``"host:port"``.
        host: address to listen on.
        port: port to listen on; 0 picks a free one on the first :meth:`start`, and
            later starts reuse it so :attr:`endpoint` stays stable across stop/start.
    """

    def __init__(self, target: str, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._target = target
        self._target_host, self._target_port = _parse_target(target)
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._forwarding = asyncio.Event()
        self._forwarding.set()
        self._connections: set[_Connection] = set()
        self._accepting = False
        self._total_connections = 0

    # ----------------------------------------------------------------- properties

    @property
    def endpoint(self) -> str:
        """``"127.0.0.1:PORT"`` to give clients instead of the target."""
        if self._port == 0:
            raise RuntimeError("TcpProxy has no port yet: await start() first")
        return f"{self._host}:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    @property
    def target(self) -> str:
        return self._target

    @property
    def blackholed(self) -> bool:
        return not self._forwarding.is_set()

    @property
    def connection_count(self) -> int:
        """Connections currently open through the proxy."""
        return len(self._connections)

    @property
    def total_connections(self) -> int:
        """Connections accepted since construction."""
        return self._total_connections

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start listening. Raises RuntimeError if already started."""
        if self._server is not None:
            raise RuntimeError("TcpProxy already started")
        self._server = await asyncio.start_server(self._handle, self._host, self._port)
        self._port = int(self._server.sockets[0].getsockname()[1])
        self._accepting = True

    def blackhole(self) -> None:
        """Silently stop forwarding in both directions; connections stay open."""
        self._forwarding.clear()

    def heal(self) -> None:
        """Resume forwarding. Bytes held during the partition may be delivered or dropped."""
        self._forwarding.set()

    async def reset(self) -> None:
        """Close every current connection abruptly (RST to both sides); keep listening."""
        while self._connections:
            connections = list(self._connections)
            for connection in connections:
                connection.abort()
                connection.task.cancel()
            await asyncio.gather(*(c.finished for c in connections))

    async def stop(self) -> None:
        """Stop listening and reset every connection. Idempotent."""
        server = self._server
        if server is None:
            return
        self._accepting = False
        server.close()
        # A connection accepted just before close() may start its handler a few loop
        # iterations later; it sees ``_accepting`` is false and finishes at once.
        for _ in range(3):
            await self.reset()
            await asyncio.sleep(0)
        await self.reset()
        await server.wait_closed()
        self._server = None

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

    def __repr__(self) -> str:
        state = "stopped" if self._server is None else "blackholed" if self.blackholed else "up"
        port = self._port or "auto"
        return f"<TcpProxy {self._host}:{port} -> {self._target} {state}>"

    # ------------------------------------------------------------------ plumbing

    async def _handle(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        connection = _Connection(task, client_writer)
        self._connections.add(connection)
        self._total_connections += 1
        try:
            if not self._accepting:
                return
            # Silent partition: the proxy accepted, but the SYN "never reaches" the target.
            await self._forwarding.wait()
            try:
                async with asyncio.timeout(_CONNECT_TIMEOUT):
                    upstream_reader, upstream_writer = await asyncio.open_connection(
                        self._target_host, self._target_port
                    )
            except (OSError, TimeoutError):
                connection.abort()  # target unreachable: the client sees a reset
                return
            connection.writers.append(upstream_writer)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._pump(client_reader, upstream_writer, connection))
                tg.create_task(self._pump(upstream_reader, client_writer, connection))
        except asyncio.CancelledError:
            # Only reset()/stop() cancel handlers. End normally: asyncio's stream server
            # reports a cancelled handler task as an error on Python 3.11.
            connection.abort()
        finally:
            connection.close()
            self._connections.discard(connection)
            if not connection.finished.done():
                connection.finished.set_result(None)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        connection: _Connection,
    ) -> None:
        """Copy one direction until EOF; on an error, reset the whole connection."""
        try:
            while True:
                data = await reader.read(_CHUNK)
                if writer.transport.is_closing():
                    return  # the other side is gone: nothing left to deliver
                # Hold the chunk (or the EOF) while partitioned; stop reading meanwhile.
                await self._forwarding.wait()
                if writer.transport.is_closing():
                    return
                if not data:
                    break
                writer.write(data)
                await writer.drain()
            if not writer.transport.is_closing() and writer.can_write_eof():
                writer.write_eof()
        except OSError:  # ConnectionResetError, BrokenPipeError, ...
            connection.abort()
