"""call/cast benchmark: ``hub.call`` round trips, local and between two nodes, beside gRPC.

    python bench/calls.py                  # the recorded run (~75 s); writes results/calls.json
    python bench/calls.py --runs 1         # a quick run
    python bench/calls.py --no-profile     # skip the profiled phases at the end

One run starts one etcd, two node processes (``bench/node.py``, node-1 and node-2) and the
two echo servers of ``bench/rpc_echo.py`` (each its own process). Two children of
``bench.workers:Echo`` (``handle_call`` returns the message) are pinned with
``ChildSpec(nodes=...)``: ``echo-local`` on node-1, ``echo-remote`` on node-2. Every load
then runs **inside node-1** (node command ``call_bench``/``echo_bench``), with the same
loop: ``n`` calls spread over ``concurrency`` callers (1: sequential; 64), after an untimed
warm-up, each call timed with ``time.perf_counter``. Layers, all with a 64-byte JSON
message:

* ``local call``: ``await hub.call("echo-local", msg)``: no network (registry lookup,
  codec round trip, mailbox, handler);
* ``remote call``: ``await hub.call("echo-remote", msg)``: node-1 -> node-2 over
  loopback gRPC (registry lookup, codec, ``RpcClient`` -> node-2's ``RpcServer`` ->
  ``LocalDelivery.dispatch_call`` -> mailbox -> handler, and back);
* ``grpc echo``: a plain ``grpc.aio`` unary echo of raw bytes (``rpc_echo.py``'s server,
  same channel/server options): the ceiling a node-to-node call can reach here;
* ``rpc echo``: ``hub.messaging.rpc.RpcClient`` -> ``RpcServer`` whose dispatcher echoes: our
  transport without the hub (lookup, codec, mailbox) around it;
* ``local cast`` / ``remote cast``: ``await hub.cast(...)`` (returns once enqueued; the
  local one yields to the loop after each cast, see ``bench/node.py:load``).

The layers are interleaved, ``--runs`` rounds; each figure is the median over the rounds
(the JSON keeps every round). CPU time per call: the caller's from ``time.process_time()``
in node-1, the server's from ``/proc/<pid>/stat`` of the serving process (node-2 or the
echo server), per thread too. At the end (unless ``--no-profile``), cProfile runs in
node-1 and node-2 during extra, unrecorded remote, local and grpc loads; the time is
grouped by component (gRPC, protobuf, RPC layer, codec, call path, mailbox, asyncio).

Every process started (etcd, nodes, echo servers) is stopped by PID at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pstats
import shlex
import shutil
import signal
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc

from bench.cluster import REPO, NodeProc, kill_all_started
from bench.hotswap import code_state
from bench.run_all import git_info, machine_info, proc_cpu
from bench.workers import ECHO
from hub.client import HubClient
from hub.model import ChildSpec
from hub.operate.localetcd import LocalEtcd

HUB = "bench"
PREFIX = "/processhub"
LOCAL_CHILD = "echo-local"  # pinned to node-1, where every load runs
REMOTE_CHILD = "echo-remote"  # pinned to node-2

#: Targets from issue 4 (remote call over loopback).
TARGET_REMOTE_MEDIAN_US = 500.0
TARGET_REMOTE_CALLS_PER_S = 10_000.0


def say(text: str = "") -> None:
    print(text, flush=True)


# -- CPU per process and thread ---------------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread of a process, keyed ``name/tid`` (from /proc/<pid>/task)."""
    out: dict[str, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat.rsplit(")", 1)[1].split()
        out[f"{name}/{tid}"] = (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return out


class Procs:
    """The processes of the run, by role, for CPU accounting."""

    def __init__(self) -> None:
        self.pids: dict[str, int] = {}

    def snapshot(self) -> dict[str, Any]:
        snap: dict[str, Any] = {"t": time.monotonic(), "driver": time.process_time()}
        snap["pids"] = dict(self.pids)
        for role, pid in self.pids.items():
            cpu = proc_cpu(pid)
            if cpu is not None:
                snap[role] = cpu
                snap[f"{role}:threads"] = thread_cpu(pid)
        return snap

    @staticmethod
    def used(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
        """CPU seconds per process (and per thread of the busy ones) between snapshots."""
        out: dict[str, Any] = {"wall_s": round(after["t"] - before["t"], 4)}
        for role, value in before.items():
            if role in ("t", "pids") or role.endswith(":threads") or role not in after:
                continue
            out[role] = round(after[role] - value, 3)
            threads_before = before.get(f"{role}:threads") or {}
            threads_after = after.get(f"{role}:threads") or {}
            busy = {
                tid: round(cpu - threads_before.get(tid, 0.0), 3)
                for tid, cpu in threads_after.items()
                if cpu - threads_before.get(tid, 0.0) >= 0.01
            }
            if busy and len(busy) > 1:
                out[f"{role}:threads"] = busy
            main = next((k for k in threads_after if k.endswith(f"/{pid_of(role, before)}")), None)
            if main is not None:  # the event-loop thread (tid == pid)
                out[f"{role}:main_thread"] = round(
                    threads_after[main] - threads_before.get(main, 0.0), 3
                )
        return out


def pid_of(role: str, snapshot: dict[str, Any]) -> int:
    return int(snapshot.get("pids", {}).get(role, 0))


# -- echo servers (bench/rpc_echo.py --serve MODE) ----------------------------------------------


class EchoServer:
    """One ``rpc_echo.py --serve`` process; it serves until its stdin closes."""

    def __init__(self, mode: str, profile: Path | None = None) -> None:
        self.mode = mode  # "grpc" or "hub"
        self.profile = profile  # cProfile its event-loop thread into this file
        self.proc: asyncio.subprocess.Process | None = None
        self.address = ""

    async def start(self) -> str:
        env = {**os.environ, "GRPC_VERBOSITY": "ERROR"}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(REPO / "bench" / "rpc_echo.py"),
            "--serve",
            self.mode,
            *(["--profile", str(self.profile)] if self.profile else []),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        async with asyncio.timeout(30):
            line = await self.proc.stdout.readline()
        self.address = line.decode().strip()
        if not self.address:
            raise RuntimeError(f"rpc_echo {self.mode} server did not start")
        return self.address

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    async def close(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()


# -- the run ----------------------------------------------------------------------------------


class Phase:
    """One measured load: a layer, call or cast, sequential or concurrent."""

    def __init__(
        self, name: str, layer: str, concurrency: int, n: int, warmup: int, server: str | None
    ) -> None:
        self.name = name
        self.layer = layer
        self.concurrency = concurrency
        self.n = n
        self.warmup = warmup
        self.server = server  # role of the serving process (None: node-1 itself)
        self.runs: list[dict[str, Any]] = []


class CallBench:
    def __init__(self, args: argparse.Namespace, etcd: LocalEtcd, work_dir: Path) -> None:
        self.args = args
        self.etcd = etcd
        self.work_dir = work_dir
        self.nodes: dict[str, NodeProc] = {}
        self.servers = {"grpc": EchoServer("grpc"), "rpc": EchoServer("hub")}
        self.procs = Procs()
        self.results: dict[str, Any] = {}

    async def boot(self) -> None:
        say("starting node-1, node-2 and the rpc_echo servers ...")

        async def spawn(node_id: str) -> None:
            node = NodeProc(
                node_id,
                self.etcd.endpoint,
                ttl=self.args.ttl,
                log_dir=self.work_dir,
                hub=HUB,
                prefix=PREFIX,
            )
            self.nodes[node_id] = node
            await node.start(timeout=60)

        await asyncio.gather(
            spawn("node-1"), spawn("node-2"), *(s.start() for s in self.servers.values())
        )
        self.procs.pids = {
            "node-1": self.nodes["node-1"].pid,
            "node-2": self.nodes["node-2"].pid,
            "grpc-server": self.servers["grpc"].pid,
            "rpc-server": self.servers["rpc"].pid,
        }
        if self.etcd.pid:
            self.procs.pids["etcd"] = self.etcd.pid
        node1 = self.nodes["node-1"]
        # A pinned child waits for its node, so node-1 need not see node-2 yet.
        ready = await node1.arm("wait_running", count=2, timeout=30)
        async with HubClient(HUB, endpoints=[self.etcd.endpoint], prefix=PREFIX) as client:
            result = await client.start_children(
                [
                    ChildSpec(id=LOCAL_CHILD, start=ECHO, nodes=("node-1",)),
                    ChildSpec(id=REMOTE_CHILD, start=ECHO, nodes=("node-2",)),
                ]
            )
            if result.errors:
                raise RuntimeError(f"start_children: {result.errors}")
        reply = await ready
        if not reply.get("ok"):
            raise RuntimeError(f"echo children not running: {reply}")
        placement = (await node1.request("placement"))["placement"]
        if placement != {LOCAL_CHILD: "node-1", REMOTE_CHILD: "node-2"}:
            raise RuntimeError(f"unexpected placement {placement}")
        self.results["placement"] = placement

    def phases(self) -> list[Phase]:
        a = self.args
        c = a.callers
        out = [
            Phase("local call, sequential", "local call", 1, a.local_calls, 2000, None),
            Phase(f"local call, {c} callers", "local call", c, a.local_calls, 2000, None),
        ]
        for layer, server in (
            ("remote call", "node-2"),
            ("grpc echo", "grpc-server"),
            ("rpc echo", "rpc-server"),
        ):
            out.append(Phase(f"{layer}, sequential", layer, 1, a.seq_calls, 300, server))
            out.append(Phase(f"{layer}, {c} callers", layer, c, a.calls, 1000, server))
        out += [
            Phase("local cast, sequential", "local cast", 1, a.local_calls, 2000, None),
            Phase(f"local cast, {c} callers", "local cast", c, a.local_calls, 2000, None),
            Phase("remote cast, sequential", "remote cast", 1, a.seq_calls, 300, "node-2"),
            Phase(f"remote cast, {c} callers", "remote cast", c, a.calls, 1000, "node-2"),
        ]
        return out

    def request_for(
        self, phase: Phase, n: int, address: str | None = None
    ) -> tuple[str, dict[str, Any]]:
        common = {
            "n": n,
            "concurrency": phase.concurrency,
            "payload_bytes": self.args.payload_bytes,
            "call_timeout": 60,
        }
        layer = phase.layer
        if layer in ("grpc echo", "rpc echo"):
            mode = layer.split()[0]
            address = address or self.servers[mode].address
            return "echo_bench", {**common, "mode": mode, "address": address}
        kind = layer.split()[1]
        child = LOCAL_CHILD if layer.startswith("local") else REMOTE_CHILD
        extra = {"yield_each": True} if layer == "local cast" else {}
        return "call_bench", {**common, "child_id": child, "kind": kind, **extra}

    async def measure(self, phase: Phase, n: int | None = None) -> dict[str, Any]:
        node1 = self.nodes["node-1"]
        cmd, req = self.request_for(phase, phase.warmup)
        await node1.request(cmd, timeout=120, **req)  # warm-up (and the echo channel)
        cmd, req = self.request_for(phase, n or phase.n)
        before = self.procs.snapshot()
        result = await node1.request(cmd, timeout=120, **req)
        cpu = Procs.used(before, self.procs.snapshot())
        result.pop("id", None)
        if result.get("errors"):
            raise RuntimeError(f"{phase.name}: failed calls {result['errors']}")
        if phase.layer.startswith("local") and not result.get("local", True):
            raise RuntimeError(f"{phase.name}: child is not local")
        if phase.layer.startswith("remote") and result.get("local", False):
            raise RuntimeError(f"{phase.name}: child is local")
        ok = result["ok"]
        result["client_cpu_us_per_call"] = result["cpu_s"] / ok * 1e6
        if phase.server is not None:
            result["server_cpu_us_per_call"] = cpu[phase.server] / ok * 1e6
        result["cpu_s"] = cpu
        return result

    async def run(self) -> None:
        await self.boot()
        phases = self.phases()
        for round_no in range(1, self.args.runs + 1):
            say(f"\nround {round_no}/{self.args.runs}")
            for phase in phases:
                result = await self.measure(phase)
                phase.runs.append(result)
                say(
                    f"  {phase.name:28} median {result['median_us']:8.1f} us  "
                    f"p99 {result['p99_us']:8.1f} us  {result['calls_per_s']:9.0f} /s  "
                    f"cpu/call client {result['client_cpu_us_per_call']:6.1f} us"
                    + (
                        f" server {result['server_cpu_us_per_call']:6.1f} us"
                        if "server_cpu_us_per_call" in result
                        else ""
                    )
                )
        self.results["phases"] = {p.name: summarise_phase(p) for p in phases}
        self.results["codec_us"] = codec_cost(self.args.payload_bytes)
        # Not a timing: a local cast never suspends, so a loop of casts that awaits nothing
        # else never lets the mailbox's consumer run; past the capacity casts are refused.
        tight = await self.nodes["node-1"].request(
            "call_bench", child_id=LOCAL_CHILD, kind="cast", n=3000, concurrency=1, timeout=60
        )
        self.results["tight_local_cast_loop"] = {
            "casts": 3000,
            "accepted": tight["ok"],
            "refused": tight["errors"],
        }
        say(
            f"\n3000 local casts in a loop that never yields: {tight['ok']} accepted, refused "
            f"{tight['errors']}"
        )
        if self.args.profile:
            await self.profile(phases)
        self.results["stats_end"] = {
            node_id: await node.request("stats") for node_id, node in self.nodes.items()
        }

    async def profile(self, phases: list[Phase]) -> None:
        """cProfile the event-loop threads during extra, unrecorded concurrent loads.

        The profiler's clock is the thread's CPU time, so shares are of the CPU the loop
        thread used (waiting for a core counts as nothing); they are scaled to microseconds
        per call with that thread's CPU per call in the unprofiled runs.
        """
        c = self.args.callers
        by_name = {p.name: p for p in phases}
        out: dict[str, Any] = {}
        for layer in ("remote call", "local call", "grpc echo", "rpc echo"):
            phase = by_name[f"{layer}, {c} callers"]
            slug = layer.replace(" ", "-")
            n = max(1000, phase.n // 4)
            nodes = {"node-1": self.work_dir / f"profile-{slug}-node-1.prof"}
            if layer == "remote call":
                nodes["node-2"] = self.work_dir / f"profile-{slug}-node-2.prof"
            server: EchoServer | None = None
            address = None
            if layer in ("grpc echo", "rpc echo"):  # a fresh server, profiled from its start
                server_path = self.work_dir / f"profile-{slug}-server.prof"
                server = EchoServer("grpc" if layer == "grpc echo" else "hub", server_path)
                address = await server.start()
                self.procs.pids["profiled-server"] = server.pid
            try:
                cmd, req = self.request_for(phase, phase.warmup, address)
                await self.nodes["node-1"].request(cmd, timeout=120, **req)
                for node_id, path in nodes.items():
                    await self.nodes[node_id].request(
                        "profile_start", path=str(path), clock="thread"
                    )
                cmd, req = self.request_for(phase, n, address)
                before = self.procs.snapshot()
                result = await self.nodes["node-1"].request(cmd, timeout=120, **req)
                cpu = Procs.used(before, self.procs.snapshot())
                for node_id in nodes:
                    await self.nodes[node_id].request("profile_stop", top=25)
            finally:
                if server is not None:
                    await server.close()  # it writes its profile as it exits
                    self.procs.pids.pop("profiled-server", None)
            profiles = {**nodes}
            if server is not None:
                profiles[f"{server.mode}-echo-server"] = server_path
            entry: dict[str, Any] = {
                "calls": result["ok"],
                "calls_per_s_while_profiled": result["calls_per_s"],
                "cpu_s": cpu,
                "processes": {},
            }
            for who, path in profiles.items():
                role = "node-1" if who == "node-1" else phase.server
                assert role is not None
                entry["processes"][who] = {
                    "file": path.name,  # in the work directory, kept with --keep
                    **breakdown(path, main_thread_us_per_call(phase, role)),
                }
            out[phase.name] = entry
            say(
                f"\nprofile: {phase.name} ({result['ok']} calls, "
                f"{result['calls_per_s']:.0f}/s while profiled); event-loop thread CPU, "
                "share and estimated us per call (unprofiled)"
            )
            for who, prof in entry["processes"].items():
                say(
                    f"  {who}: loop thread {prof['main_thread_us_per_call']:.0f} us/call "
                    f"+ other threads {prof['other_threads_us_per_call']:.0f} us/call"
                )
                for cat, row in prof["categories"].items():
                    if row["share"] >= 0.005:
                        say(f"    {cat:58} {row['share']:6.1%} {row['est_us_per_call']:7.1f} us")
        self.results["profile"] = out


def main_thread_us_per_call(phase: Phase, role: str) -> dict[str, float]:
    """CPU per call of ``role``'s event-loop thread and of its other threads (median run)."""
    main, other = [], []
    for run in phase.runs:
        cpu = run["cpu_s"]
        if f"{role}:main_thread" in cpu:
            main.append(cpu[f"{role}:main_thread"] / run["ok"] * 1e6)
            other.append((cpu[role] - cpu[f"{role}:main_thread"]) / run["ok"] * 1e6)
    return {"main": statistics.median(main), "other": statistics.median(other)}


def codec_cost(payload_bytes: int) -> dict[str, float]:
    """Unprofiled cost of the payload codec for the benchmark's message (this process)."""
    from bench.node import echo_message
    from hub.messaging.payload import decode_payload, encode_payload

    message = echo_message(payload_bytes)
    data, codec = encode_payload(message, child_id=REMOTE_CHILD)
    n = 20_000

    def per_call(fn: Any) -> float:
        return min(timeit.repeat(fn, number=n, repeat=3)) / n * 1e6

    return {
        "encode_payload": per_call(lambda: encode_payload(message, child_id=REMOTE_CHILD)),
        "decode_payload": per_call(lambda: decode_payload(data, codec, child_id=REMOTE_CHILD)),
        "bytes": len(data),
    }


def summarise_phase(phase: Phase) -> dict[str, Any]:
    """Median over the rounds of each figure, and the range; every round kept."""
    runs = phase.runs

    def med(key: str) -> float | None:
        values = [r[key] for r in runs if key in r]
        return statistics.median(values) if values else None

    def span(key: str) -> list[float]:
        values = [r[key] for r in runs if key in r]
        return [min(values), max(values)] if values else []

    return {
        "layer": phase.layer,
        "concurrency": phase.concurrency,
        "calls_per_run": phase.n,
        "warmup": phase.warmup,
        "payload_bytes": runs[0].get("payload_bytes"),
        "median_us": med("median_us"),
        "p99_us": med("p99_us"),
        "calls_per_s": med("calls_per_s"),
        "client_cpu_us_per_call": med("client_cpu_us_per_call"),
        "server_cpu_us_per_call": med("server_cpu_us_per_call"),
        "range": {k: span(k) for k in ("median_us", "p99_us", "calls_per_s")},
        "runs": runs,
    }


# -- profile analysis -------------------------------------------------------------------------

#: Components, first match wins: (name, substrings of the file name, of the function name).
CATEGORIES: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    ("epoll wait", ("selectors.py",), ("select.epoll",)),
    # The loop runs every callback in Context.run; its *own* time is code with no Python
    # frame: Cython coroutines (the grpc.aio server's request handling) and C task steps.
    ("no Python frame: cygrpc coroutines, C task steps", (), ("_contextvars.Context",)),
    ("gRPC Python (grpc.aio; its Cython calls inside)", ("/grpc/",), ("grpc._cython",)),
    ("protobuf", ("/google/protobuf/", "_pb2"), ("google._upb", "FromString")),
    ("RPC layer (hub/messaging/rpc.py)", ("hub/messaging/rpc.py", "hub/messaging/_rpc_"), ()),
    (
        "payload codec (hub/messaging/payload.py, json)",
        ("hub/messaging/payload.py", "/json/"),
        ("_json",),
    ),
    (
        "mailbox (hub/messaging/mailbox.py, supervisor.mailbox)",
        ("hub/messaging/mailbox.py", "hub/core/supervisor.py"),
        (),
    ),
    ("asyncio.Queue (the mailbox's queue)", ("asyncio/queues.py",), ()),
    (
        "call path (Calls.call/_send/_deliver, LocalDelivery.deliver, registry)",
        ("hub/api/", "hub/node/", "hub/core/registry.py", "hub/model.py", "hub/errors.py"),
        (),
    ),
    ("asyncio.timeout", ("asyncio/timeouts.py",), ()),
    ("asyncio loop, tasks, futures", ("asyncio/",), ("_asyncio",)),
    ("bench load loop and echo server", ("bench/",), ()),
    ("hub background (informer, session, ...)", ("/hub/",), ()),
]

#: Functions whose cumulative time is reported (file suffix, function name).
KEY_FUNCTIONS = [
    ("hub/api/facade.py", "call"),
    ("hub/api/calls.py", "call"),
    ("hub/api/calls.py", "_send"),
    ("hub/api/calls.py", "_deliver"),
    ("hub/messaging/_rpc_client.py", "call"),
    ("hub/messaging/_rpc_client.py", "_unary"),
    ("grpc/aio/_call.py", "_invoke"),
    ("hub/messaging/_rpc_server.py", "Call"),
    ("hub/messaging/_rpc_server.py", "_serve"),
    ("hub/node/delivery.py", "dispatch_call"),
    ("hub/node/delivery.py", "deliver"),
    ("hub/messaging/mailbox.py", "call"),
    ("hub/messaging/mailbox.py", "_handle"),
    ("hub/core/supervisor.py", "mailbox"),
    ("hub/messaging/payload.py", "encode_payload"),
    ("hub/messaging/payload.py", "decode_payload"),
    ("hub/messaging/_rpc_wire.py", "raise_for_reply"),
]

OTHER = "other (stdlib glue)"


def own_category(filename: str, funcname: str) -> str | None:
    for name, files, funcs in CATEGORIES:
        if any(f in filename for f in files) or any(f in funcname for f in funcs):
            return name
    return None


def breakdown(path: Path, per_call: dict[str, float]) -> dict[str, Any]:
    """Profiled CPU per component, top functions and key functions' cumulative share.

    A function of no component (a builtin, ``contextlib``, ``re``...) counts for its
    callers' components, in proportion to the time it spent under each caller. Shares are
    of the profiled total; ``est_us_per_call`` = share x the thread's unprofiled CPU per call
    (``per_call["main"]``).
    """
    stats: dict[Any, Any] = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]

    def resolve(key: Any, depth: int = 0) -> dict[str, float]:
        """Fractions of ``key``'s own time per component."""
        cat = own_category(key[0], key[2])
        if cat is not None:
            return {cat: 1.0}
        callers = stats[key][4] if key in stats else {}
        weights = {ck: edge[2] for ck, edge in callers.items() if edge[2] > 0}
        if depth >= 4 or not weights:
            return {OTHER: 1.0}
        total_w = sum(weights.values())
        out: dict[str, float] = {}
        for ck, w in weights.items():
            for cat2, frac in resolve(ck, depth + 1).items():
                out[cat2] = out.get(cat2, 0.0) + frac * w / total_w
        return out

    per_cat: dict[str, float] = {}
    total = 0.0
    rows = []
    for key, (_cc, nc, tt, ct, _callers) in stats.items():
        total += tt
        for cat, frac in resolve(key).items():
            per_cat[cat] = per_cat.get(cat, 0.0) + tt * frac
        filename, lineno, funcname = key
        rows.append((tt, ct, nc, f"{short(filename)}:{lineno}({funcname})"))
    main_us = per_call["main"]
    categories = {
        cat: {
            "cpu_s": round(sec, 4),
            "share": sec / total if total else 0.0,
            "est_us_per_call": sec / total * main_us if total else 0.0,
        }
        for cat, sec in sorted(per_cat.items(), key=lambda kv: -kv[1])
    }
    rows.sort(reverse=True)
    key_rows = {}
    for (filename, _lineno, funcname), (_cc, nc, _tt, ct, _callers) in stats.items():
        for suffix, fname in KEY_FUNCTIONS:
            if filename.endswith(suffix) and funcname == fname:
                key_rows[f"{suffix}:{fname}"] = {
                    "resumes": nc,
                    "cum_cpu_s": round(ct, 4),
                    "cum_share": ct / total if total else 0.0,
                    "est_us_per_call": ct / total * main_us if total else 0.0,
                }
    return {
        "profiled_cpu_s": round(total, 4),
        "main_thread_us_per_call": main_us,
        "other_threads_us_per_call": per_call["other"],
        "categories": categories,
        "key_functions": key_rows,
        "top_tottime": [
            {"tottime_s": round(tt, 4), "cumtime_s": round(ct, 4), "ncalls": nc, "fn": fn}
            for tt, ct, nc, fn in rows[:25]
        ],
    }


def short(filename: str) -> str:
    for marker in ("site-packages/", "/lib/python3", str(REPO) + "/"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


# -- report -----------------------------------------------------------------------------------


def verdicts(phases: dict[str, Any], callers: int) -> dict[str, Any]:
    remote_seq = phases["remote call, sequential"]
    remote_conc = phases[f"remote call, {callers} callers"]
    grpc_seq = phases["grpc echo, sequential"]
    grpc_conc = phases[f"grpc echo, {callers} callers"]
    rpc_seq = phases["rpc echo, sequential"]
    rpc_conc = phases[f"rpc echo, {callers} callers"]
    return {
        "targets": {
            "remote_call_median_us": {
                "value": remote_seq["median_us"],
                "target": f"<= {TARGET_REMOTE_MEDIAN_US:.0f} (sequential: one call in flight)",
                "met": remote_seq["median_us"] <= TARGET_REMOTE_MEDIAN_US,
            },
            "remote_call_calls_per_s": {
                "value": remote_conc["calls_per_s"],
                "target": f">= {TARGET_REMOTE_CALLS_PER_S:.0f} with {callers} callers",
                "met": remote_conc["calls_per_s"] >= TARGET_REMOTE_CALLS_PER_S,
            },
            "grpc_ceiling_meets_them": {
                "median_us": grpc_seq["median_us"] <= TARGET_REMOTE_MEDIAN_US,
                "calls_per_s": grpc_conc["calls_per_s"] >= TARGET_REMOTE_CALLS_PER_S,
            },
        },
        "remote_call_over_grpc": {
            "median_sequential": remote_seq["median_us"] / grpc_seq["median_us"],
            "p99_sequential": remote_seq["p99_us"] / grpc_seq["p99_us"],
            "throughput": remote_conc["calls_per_s"] / grpc_conc["calls_per_s"],
        },
        "rpc_echo_over_grpc": {
            "median_sequential": rpc_seq["median_us"] / grpc_seq["median_us"],
            "throughput": rpc_conc["calls_per_s"] / grpc_conc["calls_per_s"],
        },
    }


def table(phases: dict[str, Any]) -> str:
    lines = [
        f"{'phase':28} {'median us':>10} {'p99 us':>10} {'calls/s':>10} "
        f"{'cpu us/call: caller':>20} {'server':>7}",
    ]
    for name, p in phases.items():
        server = p["server_cpu_us_per_call"]
        lines.append(
            f"{name:28} {p['median_us']:10.1f} {p['p99_us']:10.1f} {p['calls_per_s']:10.0f} "
            f"{p['client_cpu_us_per_call']:20.1f} "
            + (f"{server:7.1f}" if server is not None else f"{'-':>7}")
        )
    return "\n".join(lines)


def logs_empty(directory: Path) -> bool:
    return all(f.stat().st_size == 0 for f in directory.glob("*.log"))


async def amain(args: argparse.Namespace, command: str) -> int:
    work_dir = Path(tempfile.mkdtemp(prefix="processhub-calls-"))
    etcd = LocalEtcd(name="processhub-calls")
    bench: CallBench | None = None
    ok = False
    try:
        etcd.start()
        machine = machine_info(etcd.binary)
        say(
            f"etcd {machine['etcd_version']} at {etcd.endpoint}; {machine['nproc']} CPUs "
            f"({machine['cpu_model']}); Python {machine['python']}, grpcio {grpc.__version__}"
        )
        bench = CallBench(args, etcd, work_dir)
        started = time.monotonic()
        await bench.run()
        phases = bench.results["phases"]
        say("\n" + table(phases))
        verdict = verdicts(phases, args.callers)
        t = verdict["targets"]
        say(
            f"\nremote call median {t['remote_call_median_us']['value']:.0f} us "
            f"(target <= {TARGET_REMOTE_MEDIAN_US:.0f}: "
            f"{'met' if t['remote_call_median_us']['met'] else 'NOT met'}); "
            f"{args.callers} callers {t['remote_call_calls_per_s']['value']:.0f}/s "
            f"(target >= {TARGET_REMOTE_CALLS_PER_S:.0f}: "
            f"{'met' if t['remote_call_calls_per_s']['met'] else 'NOT met'})"
        )
        r = verdict["remote_call_over_grpc"]
        say(
            f"remote call / plain grpc.aio echo: median x{r['median_sequential']:.2f}, "
            f"throughput x{r['throughput']:.2f}"
        )
        report = {
            "benchmark": "processhub call/cast",
            "command": command,
            "params": {
                "runs": args.runs,
                "callers": args.callers,
                "local_calls": args.local_calls,
                "seq_calls": args.seq_calls,
                "calls": args.calls,
                "payload_bytes": args.payload_bytes,
                "lease_ttl": args.ttl,
                "profile": args.profile,
            },
            "machine": {
                **machine,
                "grpcio": grpc.__version__,
                "loadavg_at_end": os.getloadavg(),
            },
            "git": {**git_info(), **code_state()},
            "wall_seconds": time.monotonic() - started,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **verdict,
            **bench.results,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        say(f"\nwrote {args.out} ({report['wall_seconds']:.0f}s)")
        ok = True
        return 0
    finally:
        if bench is not None:
            for node in bench.nodes.values():
                await node.close()
            for server in bench.servers.values():
                await server.close()
        kill_all_started()
        etcd.close()
        if ok and logs_empty(work_dir) and not args.keep:
            shutil.rmtree(work_dir, ignore_errors=True)
        else:
            say(f"node logs and profiles kept in {work_dir}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--runs", type=int, default=3, help="rounds of every phase (3)")
    p.add_argument("--callers", type=int, default=64, help="concurrent callers (64)")
    p.add_argument("--local-calls", type=int, default=20_000, help="calls per local phase")
    p.add_argument("--seq-calls", type=int, default=2_000, help="per sequential remote phase")
    p.add_argument("--calls", type=int, default=10_000, help="per concurrent remote phase")
    p.add_argument("--payload-bytes", type=int, default=64)
    p.add_argument("--ttl", type=int, default=3, help="lease TTL of the nodes, seconds")
    p.add_argument("--no-profile", dest="profile", action="store_false")
    p.add_argument("--keep", action="store_true", help="keep node logs and profiles")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "calls.json")
    args = p.parse_args(argv)
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        return asyncio.run(amain(args, command))
    except KeyboardInterrupt:
        say("interrupted; everything started was stopped")
        return 130
    finally:
        kill_all_started()


if __name__ == "__main__":
    sys.exit(main())
