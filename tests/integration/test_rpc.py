"""hub.messaging.rpc over real loopback sockets, against a fake Dispatcher (no etcd).

Covers: echo call and cast; every reply status and every dispatcher CallError becomes its
typed error; another hub's request, a missing or wrong token, and TLS without the right
certificates are refused; oversized messages fail as PayloadTooLarge while the server
keeps serving; deadlines (CallTimeout, with the remote handler cancelled); unreachable
addresses fail fast; a failing dispatcher cannot take the server down; 500 concurrent
calls; and nothing leaks (``no_leaked_tasks``).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from support.certs import Pki, make_pki
from support.wait import wait_until

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
from hub.messaging.payload import decode_payload, encode_payload
from hub.messaging.rpc import (
    CallReplyData,
    CallRequestData,
    CastRequestData,
    ReplyStatus,
    RpcClient,
    RpcConfig,
    RpcServer,
    ServerTls,
    raise_for_reply,
)

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")

HUB = "hub-a"
NODE = "node-1"
LIMIT = 64 * 1024  # a small size limit keeps the oversized tests fast


class FakeDispatcher:
    """Behaves according to the child id: ``echo``, ``status:<NAME>``, ``raise:<n>``,
    ``hang``, ``too-slow``, ``unmapped``, ``boom``, ``huge``, ``not-a-reply``."""

    def __init__(self) -> None:
        self.calls: list[CallRequestData] = []
        self.casts: list[CastRequestData] = []
        self.cancelled = 0

    async def dispatch_call(self, request: CallRequestData) -> CallReplyData:
        self.calls.append(request)
        reply: CallReplyData = await self._behave(request)
        return reply

    async def dispatch_cast(self, request: CastRequestData) -> CallReplyData:
        self.casts.append(request)
        reply: CallReplyData = await self._behave(request)
        return reply

    async def _behave(self, request: CallRequestData | CastRequestData) -> Any:
        kind, _, arg = request.child_id.partition(":")
        if kind == "echo":
            return CallReplyData(
                ReplyStatus.OK, request.payload, request.codec, node_id=NODE, fencing_token=7
            )
        if kind == "status":
            return CallReplyData(
                ReplyStatus[arg],
                error_type="ValueError",
                error_message="why: 5000 bytes exceeds 4096",
                node_id=NODE,
                fencing_token=9,
            )
        if kind == "raise":
            raise RAISED[int(arg)]
        if kind == "hang":
            try:
                await asyncio.Event().wait()  # a handler that never returns
            finally:
                self.cancelled += 1
        if kind == "too-slow":  # the hub gave up waiting (e.g. for room in the mailbox)
            raise CallTimeout(request.child_id, NODE, "no room") if arg else TimeoutError()
        if kind == "unmapped":  # a CallError without a reply status (forwarding failed)
            raise NodeUnreachable(request.child_id, "node-2", "forwarding failed")
        if kind == "boom":
            raise RuntimeError("a dispatcher bug")
        if kind == "huge":
            return CallReplyData(ReplyStatus.OK, b"x" * (LIMIT + 1), "bytes", node_id=NODE)
        if kind == "not-a-reply":
            return {"status": "OK"}
        raise AssertionError(f"unexpected child id {request.child_id!r}")


# What a dispatcher may raise, and what the caller then gets (by raise_for_reply).
RAISED: list[CallError] = [
    ChildNotFound("c", NODE, "no spec"),
    ChildNotRunning("c", NODE, "starting"),
    ChildMoved("c", NODE, "now on node-2"),
    StaleHandle("c", NODE, 3, 4),
    NotCallable("c", NODE, "no handle_call"),
    HandlerError("c", NODE, "KeyError", "'missing'"),
    MailboxFull("c", NODE, "1000 queued"),
    PayloadTooLarge("c", NODE, 5000, 4096),
    BadPayload("c", NODE, "not valid JSON"),
    WrongHub("c", NODE, "elsewhere"),
    NotSerializable("c", NODE, "Object of type set is not JSON serializable"),
]


def call_request(child_id: str, payload: bytes = b"{}", **fields: Any) -> CallRequestData:
    return CallRequestData(hub_id=HUB, child_id=child_id, payload=payload, codec="json", **fields)


def cast_request(child_id: str, payload: bytes = b"{}", **fields: Any) -> CastRequestData:
    return CastRequestData(hub_id=HUB, child_id=child_id, payload=payload, codec="json", **fields)


@pytest.fixture
def dispatcher() -> FakeDispatcher:
    return FakeDispatcher()


@pytest.fixture
async def server(dispatcher: FakeDispatcher) -> AsyncIterator[RpcServer]:
    config = RpcConfig(max_message_bytes=LIMIT)
    async with RpcServer(config, dispatcher, HUB, node_id=NODE) as server:
        yield server


@pytest.fixture
async def client() -> AsyncIterator[RpcClient]:
    async with RpcClient(RpcConfig(max_message_bytes=LIMIT)) as client:
        yield client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------ happy paths


async def test_echo_call(server: RpcServer, client: RpcClient, dispatcher: FakeDispatcher) -> None:
    payload, _ = encode_payload({"op": "get", "keys": [1, 2, "three"]})
    request = call_request(
        "echo", payload, fencing_token=12, idempotency_key="k-1", all_replicas=True
    )
    reply = await client.call(server.address, request)
    raise_for_reply(reply, request)
    assert reply.is_ok and reply.status is ReplyStatus.OK
    assert decode_payload(reply.payload, reply.codec) == {"op": "get", "keys": [1, 2, "three"]}
    assert (reply.node_id, reply.fencing_token) == (NODE, 7)
    assert dispatcher.calls == [request]  # every field reached the dispatcher unchanged


async def test_echo_call_with_raw_bytes(server: RpcServer, client: RpcClient) -> None:
    payload, codec = encode_payload(b"\x00\xffraw")
    request = CallRequestData(HUB, "echo", payload, codec)
    reply = await client.call(server.address, request)
    assert (reply.payload, reply.codec) == (b"\x00\xffraw", "bytes")


async def test_cast(server: RpcServer, client: RpcClient, dispatcher: FakeDispatcher) -> None:
    request = cast_request("echo", b'"hello"', fencing_token=5, idempotency_key="k-2")
    reply = await client.cast(server.address, request)
    raise_for_reply(reply, request)
    assert reply.is_ok
    assert dispatcher.casts == [request]
    assert dispatcher.calls == []


async def test_advertised_address_is_what_start_returns(dispatcher: FakeDispatcher) -> None:
    port = free_port()
    config = RpcConfig(bind=f"127.0.0.1:{port}", advertise=f"node-1.example:{port}")
    async with RpcServer(config, dispatcher, HUB) as server:
        assert server.address == f"node-1.example:{port}"
    server = RpcServer(RpcConfig(), dispatcher, HUB)
    with pytest.raises(HubClosed):
        _ = server.address
    address = await server.start()
    try:
        assert address == server.address
        assert address.startswith("127.0.0.1:") and not address.endswith(":0")
    finally:
        await server.stop()


async def test_many_concurrent_calls(server: RpcServer, client: RpcClient) -> None:
    requests = [call_request("echo", encode_payload({"i": i})[0]) for i in range(500)]
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(client.call(server.address, r, timeout=30)) for r in requests]
    replies = [task.result() for task in tasks]
    assert all(reply.is_ok for reply in replies)
    assert [decode_payload(r.payload, r.codec)["i"] for r in replies] == list(range(500))


# ------------------------------------------------------------------ statuses and errors


STATUS_ERRORS: dict[ReplyStatus, type[CallError]] = {
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
    ReplyStatus.UNSPECIFIED: NodeInternalError,
}


def test_reply_status_mirrors_the_proto_enum() -> None:
    assert {s.name: s.value for s in ReplyStatus} == {
        name.removeprefix("STATUS_"): value for name, value in pb.Status.items()
    }
    assert set(STATUS_ERRORS) == set(ReplyStatus) - {ReplyStatus.OK}


@pytest.mark.parametrize("kind", ["call", "cast"])
@pytest.mark.parametrize("status", list(STATUS_ERRORS), ids=lambda s: s.name)
async def test_every_reply_status_maps_to_its_typed_error(
    server: RpcServer, client: RpcClient, status: ReplyStatus, kind: str
) -> None:
    child_id = f"status:{status.name}"
    request: CallRequestData | CastRequestData
    if kind == "call":
        request = call_request(child_id, fencing_token=3)
        reply = await client.call(server.address, request)
    else:
        request = cast_request(child_id, fencing_token=3)
        reply = await client.cast(server.address, request)
    assert reply.status is status and not reply.is_ok
    with pytest.raises(STATUS_ERRORS[status]) as info:
        raise_for_reply(reply, request)
    error = info.value
    assert type(error) is STATUS_ERRORS[status]
    assert (error.child_id, error.node_id) == (child_id, NODE)
    if isinstance(error, HandlerError):
        assert (error.remote_type, error.remote_message) == ("ValueError", reply.error_message)
    elif isinstance(error, StaleHandle):
        assert (error.token, error.current) == (3, 9)
    elif isinstance(error, PayloadTooLarge):
        assert (error.size, error.limit) == (5000, 4096)
    else:
        assert "why" in str(error)


@pytest.mark.parametrize("index", range(len(RAISED)), ids=lambda i: type(RAISED[i]).__name__)
async def test_a_dispatchers_call_error_reaches_the_caller_typed(
    server: RpcServer, client: RpcClient, index: int
) -> None:
    raised = RAISED[index]
    request = call_request(f"raise:{index}", fencing_token=3)
    reply = await client.call(server.address, request)
    with pytest.raises(CallError) as info:
        raise_for_reply(reply, request)
    error = info.value
    assert error.node_id == NODE and error.child_id == request.child_id
    if isinstance(raised, NotSerializable):  # a result the hub could not encode
        assert isinstance(error, HandlerError) and error.remote_type == "NotSerializable"
        return
    assert type(error) is type(raised)
    if isinstance(raised, HandlerError):
        assert isinstance(error, HandlerError)
        assert (error.remote_type, error.remote_message) == ("KeyError", "'missing'")
    elif isinstance(raised, StaleHandle):
        assert isinstance(error, StaleHandle)
        assert (error.token, error.current) == (3, 4)
    elif isinstance(raised, PayloadTooLarge):
        assert isinstance(error, PayloadTooLarge)
        assert (error.size, error.limit) == (5000, 4096)
    else:
        assert raised.reason in str(error)


async def test_another_hubs_request_is_refused(
    server: RpcServer, client: RpcClient, dispatcher: FakeDispatcher
) -> None:
    request = CallRequestData("hub-b", "echo", b"{}", "json")
    reply = await client.call(server.address, request)
    assert reply.status is ReplyStatus.WRONG_HUB and reply.node_id == NODE
    with pytest.raises(WrongHub, match="hub-a"):
        raise_for_reply(reply, request)
    cast = CastRequestData("hub-b", "echo", b"{}", "json")
    assert (await client.cast(server.address, cast)).status is ReplyStatus.WRONG_HUB
    assert dispatcher.calls == [] and dispatcher.casts == []
    assert issubclass(WrongHub, NodeUnreachable)  # callers re-resolve the address


async def test_a_request_without_schema_is_bad_payload(
    server: RpcServer, dispatcher: FakeDispatcher
) -> None:
    async with grpc.aio.insecure_channel(server.address) as channel:
        stub = pb_grpc.NodeRpcStub(channel)  # type: ignore[no-untyped-call]
        reply = await stub.Call(pb.CallRequest(hub_id=HUB, child_id="echo"), timeout=5)
    assert reply.status == pb.BAD_PAYLOAD and reply.schema == 1
    assert dispatcher.calls == []


# ------------------------------------------------------------------ authentication


async def test_token_is_required(dispatcher: FakeDispatcher) -> None:
    async with RpcServer(RpcConfig(token="s3cret"), dispatcher, HUB) as server:
        for config in (RpcConfig(), RpcConfig(token="wrong"), RpcConfig(token="s3cret-")):
            async with RpcClient(config) as client:
                with pytest.raises(RpcAuthError):
                    await client.call(server.address, call_request("echo"))
                with pytest.raises(RpcAuthError):
                    await client.cast(server.address, cast_request("echo"))
        assert dispatcher.calls == [] and dispatcher.casts == []
        async with RpcClient(RpcConfig(token="s3cret")) as client:
            assert (await client.call(server.address, call_request("echo"))).is_ok
            assert (await client.cast(server.address, cast_request("echo"))).is_ok


async def test_token_scheme_is_checked(dispatcher: FakeDispatcher) -> None:
    async with RpcServer(RpcConfig(token="s3cret"), dispatcher, HUB) as server:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.NodeRpcStub(channel)  # type: ignore[no-untyped-call]
            request = pb.CallRequest(schema=1, hub_id=HUB, child_id="echo")
            for value in ("basic s3cret", "s3cret", "bearer"):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.Call(request, timeout=5, metadata=(("authorization", value),))
                assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
            reply = await stub.Call(
                request, timeout=5, metadata=(("authorization", "Bearer s3cret"),)
            )
            assert reply.status == pb.OK


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


async def test_mutual_tls(pki: Pki, dispatcher: FakeDispatcher, tmp_path: Path) -> None:
    tls = ServerTls(pki.server_cert, pki.server_key, client_ca_file=pki.ca_cert)
    async with RpcServer(RpcConfig(tls=tls), dispatcher, HUB) as server:
        refused = [
            RpcConfig(),  # plaintext
            RpcConfig(client_tls=TlsConfig(ca_file=pki.ca_cert)),  # no client certificate
        ]
        for config in refused:
            async with RpcClient(config) as client:
                with pytest.raises(NodeUnreachable):
                    await client.call(server.address, call_request("echo"))
        other = make_pki(tmp_path / "other", "another CA")
        wrong_ca = TlsConfig(other.ca_cert, pki.client_cert, pki.client_key)
        async with RpcClient(RpcConfig(client_tls=wrong_ca)) as client:
            with pytest.raises(RpcAuthError):  # we refuse the server's certificate
                await client.call(server.address, call_request("echo"))
        assert dispatcher.calls == []
        good = TlsConfig(pki.ca_cert, pki.client_cert, pki.client_key)
        async with RpcClient(RpcConfig(client_tls=good)) as client:
            assert (await client.call(server.address, call_request("echo"))).is_ok
        named = TlsConfig(pki.ca_cert, pki.client_cert, pki.client_key, server_name="localhost")
        async with RpcClient(RpcConfig(client_tls=named)) as client:
            assert (await client.cast(server.address, cast_request("echo"))).is_ok


async def test_server_only_tls(pki: Pki, dispatcher: FakeDispatcher) -> None:
    tls = ServerTls(pki.server_cert, pki.server_key)
    async with RpcServer(RpcConfig(tls=tls), dispatcher, HUB) as server:
        async with RpcClient(RpcConfig()) as client:
            with pytest.raises(NodeUnreachable):
                await client.call(server.address, call_request("echo"))
        async with RpcClient(RpcConfig(client_tls=TlsConfig(pki.ca_cert))) as client:
            assert (await client.call(server.address, call_request("echo"))).is_ok
        bad_name = TlsConfig(pki.ca_cert, server_name="not-the-server.example")
        async with RpcClient(RpcConfig(client_tls=bad_name)) as client:
            with pytest.raises(RpcAuthError):
                await client.call(server.address, call_request("echo"))


# ------------------------------------------------------------------ limits and failures


async def test_oversized_request_is_refused_and_the_server_keeps_serving(
    server: RpcServer, client: RpcClient, dispatcher: FakeDispatcher
) -> None:
    big = call_request("echo", b"x" * (LIMIT + 1))
    with pytest.raises(PayloadTooLarge) as info:  # our own client refuses to send it
        await client.call(server.address, big)
    assert info.value.limit == LIMIT and info.value.size > LIMIT
    async with RpcClient(RpcConfig(max_message_bytes=4 * LIMIT)) as generous:
        with pytest.raises(PayloadTooLarge) as info:  # the server refuses to receive it
            await generous.call(server.address, big)
        assert info.value.limit == LIMIT and info.value.size > LIMIT
        with pytest.raises(PayloadTooLarge):
            await generous.cast(server.address, cast_request("echo", b"x" * (LIMIT + 1)))
        assert (await generous.call(server.address, call_request("echo"))).is_ok
    assert dispatcher.calls == [call_request("echo")]
    assert (await client.call(server.address, call_request("echo", b"x" * 1000))).is_ok


async def test_oversized_reply_becomes_too_large(server: RpcServer, client: RpcClient) -> None:
    request = call_request("huge")
    reply = await client.call(server.address, request)
    assert reply.status is ReplyStatus.TOO_LARGE and reply.node_id == NODE
    with pytest.raises(PayloadTooLarge) as info:
        raise_for_reply(reply, request)
    assert info.value.limit == LIMIT and info.value.size > LIMIT
    assert (await client.call(server.address, call_request("echo"))).is_ok


async def test_slow_dispatcher_times_out_and_is_cancelled(
    server: RpcServer, client: RpcClient, dispatcher: FakeDispatcher
) -> None:
    started = time.monotonic()
    with pytest.raises(CallTimeout) as info:
        await client.call(server.address, call_request("hang"), timeout=0.3)
    elapsed = time.monotonic() - started
    assert 0.29 <= elapsed < 1.5, elapsed
    assert isinstance(info.value, TimeoutError)
    await wait_until(lambda: dispatcher.cancelled == 1, timeout=5)
    fast = RpcClient(RpcConfig(call_timeout=0.2))
    try:
        with pytest.raises(CallTimeout):  # the config's deadline applies by default
            await fast.cast(server.address, cast_request("hang"))
    finally:
        await fast.close()
    await wait_until(lambda: dispatcher.cancelled == 2, timeout=5)
    assert (await client.call(server.address, call_request("echo"))).is_ok


@pytest.mark.parametrize("child_id", ["too-slow", "too-slow:typed"])
async def test_a_dispatcher_timeout_is_a_call_timeout(
    server: RpcServer, client: RpcClient, child_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(CallTimeout):
        await client.call(server.address, call_request(child_id))
    with pytest.raises(CallTimeout):
        await client.cast(server.address, cast_request(child_id))
    assert not [
        r for r in caplog.records if r.name == "hub.messaging.rpc" and r.levelname == "ERROR"
    ]


async def test_unreachable_address_fails_fast(client: RpcClient) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    for _ in range(2):  # a fresh channel, then the same channel in backoff
        started = time.monotonic()
        with pytest.raises(NodeUnreachable) as info:
            await client.call(address, call_request("echo"), timeout=10, node_id="node-9")
        assert time.monotonic() - started < 2.0
        assert info.value.node_id == "node-9" and address in str(info.value)
    with pytest.raises(NodeUnreachable):
        await client.cast("", cast_request("echo"))


@pytest.mark.parametrize("child_id", ["boom", "not-a-reply", "unmapped"])
async def test_a_failing_dispatcher_is_an_internal_error_and_the_server_keeps_serving(
    server: RpcServer, client: RpcClient, child_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    for _ in range(3):
        with pytest.raises(NodeInternalError) as info:
            await client.call(server.address, call_request(child_id))
        assert "dispatch failed" in str(info.value)
        with pytest.raises(NodeInternalError):
            await client.cast(server.address, cast_request(child_id))
        assert (await client.call(server.address, call_request("echo"))).is_ok
    assert any(r.name == "hub.messaging.rpc" and r.levelname == "ERROR" for r in caplog.records)


async def test_server_stop_fails_calls_in_flight_as_unreachable(
    client: RpcClient, dispatcher: FakeDispatcher
) -> None:
    server = RpcServer(RpcConfig(), dispatcher, HUB)
    address = await server.start()

    async def hang() -> None:
        with pytest.raises(NodeUnreachable):
            await client.call(address, call_request("hang"), timeout=10)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(hang())
        await wait_until(lambda: len(dispatcher.calls) == 1, timeout=5)
        await server.stop(grace=0.05)
    assert dispatcher.cancelled == 1
    with pytest.raises(NodeUnreachable):
        await client.call(address, call_request("echo"))


async def test_a_busy_port_is_an_os_error(server: RpcServer, dispatcher: FakeDispatcher) -> None:
    port = server.address.rpartition(":")[2]
    with pytest.raises(OSError, match="cannot bind"):
        await RpcServer(RpcConfig(bind=f"127.0.0.1:{port}"), dispatcher, HUB).start()


async def test_closed_client_and_discarded_channels(server: RpcServer) -> None:
    client = RpcClient(RpcConfig())
    assert (await client.call(server.address, call_request("echo"))).is_ok
    await client.discard(server.address)
    await client.discard("127.0.0.1:1")  # never connected: nothing to do
    assert (await client.call(server.address, call_request("echo"))).is_ok  # reconnects
    await client.close()
    with pytest.raises(HubClosed):
        await client.call(server.address, call_request("echo"))


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    "fields",
    [
        {"bind": "0.0.0.0:7000"},  # a wildcard needs an advertised address
        {"bind": "[::]:7000"},
        {"bind": "localhost"},
        {"bind": "http://host:1"},
        {"bind": "::1:7000"},
        {"bind": "127.0.0.1:70000"},
        {"advertise": "node-1:0"},
        {"advertise": "node-1"},
        {"token": ""},
        {"token": " padded "},
        {"token": "naïve"},
        {"max_message_bytes": 0},
        {"call_timeout": 0},
    ],
    ids=repr,
)
def test_invalid_config_is_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        RpcConfig(**fields)


def test_valid_configs() -> None:
    RpcConfig(bind="0.0.0.0:7000", advertise="10.0.0.5:7000")
    RpcConfig(bind="[::1]:0", advertise="[2001:db8::1]:7000")
    RpcConfig(bind="localhost:0", token="t0k3n.with-punctuation!")


def test_unreadable_client_tls_is_a_config_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(ConfigError):
        RpcClient(RpcConfig(client_tls=TlsConfig(ca_file=missing)))
