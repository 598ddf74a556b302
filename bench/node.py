"""A benchmark node: one :class:`hub.Hub` plus a JSON control channel on stdin/stdout.

Started by ``bench/run_all.py`` as ``python bench/node.py --endpoint ... --node-id node-1``
with ``PYTHONPATH`` set to the repository root. It joins the hub, prints
``{"event": "ready", ...}`` and then answers one JSON line per request::

    -> {"id": 7, "cmd": "wait_running", "count": 10000, "exclude": ["node-3"], "timeout": 30}
    <- {"id": 7, "armed": true, "t": ...}          # condition registered (maybe already true)
    <- {"id": 7, "ok": true, "t": 1234.567, ...}   # the monotonic time it first held

Every time is ``time.monotonic()``: on Linux one clock (CLOCK_MONOTONIC) for all processes,
so the driver can subtract its own timestamps from the nodes'.

Commands:

* ``ping`` -> ``{"t"}``.
* ``wait_running {count, exclude=[], placed=false, member=null, timeout}``: the first
  moment this node's registry shows ``count`` children in state running, none of them on an
  ``exclude``d node (with ``placed``, each on the node the ring assigns it at this node's
  membership; with ``member``, only once that node is an active member).
  Checked incrementally after every applied watch batch, by an observer on the registry.
* ``start_children {n, start}``: start ``child-0`` .. ``child-{n-1}`` from this node
  (``start``: the start target, default ``bench.workers:idle``).
* ``seen {node}``: when member ``node`` last appeared in this node's registry (or null).
* ``get_pid_bench {batch, repeat}``: per-call time of ``hub.get_pid`` over the local
  registry, in timeit batches; median, p99, min, plus the bare loop overhead.
* ``call_bench {child_id, n, concurrency, warmup, kind, payload_bytes, call_timeout,
  yield_each}``:
  ``n`` calls (``kind`` "call") or casts ("cast") of ``hub.call``/``hub.cast`` to
  ``child_id`` from this node, spread over ``concurrency`` concurrent callers, after
  ``warmup`` untimed ones; the child runs here (local delivery) or on another node (RPC).
  Per-call latency summary (median, p99... as one caller sees it), calls/s, this
  process's CPU time per call, and failures by exception type (see :func:`load`).
* ``echo_bench {mode, address, n, concurrency, warmup, payload_bytes}``: the same loop
  against an echo server of ``bench/rpc_echo.py`` at ``address``: ``mode`` "grpc" (plain
  ``grpc.aio`` unary echo, the ceiling) or "rpc" (``hub.messaging.rpc.RpcClient`` to an
  ``RpcServer`` that echoes).
* ``stats``: RSS (``/proc/self/status``), registry sizes, revision, local children, tasks,
  and ``informer_dropped``: watch events the informer discarded as already applied.
* ``diagnose {limit}``: children not running, tallied by (state, node, ring placement).
* ``placement``: ``{child_id: node_id}`` of every running child in this node's registry.
* ``registry_mem``: relist the hub's keys and build a fresh Registry under tracemalloc:
  bytes of registry data structures per child.
* ``journal``: the instances of ``bench.workers:Stateful`` this process ran (see
  :func:`bench.workers.journal_rows`): start and cancel times, state source, digests of the
  state received and held. A node that leaves prints the same rows as a ``journal`` event
  after ``stopped`` (when it ran any), so the driver gets them from a node that is gone.
* ``profile_start {path, top, sort, clock}`` / ``profile_stop``: cProfile this process; the
  stats go to ``path`` and a text summary to ``path``.txt (also when the node leaves while
  profiling). ``clock`` "wall" (default) or "thread": the event-loop thread's CPU time
  (``time.thread_time``), so time waiting for a core or in ``epoll`` counts as nothing.

SIGTERM leaves gracefully (drain: children move first), like ``processhub node``; EOF on
stdin (the driver went away) leaves without draining. Events ``draining`` and ``stopped``
are printed with their monotonic times.

``--migration hot`` runs the hub with ``HotSwap()`` (state handover); the default is the
hub's default (``ColdSwap``). ``--profile-from-start PATH`` profiles the node from before
``hub.start()`` (a joining node), until ``profile_stop``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import logging
import os
import pstats
import signal
import statistics
import sys
import time
import timeit
import tracemalloc
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from bench import workers
from bench.workers import IDLE
from hub.core.registry import Registry
from hub.hub import Hub
from hub.model import ChildSpec, OwnerState
from strategies.migration import HotSwap

log = logging.getLogger("bench.node")


def emit(message: dict[str, Any]) -> None:
    """Write one JSON line to the driver."""
    sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def read_status(pid: int | str = "self") -> dict[str, int]:
    """``VmRSS``/``VmHWM``/``VmSize`` of a process, in bytes."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM", "VmSize"):
                out[name] = int(rest.split()[0]) * 1024
    return out


