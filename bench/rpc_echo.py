"""Node-to-node call cost: our RpcServer/RpcClient round trip against a plain gRPC echo.

``python bench/rpc_echo.py`` starts each server in its own process on loopback, then, from
this process, runs ``--calls`` calls spread over ``--callers`` concurrent callers (64 by
default) after a warm-up, twice:

* ``grpc``: a minimal ``grpc.aio`` unary echo of raw bytes (a generic handler, no
  protobuf), with the same server and channel options as :mod:`hub.messaging.rpc`: the floor;
* ``hub``: :class:`hub.messaging.rpc.RpcClient` to :class:`hub.messaging.rpc.RpcServer` with a
  dispatcher that
  echoes the payload: protobuf envelope, token-free checks, dataclass conversions.

Reports median and p99 latency (ms, per call as one caller sees it) and throughput
(calls/s) for each, prints them, and writes ``bench/results/rpc_echo.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc
import grpc.aio

from hub.messaging.rpc import (
    CallReplyData,
    CallRequestData,
    CastRequestData,
    ReplyStatus,
    RpcClient,
    RpcConfig,
    RpcServer,
    channel_options,
    server_options,
)

ECHO_METHOD = "/bench.Echo/Echo"
HUB_ID = "bench"


# ------------------------------------------------------------------ servers (child process)


async def _serve_grpc() -> None:
    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    server = grpc.aio.server(options=server_options(RpcConfig()))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await _announce_and_wait(f"127.0.0.1:{port}")
    await server.stop(None)


class _EchoDispatcher:
    async def dispatch_call(self, request: CallRequestData) -> CallReplyData:
        return CallReplyData(ReplyStatus.OK, request.payload, request.codec, node_id="bench")

    async def dispatch_cast(self, request: CastRequestData) -> CallReplyData:
        return CallReplyData(ReplyStatus.OK, node_id="bench")


async def _serve_hub() -> None:
    async with RpcServer(RpcConfig(), _EchoDispatcher(), HUB_ID, node_id="bench") as server:
        await _announce_and_wait(server.address)


async def _announce_and_wait(address: str) -> None:
    """Print the address, then serve until the parent closes our stdin."""
    print(address, flush=True)
    await asyncio.to_thread(sys.stdin.read)


# ------------------------------------------------------------------ load (this process)

Call = Callable[[int], Awaitable[None]]
Close = Callable[[], Awaitable[None]]


async def _load(call: Call, calls: int, callers: int) -> tuple[list[float], float]:
    """Run ``calls`` calls over ``callers`` concurrent loops; latencies (s) and wall time."""
    latencies: list[float] = []
    counter = iter(range(calls))

    async def caller() -> None:
        for i in counter:
            started = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for _ in range(callers):
            tg.create_task(caller())
    return latencies, time.perf_counter() - started


async def _client_grpc(address: str, payload: bytes) -> tuple[Call, Close]:
    channel = grpc.aio.insecure_channel(address, channel_options(RpcConfig()))
    echo = channel.unary_unary(ECHO_METHOD)

    async def call(i: int) -> None:
        reply = await echo(payload, timeout=5.0)
        assert reply == payload

    async def close() -> None:
        await channel.close()

    return call, close


async def _client_hub(address: str, payload: bytes) -> tuple[Call, Close]:
    client = RpcClient(RpcConfig())
    request = CallRequestData(HUB_ID, "echo", payload, "json")

    async def call(i: int) -> None:
        reply = await client.call(address, request, timeout=5.0)
        assert reply.status is ReplyStatus.OK and reply.payload == payload

    return call, client.close


def _summary(latencies: list[float], wall: float) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "median_ms": statistics.median(ordered) * 1e3,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3,
        "throughput_per_s": len(ordered) / wall,
    }


async def _measure(mode: str, address: str, args: argparse.Namespace) -> dict[str, Any]:
    payload = json.dumps({"op": "echo", "data": "x" * max(0, args.payload_bytes - 24)}).encode()
    make = _client_grpc if mode == "grpc" else _client_hub
    call, close = await make(address, payload)
    try:
        await _load(call, args.warmup, args.callers)
        runs = [_summary(*await _load(call, args.calls, args.callers)) for _ in range(args.runs)]
    finally:
        await close()
    best = max(runs, key=lambda r: r["throughput_per_s"])  # least disturbed run
    return {**best, "payload_bytes": len(payload), "runs": runs}


def _run_mode(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "GRPC_VERBOSITY": "ERROR"},
    )
    try:
        assert server.stdout is not None and server.stdin is not None
        address = server.stdout.readline().strip()
        if not address:
            raise RuntimeError(f"{mode} server did not start")
        return asyncio.run(_measure(mode, address, args))
    finally:
        if server.stdin is not None:
            server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--serve", choices=["grpc", "hub"], help=argparse.SUPPRESS)
    # With --serve: cProfile the server's event-loop thread (its CPU time) into this file.
    p.add_argument("--profile", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--calls", type=int, default=20_000, help="calls per measured run")
    p.add_argument("--callers", type=int, default=64, help="concurrent callers")
    p.add_argument("--warmup", type=int, default=2_000)
    p.add_argument("--runs", type=int, default=3, help="measured runs; the best is reported")
    p.add_argument("--payload-bytes", type=int, default=64)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "rpc_echo.json")
    args = p.parse_args()
    if args.serve is not None:
        profiler = cProfile.Profile(time.thread_time) if args.profile else None
        if profiler is not None:
            profiler.enable()
        asyncio.run(_serve_grpc() if args.serve == "grpc" else _serve_hub())
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(args.profile))
        return 0
    out: dict[str, Any] = {
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "cpus": os.cpu_count(),
        "callers": args.callers,
        "calls_per_run": args.calls,
    }
    for mode in ("grpc", "hub"):
        out[mode] = _run_mode(mode, args)
    out["hub_over_grpc"] = {
        "median": out["hub"]["median_ms"] / out["grpc"]["median_ms"],
        "p99": out["hub"]["p99_ms"] / out["grpc"]["p99_ms"],
        "throughput": out["hub"]["throughput_per_s"] / out["grpc"]["throughput_per_s"],
    }
    print(f"{args.callers} concurrent callers, {out['grpc']['payload_bytes']} byte payload")
    print(f"{'':6} {'median ms':>10} {'p99 ms':>10} {'calls/s':>10}")
    for mode in ("grpc", "hub"):
        r = out[mode]
        print(f"{mode:6} {r['median_ms']:10.3f} {r['p99_ms']:10.3f} {r['throughput_per_s']:10.0f}")
    ratio = out["hub_over_grpc"]
    print(
        f"hub/grpc: median x{ratio['median']:.2f}, p99 x{ratio['p99']:.2f}, "
        f"throughput x{ratio['throughput']:.2f}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
