"""Per-call costs of the hot paths of a node, without etcd: ``python bench/micro.py``.

Every node decodes every watch event (three per child when children start: the spec, the
owner in state ``starting``, the owner in state ``running``), plans each touched child,
and its supervisor starts its share of workers. This script times those steps one by one
so the cluster figures of ``run_all.py`` can be explained (and improvements checked):

* ``registry_put_spec`` / ``registry_put_owner``: :meth:`Registry.apply` per event;
* ``decode_spec`` and its JSON part, ``keys_split``, ``ring_owner``;
* ``acquire_op``: building one acquire nested txn (what the reconciler submits);
* ``supervisor_start``/``_stop``: starting, then stopping, an idle worker; and
  ``worker_bytes``, the memory one running idle worker holds (tracemalloc).

Prints microseconds per call and writes ``bench/results/micro.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
import timeit
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.workers import IDLE
from hub.core.registry import Registry
from hub.core.supervisor import Supervisor, WorkerExit
from hub.etcd.codec import decode_spec, encode_owner, encode_spec
from hub.etcd.keys import KeySpace
from hub.etcd.store import Event, cmp_create, op_put, op_txn
from hub.model import ChildSpec, OwnerRecord, OwnerState
from strategies.distribution import ConsistentHashing


def per_call(fn: Any, calls: int, repeat: int = 5) -> float:
    """Best-of-``repeat`` microseconds per call of ``fn(i)`` for i in range(calls)."""

    def loop() -> None:
        for i in range(calls):
            fn(i)

    return min(timeit.repeat(loop, number=1, repeat=repeat)) / calls * 1e6


class _Events:
    def worker_started(self, child_id: str, fencing_token: int, restarts: int) -> None:
        pass

    def worker_restarting(self, *args: Any) -> None:
        pass

    def worker_exited(self, child_id: str, fencing_token: int, exit: WorkerExit) -> None:
        pass


async def supervisor_cost(n: int) -> dict[str, float]:
    sup = Supervisor(hub_id="bench", node_id="node-1", events=_Events())
    ready = asyncio.Event()
    runner = asyncio.create_task(sup.run(ready=ready))
    await ready.wait()
    specs = [ChildSpec(id=f"child-{i}", start=IDLE) for i in range(n)]
    started = time.perf_counter()
    for i, spec in enumerate(specs):
        sup.start(spec, fencing_token=i + 1, incarnation=1)
    for _ in range(10):  # let every instance pass its start window
        await asyncio.sleep(0)
    start_s = time.perf_counter() - started
    await sup.stop_many([s.id for s in specs])
    # Memory of running workers, measured on a second round (imports and caches are warm).
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for i, spec in enumerate(specs):
        sup.start(spec, fencing_token=i + 1, incarnation=1)
    for _ in range(10):
        await asyncio.sleep(0)
    worker_bytes = (tracemalloc.get_traced_memory()[0] - base) / n
    tracemalloc.stop()
    started = time.perf_counter()
    await sup.stop_many([s.id for s in specs])
    stop_s = time.perf_counter() - started
    runner.cancel()
    try:
        await runner
    except asyncio.CancelledError:
        pass
    return {"start_us": start_s / n * 1e6, "stop_us": stop_s / n * 1e6, "bytes": worker_bytes}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "micro.json")
    args = p.parse_args()
    n = args.n
    keys = KeySpace("bench", "/processhub")
    now = time.time()
    spec_events = [
        Event(
            keys.spec(f"child-{i}"),
            encode_spec(ChildSpec(id=f"child-{i}", start=IDLE), now),
            False,
            100 + i,
            100 + i,
            0,
        )
        for i in range(n)
    ]
    starting = encode_owner(OwnerRecord("node-1", 7, OwnerState.STARTING, now))
    running = encode_owner(OwnerRecord("node-1", 7, OwnerState.RUNNING, now))
    owner_events = [
        Event(keys.owner(f"child-{i}"), v, False, 200 + i, 200 + i + k, 7)
        for k, v in ((0, starting), (1, running))
        for i in range(n)
    ]
    out: dict[str, Any] = {"n": n, "python": platform.python_version()}

    def registry_with_specs() -> Registry:
        reg = Registry(keys)
        reg.apply(spec_events, 100 + n)
        return reg

    # One event per call, as etcd batches them (apply takes the whole batch).
    best = []
    for _ in range(5):
        reg = Registry(keys)
        t = time.perf_counter()
        reg.apply(spec_events, 100 + n)
        best.append(time.perf_counter() - t)
    out["registry_put_spec_us"] = min(best) / n * 1e6
    best = []
    for _ in range(5):
        reg = registry_with_specs()
        t = time.perf_counter()
        reg.apply(owner_events, 300 + 2 * n)
        best.append(time.perf_counter() - t)
    out["registry_put_owner_us"] = min(best) / (2 * n) * 1e6

    values = [ev.value for ev in spec_events]
    ks = [ev.key for ev in spec_events]
    out["decode_spec_us"] = per_call(lambda i: decode_spec(ks[i], values[i]), n)
    # decode_spec parses args_json and metadata_json, "{}" each for these children
    out["json_loads_two_empty_objects_us"] = per_call(lambda i: json.loads("{}"), n) * 2
    out["keys_split_us"] = per_call(lambda i: keys.split(ks[i]), n)
    out["keys_owner_us"] = per_call(lambda i: keys.owner(f"child-{i}"), n)
    ring = ConsistentHashing().ring({f"node-{i}": 1 for i in (1, 2, 3)})
    ids = [f"child-{i}" for i in range(n)]
    out["ring_owner_us"] = per_call(lambda i: ring.owner(ids[i]), n)
    value = starting

    def acquire_op(i: int) -> Any:
        owner_key = keys.owner(ids[i])
        return op_txn(
            [cmp_create(owner_key, "=", 0), cmp_create(ks[i], "=", 100 + i)],
            [op_put(owner_key, value, 7)],
        )

    out["acquire_op_us"] = per_call(acquire_op, n)
    sup = asyncio.run(supervisor_cost(min(n, 5000)))
    out["supervisor_start_us"] = sup["start_us"]
    out["supervisor_stop_us"] = sup["stop_us"]
    out["worker_bytes"] = sup["bytes"]
    # What one node spends per child at start, from the parts (3 events + plan + share):
    out["note"] = (
        "per child, every node: 1 spec + 2 owner events; the owner node also builds an "
        "acquire op and starts a worker"
    )
    width = max(len(k) for k in out)
    for name, val in out.items():
        if isinstance(val, float):
            unit = "B" if name.endswith("bytes") else "us"
            print(f"{name:<{width}}  {val:8.2f} {unit}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
