"""TcpProxy against a tiny local echo server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from support.proxy import TcpProxy
from support.wait import wait_until

QUIET = 0.3  # how long "nothing arrives" is observed


@pytest.fixture
async def echo_endpoint() -> AsyncIterator[str]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"127.0.0.1:{port}"


@pytest.fixture
async def proxy(no_leaked_tasks: None, echo_endpoint: str) -> AsyncIterator[TcpProxy]:
    async with TcpProxy(echo_endpoint) as p:
        yield p


async def _connect(endpoint: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = endpoint.rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


async def _read_exactly(reader: asyncio.StreamReader, n: int) -> bytes:
    async with asyncio.timeout(5):
        return await reader.readexactly(n)


async def _assert_silent(reader: asyncio.StreamReader) -> None:
    """Nothing arrives and the connection is not closed (no EOF, no reset)."""
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(QUIET):
            await reader.read(1)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except ConnectionError:
        pass


async def test_forwards_both_ways(proxy: TcpProxy) -> None:
    assert proxy.endpoint.startswith("127.0.0.1:") and proxy.port > 0
    reader, writer = await _connect(proxy.endpoint)
    try:
        payload = bytes(range(256)) * 1024  # 256 KiB, several chunks
        writer.write(payload)
        await writer.drain()
        assert await _read_exactly(reader, len(payload)) == payload
        await wait_until(lambda: proxy.connection_count == 1, timeout=5)
    finally:
        await _close(writer)
    await wait_until(lambda: proxy.connection_count == 0, timeout=5, message="not released")


async def test_half_close_propagates(proxy: TcpProxy) -> None:
    reader, writer = await _connect(proxy.endpoint)
    try:
        writer.write(b"last words")
        writer.write_eof()
        assert await _read_exactly(reader, 10) == b"last words"
        async with asyncio.timeout(5):
            assert await reader.read() == b""  # echo server closed after our EOF
    finally:
        await _close(writer)


async def test_blackhole_is_silent_and_heal_resumes(proxy: TcpProxy) -> None:
    reader, writer = await _connect(proxy.endpoint)
    try:
        writer.write(b"before")
        assert await _read_exactly(reader, 6) == b"before"

        proxy.blackhole()
        assert proxy.blackholed
        writer.write(b"during")
        await writer.drain()
        await _assert_silent(reader)
        assert not writer.is_closing() and proxy.connection_count == 1

        proxy.heal()
        assert not proxy.blackholed
        writer.write(b"after")
        # Bytes sent during the partition may be delivered late or dropped; ours are
        # held, so the stream stays intact.
        data = b""
        async with asyncio.timeout(5):
            while not data.endswith(b"after"):
                chunk = await reader.read(100)
                assert chunk, "connection closed by heal()"
                data += chunk
        assert data in (b"duringafter", b"after")
    finally:
        await _close(writer)


async def test_blackhole_accepts_new_connections_without_forwarding(proxy: TcpProxy) -> None:
    proxy.blackhole()
    reader, writer = await _connect(proxy.endpoint)  # accepted...
    try:
        writer.write(b"hello")
        await writer.drain()
        await _assert_silent(reader)  # ...but nothing comes back
        proxy.heal()
        writer.write(b"!")
        data = b""
        async with asyncio.timeout(5):
            while not data.endswith(b"!"):
                chunk = await reader.read(100)
                assert chunk
                data += chunk
        assert data in (b"hello!", b"!")
    finally:
        await _close(writer)


async def test_reset_closes_connections_but_keeps_listening(proxy: TcpProxy) -> None:
    reader, writer = await _connect(proxy.endpoint)
    writer.write(b"ping")
    assert await _read_exactly(reader, 4) == b"ping"

    await proxy.reset()

    assert proxy.connection_count == 0
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        async with asyncio.timeout(5):
            data = await reader.read(100)
            if not data:
                raise asyncio.IncompleteReadError(b"", 1)
    await _close(writer)

    reader, writer = await _connect(proxy.endpoint)
    try:
        writer.write(b"again")
        assert await _read_exactly(reader, 5) == b"again"
    finally:
        await _close(writer)


async def test_reset_during_blackhole(proxy: TcpProxy) -> None:
    proxy.blackhole()
    reader, writer = await _connect(proxy.endpoint)
    await wait_until(lambda: proxy.connection_count == 1, timeout=5)
    await proxy.reset()
    assert proxy.connection_count == 0
    async with asyncio.timeout(5):
        try:
            assert await reader.read(100) == b""
        except ConnectionError:
            pass
    await _close(writer)


async def test_target_down_resets_client(no_leaked_tasks: None) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()  # nothing listens on ``port`` any more
    async with TcpProxy(f"127.0.0.1:{port}") as proxy:
        reader, writer = await _connect(proxy.endpoint)
        async with asyncio.timeout(5):
            try:
                assert await reader.read(100) == b""
            except ConnectionError:
                pass
        await _close(writer)


async def test_stop_closes_everything_and_restart_keeps_port(
    no_leaked_tasks: None, echo_endpoint: str
) -> None:
    proxy = TcpProxy(echo_endpoint)
    await proxy.start()
    endpoint = proxy.endpoint
    reader, writer = await _connect(endpoint)
    writer.write(b"x")
    assert await _read_exactly(reader, 1) == b"x"

    await proxy.stop()
    await proxy.stop()  # idempotent
    assert proxy.connection_count == 0
    with pytest.raises(OSError):
        await _connect(endpoint)
    await _close(writer)

    await proxy.start()
    try:
        assert proxy.endpoint == endpoint
        reader, writer = await _connect(endpoint)
        writer.write(b"y")
        assert await _read_exactly(reader, 1) == b"y"
        await _close(writer)
    finally:
        await proxy.stop()


def test_rejects_bad_target() -> None:
    with pytest.raises(ValueError, match="host:port"):
        TcpProxy("no-port")