class RunningWait:
    """``count`` running children, none on ``exclude``, optionally each where the ring says.

    Also keeps a progress curve, turned into milestones for the reply: when membership
    first changed, when children on excluded nodes started and finished disappearing
    (a release), and when the count of good children passed 1/50/99 % of the way from its
    low point to ``count``.
    """

    def __init__(
        self,
        hub: Hub,
        count: int,
        exclude: Iterable[str],
        placed: bool,
        member: str | None = None,
    ) -> None:
        self.hub = hub
        self.count = count
        self.exclude = frozenset(exclude)
        self.placed = placed
        self.member = member  # also require this node to be an active member
        self.good: set[str] = set()
        self.on_excluded: set[str] = set()
        self.future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.t_armed = time.monotonic()
        self.t_members_changed: float | None = None
        self.t_specs_complete: float | None = None
        self.curve: list[tuple[float, int, int]] = []  # (t, good, on excluded nodes)
        if len(hub.registry.specs) >= count:
            self.t_specs_complete = -1.0  # already complete when armed: not a milestone
        self.recompute()

    def _ok(self, child_id: str) -> bool:
        handle = self.hub.registry.handles.get(child_id)
        if handle is None:
            self.on_excluded.discard(child_id)
            return False
        if handle.node_id in self.exclude:
            self.on_excluded.add(child_id)
            return False
        self.on_excluded.discard(child_id)
        if handle.state is not OwnerState.RUNNING:
            return False
        return not self.placed or handle.node_id == self.hub.placement(child_id)

    def recompute(self) -> None:
        self.on_excluded = set()
        self.good = {cid for cid in self.hub.registry.handles if self._ok(cid)}
        self._check()

    def update(self, child_ids: Iterable[str], everything: bool, nodes_changed: bool) -> None:
        if self.future.done():
            return
        if nodes_changed and self.t_members_changed is None:
            self.t_members_changed = time.monotonic()
        if everything:
            self.recompute()
            return
        good = self.good
        for child_id in child_ids:
            if self._ok(child_id):
                good.add(child_id)
            else:
                good.discard(child_id)
        self._check()

    def _check(self) -> None:
        now = time.monotonic()
        self.curve.append((now, len(self.good), len(self.on_excluded)))
        if self.t_specs_complete is None and len(self.hub.registry.specs) >= self.count:
            self.t_specs_complete = now
        if self.member is not None and self.member not in self.hub.registry.active_members():
            return
        if len(self.good) >= self.count and not self.future.done():
            self.future.set_result(now)

    def milestones(self) -> dict[str, float | None]:
        """Monotonic times of the progress milestones (None when not reached)."""
        curve = self.curve
        out: dict[str, float | None] = {
            "armed": self.t_armed,
            "members_changed": self.t_members_changed,
            "specs_complete": self.t_specs_complete if self.t_specs_complete != -1.0 else None,
        }
        if not curve:
            return out
        first_excluded = curve[0][2]
        out["release_start"] = next((t for t, _, x in curve if x < first_excluded), None)
        out["release_end"] = (
            next((t for t, _, x in curve if x == 0), None) if first_excluded else None
        )
        low_index = min(range(len(curve)), key=lambda i: (curve[i][1], -i))
        low = curve[low_index][1]
        for pct in (1, 50, 99):
            goal = low + (self.count - low) * pct / 100
            out[f"good_{pct}pct"] = next(
                (t for t, g, _ in curve[low_index:] if g >= goal and g > low), None
            )
        out["good_low"] = low
        return out


class Tap:
    """Observes the registry after every batch; timestamps what benchmarks wait for."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.waits: list[RunningWait] = []
        #: node id -> when it last appeared in this node's registry (monotonic)
        self.first_seen: dict[str, float] = {}
        self._present: set[str] = set()
        self.batches = 0
        hub.registry.observers.append(self.registry_changed)

    def registry_changed(self, child_ids: set[str], nodes_changed: bool, full: bool) -> None:
        self.batches += 1
        if nodes_changed or full:
            now = time.monotonic()
            present = set(self.hub.registry.nodes)
            for node_id in present - self._present:
                self.first_seen[node_id] = now  # (re)appeared: a new incarnation
            self._present = present
        if self.waits:
            for wait in self.waits:
                # A membership change moves ring placement: a placed wait looks at everything.
                membership = wait.placed or wait.member is not None
                wait.update(child_ids, full or (nodes_changed and membership), nodes_changed)
            self.waits = [w for w in self.waits if not w.future.done()]


class DropCounter:
    """Counts watch events the informer drops as already applied (a diagnostic).

    Drops are expected right after a reconnect (the watch resumes inclusive of the last
    revision); with ``reconnects == 0`` every drop is an event the registry never saw.
    """

    def __init__(self, hub: Hub) -> None:
        self.informer = hub.informer
        self.original = self.informer._dedupe
        self.dropped = 0
        self.sample: list[dict[str, Any]] = []
        self.informer._dedupe = self._dedupe  # type: ignore[method-assign]

    def _dedupe(self, events: Any) -> list[Any]:
        before = self.informer.revision
        fresh = self.original(events)
        if len(fresh) != len(events):
            kept = {id(ev) for ev in fresh}
            for ev in events:
                if id(ev) not in kept:
                    self.dropped += 1
                    if len(self.sample) < 5:
                        self.sample.append(
                            {
                                "key": ev.key.decode(errors="replace"),
                                "mod_revision": ev.mod_revision,
                                "informer_revision": before,
                                "delete": ev.is_delete,
                            }
                        )
        return fresh


async def load(
    call: Callable[[], Awaitable[Any]], n: int, concurrency: int, yield_each: bool = False
) -> dict[str, Any]:
    """Await ``call()`` ``n`` times over ``concurrency`` concurrent callers; summarise.

    Each caller takes the next call number from one shared counter, so the callers stay
    busy until all ``n`` are done. A call that raises is counted by exception type, not
    timed. With ``yield_each`` a caller yields to the loop after each call (outside the
    timed part): a local cast never suspends, so without it one caller would fill the
    mailbox before its consumer ever runs.
    """
    latencies: list[float] = []
    errors: dict[str, int] = {}
    counter = iter(range(n))
    perf = time.perf_counter

    async def caller() -> None:
        for _ in counter:
            began = perf()
            try:
                await call()
            except Exception as exc:
                name = type(exc).__name__
                errors[name] = errors.get(name, 0) + 1
            else:
                latencies.append(perf() - began)
            if yield_each:
                await asyncio.sleep(0)

    cpu = time.process_time()
    began = perf()
    async with asyncio.TaskGroup() as tg:
        for _ in range(concurrency):
            tg.create_task(caller())
    wall = perf() - began
    cpu = time.process_time() - cpu
    return {**summarise(latencies, wall), "errors": errors, "cpu_s": cpu, "n": n}


def summarise(latencies: list[float], wall: float) -> dict[str, Any]:
    """Latency percentiles (microseconds), calls/s and wall time of one load."""
    ordered = sorted(latencies)
    count = len(ordered)
    if not count:
        return {"ok": 0, "wall_s": wall}

    def pct(p: float) -> float:
        return ordered[min(count - 1, int(count * p))] * 1e6

    return {
        "ok": count,
        "wall_s": wall,
        "calls_per_s": count / wall,
        "median_us": statistics.median(ordered) * 1e6,
        "mean_us": statistics.fmean(ordered) * 1e6,
        "p90_us": pct(0.90),
        "p99_us": pct(0.99),
        "p999_us": pct(0.999),
        "min_us": ordered[0] * 1e6,
        "max_us": ordered[-1] * 1e6,
    }


def echo_message(payload_bytes: int) -> dict[str, str]:
    """A message whose compact JSON is ``payload_bytes`` long (at least 24)."""
    return {"op": "echo", "data": "x" * max(0, payload_bytes - 24)}


class Node:
    """The control channel of one benchmark node."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.tap = Tap(hub)
        self.drops = DropCounter(hub)
        self.profiler: cProfile.Profile | None = None
        self.profile_req: dict[str, Any] = {}

    async def serve(self, reader: asyncio.StreamReader, stop: asyncio.Event) -> None:
        """Answer requests until EOF (then set ``stop``); each request runs as a task."""
        async with asyncio.TaskGroup() as tg:
            while True:
                line = await reader.readline()
                if not line:
                    stop.set()
                    return
                try:
                    request = json.loads(line)
                except ValueError:
                    emit({"error": f"bad request line: {line[:200]!r}"})
                    continue
                tg.create_task(self.handle(request))

    async def handle(self, request: dict[str, Any]) -> None:
        rid = request.get("id")
        cmd = request.get("cmd", "")
        method = getattr(self, f"cmd_{cmd}", None)
        try:
            if method is None:
                raise ValueError(f"unknown command {cmd!r}")
            reply = await method(rid, request)
        except Exception as exc:  # report, never kill the node
            log.exception("command %s failed", cmd)
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        emit({"id": rid, **reply})

    async def cmd_ping(self, rid: Any, req: dict[str, Any]) -> dict[str, Any]:
        return {"t": time.monotonic(), "node_id": self.hub.node_id}

    async def cmd_wait_running(self, rid: Any, req: dict[str, Any]) -> dict[str, Any]:
        wait = RunningWait(
            self.hub,
            int(req["count"]),
            req.get("exclude") or (),
            bool(req.get("placed")),
            req.get("member"),
        )
        if not wait.future.done():
            self.tap.waits.append(wait)
        emit({"id": rid, "armed": True, "t": time.monotonic()})
        try:
            async with asyncio.timeout(float(req.get("timeout", 60))):
                t = await wait.future
        except TimeoutError:
            if wait in self.tap.waits:
                self.tap.waits.remove(wait)
            return {
                "ok": False,
                "reason": "timeout",
                "good": len(wait.good),
                "missing": self._missing(wait),
                **self._sizes(),
            }
        return {
            "ok": True,
            "t": t,
            "node_id": self.hub.node_id,
            "milestones": wait.milestones(),
            **self._sizes(),
        }

    async def cmd_start_children(self, rid: Any, req: dict[str, Any]) -> dict[str, Any]:
        """Start ``n`` children (default: idle) from this node (instead of a HubClient)."""
        start = str(req.get("start") or IDLE)
        specs = [ChildSpec(id=f"child-{i}", start=start) for i in range(int(req["n"]))]
        began = time.monotonic()
        result = await self.hub.start_children(specs)
        return {
            "t_began": began,
            "t_written": time.monotonic(),
            "errors": [f"{e.child_id}: {e.reason}" for e in result.errors[:5]],
        }

    async def cmd_seen(self, rid: Any, req: dict[str, Any]) -> dict[str, Any]:
        return {"t": self.tap.first_seen.get(req["node"])}

    async def cmd_get_pid_bench(self, rid: Any, req: dict[str, Any]) -> dict[str, Any]:
        ids = list(self.hub.registry.handles)
        if not ids:
            return {"error": "registry is empty"}
        batch = min(int(req.get("batch", 1000)), len(ids))
        repeat = int(req.get("repeat", 1000))
        get_pid = self.hub.get_pid
        chunks = [ids[i : i + batch] for i in range(0, len(ids) - batch + 1, batch)]
        assert all(get_pid(cid) is not None for cid in chunks[0])
        per_call: list[float] = []
        loop_only: list[float] = []
        for i in range(repeat):
            chunk = chunks[i % len(chunks)]
            timer = timeit.Timer("for c in ids: get(c)", globals={"ids": chunk, "get": get_pid})
            per_call.append(timer.timeit(1) / batch)
            empty = timeit.Timer("for c in ids: pass", globals={"ids": chunk})
            if i % 10 == 0:
                loop_only.append(empty.timeit(1) / batch)
            if i % 50 == 49:
                await asyncio.sleep(0)  # keep the lease and the watch serviced
        per_call.sort()
        return {
            "entries": len(ids),
            "calls": batch * repeat,
            "batch": batch,
            "median_us": statistics.median(per_call) * 1e6,
            "p99_us": per_call[min(len(per_call) - 1, int(len(per_call) * 0.99))] * 1e6,
            "min_us": per_call[0] * 1e6,
            "loop_overhead_us": statistics.median(loop_only) * 1e6,
        }

    async def cmd_call_bench(self, rid: Any, req: dict[str, Any]) -> dict[str, Any]:
        hub = self.hub
        child_id = str(req["child_id"])
        kind = str(req.get("kind", "call"))
        timeout = float(req.get("call_timeout", 5.0))
        message = echo_message(int(req.get("payload_bytes", 64)))
        handle = hub.get_pid(child_id)
        if handle is None:
            return {"error": f"{child_id!r} is not in this node's registry"}
        if kind == "call":

            async def call() -> None:
                reply = await hub.call(child_id, message, timeout=timeout)
                if reply != message:
                    raise AssertionError(f"bad echo: {reply!r}")

        elif kind == "cast":

            async def call() -> None:
                await hub.cast(child_id, message, timeout=timeout)

        else:
            return {"error": f"unknown kind {kind!r}"}
        concurrency = int(req.get("concurrency", 1))
        yield_each = bool(req.get("yield_each", False))
        warmup = int(req.get("warmup", 0))
        if warmup:
            await load(call, warmup, concurrency, yield_each)
        result = await load(call, int(req["n"]), concurrency, yield_each)
        return {
            **result,
            "kind": kind,
            "concurrency": concurrency,
            "child_node": handle.node_id,
            "local": handle.node_id == hub.node_id,
            "payload_bytes": len(json.dumps(message, separators=(",", ":"))),
        }

    async def cmd_echo_bench(self, rid: Any, req: dict[str, Any]) -> dict[str, Any]:
        from bench import rpc_echo  # grpc client helpers, only needed here

        mode = str(req["mode"])
        payload = json.dumps(echo_message(int(req.get("payload_bytes", 64)))).encode()
        make = {"grpc": rpc_echo._client_grpc, "rpc": rpc_echo._client_hub}[mode]
        echo, close = await make(str(req["address"]), payload)

        async def call() -> None:
            await echo(0)

        concurrency = int(req.get("concurrency", 1))
        try:
            if int(req.get("warmup", 0)):
                await load(call, int(req["warmup"]), concurrency)
            result = await load(call, int(req["n"]), concurrency)
        finally:
            await close()
        return {**result, "mode": mode, "concurrency": concurrency, "payload_bytes": len(payload)}

    def _missing(self, wait: RunningWait, limit: int = 10) -> dict[str, Any]:
        """Why children do not count yet: a sample, and a tally by (state, node)."""
        reg = self.hub.registry
        tally: dict[str, int] = {}
        sample: dict[str, Any] = {}
        for child_id in reg.specs.keys() - wait.good:
            handle = reg.handles.get(child_id)
            owner = reg.owners.get(child_id)
            desc = {
                "state": handle.state.value if handle else None,
                "node": handle.node_id if handle else None,
                "placement": self.hub.placement(child_id),
                "owner_key": owner is not None,
                "token": handle.fencing_token if handle else None,
                "local_running": self.hub.supervisor.is_running(child_id),
                "owned_here": child_id in self.hub.reconciler.owned,
            }
            label = f"{desc['state']}@{desc['node']}->{desc['placement']}"
            tally[label] = tally.get(label, 0) + 1
            if len(sample) < limit:
                sample[child_id] = desc
        return {"tally": tally, "sample": sample}

    def _sizes(self) -> dict[str, Any]:
        reg = self.hub.registry
        return {
            "specs": len(reg.specs),
            "owners": len(reg.owners),
            "handles": len(reg.handles),
            "nodes": sorted(reg.nodes),
            "revision": reg.revision,
        }

    async def cmd_stats(self, rid: Any, req: dict[str, Any]) -> dict[str, Any]:
        hub = self.hub
        running = sum(1 for h in hub.registry.handles.values() if h.state is OwnerState.RUNNING)
        return {
            "node_id": hub.node_id,
            "pid": os.getpid(),
            **read_status(),
            **self._sizes(),
            "running": running,
            "local_children": len(hub.supervisor),
            "owned": len(hub.reconciler.owned),
            "tasks": len(asyncio.all_tasks()),
            "batcher_batches": hub.batcher.batches,
            "batcher_ops": hub.batcher.ops,
            "reconcile_rounds": hub.reconciler.rounds,
            "registry_batches": self.tap.batches,
            "relists": hub.informer.relists,
            "reconnects": hub.informer.reconnects,
            "informer_dropped": self.drops.dropped,
            "informer_dropped_sample": self.drops.sample,
            "settled": hub.is_settled(),
        }

    async def cmd_diagnose(self, rid: Any, req: dict[str, Any]) -> dict[str, Any]:
        wait = RunningWait(
            self.hub, 1 << 60, req.get("exclude") or (), bool(req.get("placed")), None
        )
        return {"missing": self._missing(wait, int(req.get("limit", 10))), **self._sizes()}

    async def cmd_placement(self, rid: Any, req: dict[str, Any]) -> dict[str, Any]:
        return {
            "placement": {
                cid: h.node_id
                for cid, h in self.hub.registry.handles.items()
                if h.state is OwnerState.RUNNING
            }
        }

    async def cmd_journal(self, rid: Any, req: dict[str, Any]) -> dict[str, Any]:
        return {"node_id": self.hub.node_id, "rows": workers.journal_rows(self.hub.node_id)}

    async def cmd_registry_mem(self, rid: Any, req: dict[str, Any]) -> dict[str, Any]:
        hub = self.hub
        kvs, revision = await hub.store.list_prefix(hub.keys.root)
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            fresh = Registry(hub.keys)
            fresh.reset(kvs, revision)
            used = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        children = len(fresh.specs)
        return {
            "keys": len(kvs),
            "children": children,
            "handles": len(fresh.handles),
            "bytes": used,
            "bytes_per_child": used / children if children else None,
        }

    async def cmd_profile_start(self, rid: Any, req: dict[str, Any]) -> dict[str, Any]:
        clock = req.get("clock", "wall")
        self.profiler = (
            cProfile.Profile(time.thread_time) if clock == "thread" else cProfile.Profile()
        )
        self.profile_req = req  # path/top/sort, also used if the node exits while profiling
        self.profiler.enable()
        return {"t": time.monotonic()}

    async def cmd_profile_stop(self, rid: Any, req: dict[str, Any]) -> dict[str, Any]:
        text = self.finish_profile({**self.profile_req, **req})
        if text is None:
            return {"error": "not profiling"}
        return {"text": text, "path": req.get("path")}

    def finish_profile(self, req: dict[str, Any]) -> str | None:
        """Stop profiling; dump to ``path`` (and a text summary to ``path``.txt)."""
        profiler, self.profiler = self.profiler, None
        if profiler is None:
            return None
        profiler.disable()
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats(req.get("sort", "tottime")).print_stats(int(req.get("top", 30)))
        stats.sort_stats("cumulative").print_stats(int(req.get("top", 30)))
        path = req.get("path")
        if path:
            profiler.dump_stats(path)
            with open(f"{path}.txt", "w") as fh:
                fh.write(out.getvalue())
        return out.getvalue()


async def run(args: argparse.Namespace) -> int:
    hub = Hub(
        args.hub,
        endpoints=[args.endpoint],
        node_id=args.node_id,
        prefix=args.prefix,
        lease_ttl=args.ttl,
        drain_timeout=args.drain_timeout,
        allowed_targets=["bench.workers:*"],
        **({"migration": HotSwap()} if args.migration == "hot" else {}),
    )
    node = Node(hub)
    if args.profile_from_start:  # before the hub starts; ``profile_stop`` ends it
        await node.cmd_profile_start(
            None, {"path": args.profile_from_start, "top": 35, "sort": "tottime"}
        )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    graceful = asyncio.Event()

    def on_term() -> None:
        graceful.set()
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_term)
    reader = asyncio.StreamReader(limit=16 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    await hub.start()
    emit({"event": "ready", "node_id": hub.node_id, "pid": os.getpid(), "t": time.monotonic()})
    # ``cpu`` in the events below: this process's CPU seconds (user + system) so far.
    serving = asyncio.create_task(node.serve(reader, stop), name="bench:serve")
    try:
        await stop.wait()
    finally:
        serving.cancel()
        try:
            await serving
        except asyncio.CancelledError:
            pass
    began = time.monotonic()
    emit(
        {
            "event": "draining" if graceful.is_set() else "leaving",
            "t": began,
            "cpu": time.process_time(),
        }
    )
    await hub.stop(drain=graceful.is_set())
    node.finish_profile(node.profile_req)  # a node profiled while it leaves
    emit(
        {
            "event": "stopped",
            "t": time.monotonic(),
            "seconds": time.monotonic() - began,
            "cpu": time.process_time(),
        }
    )
    if workers.JOURNAL:  # stateful workers ran here: the driver wants their records
        rows = workers.journal_rows(hub.node_id)
        emit({"event": "journal", "node_id": hub.node_id, "rows": rows})
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--endpoint", required=True)
    p.add_argument("--node-id", required=True)
    p.add_argument("--hub", default="bench")
    p.add_argument("--prefix", default="/processhub")
    p.add_argument("--ttl", type=int, default=3)
    p.add_argument("--drain-timeout", type=float, default=60.0)
    p.add_argument("--log-level", default="warning")
    p.add_argument(
        "--migration",
        choices=("default", "hot"),
        default="default",
        help="hot: Hub(migration=HotSwap()) (state handover); default: the hub's default",
    )
    p.add_argument(
        "--profile-from-start",
        metavar="PATH",
        default=None,
        help="cProfile this process from before the hub starts (as profile_start)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
