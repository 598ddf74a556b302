"""The ceiling: how fast this etcd takes batched writes when nothing else runs.

Writes ``n`` keys shaped like our spec keys (same key layout, values the size of an encoded
spec) under a separate hub id, as nested txns packed ``batch`` (default 127, etcd's
128-operation budget minus one) per outer txn with ``in_flight`` (default 4, like
:class:`hub.etcd.batcher.TxnBatcher`) outer txns pipelined. Requests are built before the clock
starts: this is etcd plus the gRPC client, not our code.

Variants:

* ``put``: a nested txn holding one put (no compare);
* ``cas``: a nested create-if-absent txn (``create_revision == 0`` -> put), the shape of
  our spec and owner writes;
* ``batcher``: the ``cas`` ops submitted one by one through :class:`hub.etcd.batcher.TxnBatcher`
  (our batching code on top of the raw client).

Run alone: ``python bench/ceiling.py --endpoint 127.0.0.1:2379 --keys 10000``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hub.etcd.batcher import TxnBatcher
from hub.etcd.codec import encode_spec
from hub.etcd.keys import KeySpace
from hub.etcd.store import EtcdConfig, Store, cmp_create, op_put, op_txn
from hub.model import ChildSpec

RAW_HUB = "bench-ceiling"


def _requests(keys: KeySpace, n: int, cas: bool, tag: str) -> list[tuple[bytes, Any]]:
    value = encode_spec(ChildSpec(id="child-0", start="bench.workers:idle"), time.time())
    out = []
    for i in range(n):
        key = keys.spec(f"{tag}-child-{i}")
        compares = [cmp_create(key, "=", 0)] if cas else []
        out.append((key, op_txn(compares, [op_put(key, value)])))
    return out


async def _pipelined(store: Store, ops: list[Any], batch: int, in_flight: int) -> int:
    slots = asyncio.Semaphore(in_flight)
    failed = 0

    async def send(chunk: list[Any]) -> None:
        nonlocal failed
        async with slots:
            result = await store.txn((), chunk, timeout=30)
        failed += sum(1 for r in result.responses if not r.succeeded)

    await asyncio.gather(*(send(ops[i : i + batch]) for i in range(0, len(ops), batch)))
    return failed


async def measure(
    endpoint: str,
    n: int,
    *,
    batch: int = 127,
    in_flight: int = 4,
    prefix: str = "/processhub",
    variants: tuple[str, ...] = ("put", "cas", "batcher"),
    warmup: int = 1000,
) -> dict[str, Any]:
    """Time each variant on a fresh key range; delete the keys afterwards."""
    keys = KeySpace(RAW_HUB, prefix)
    out: dict[str, Any] = {"keys": n, "batch": batch, "in_flight": in_flight}
    async with Store(EtcdConfig(endpoints=(endpoint,), request_timeout=30)) as store:
        warm = [op for _, op in _requests(keys, warmup, False, "warmup")]
        await _pipelined(store, warm, batch, in_flight)
        for variant in variants:
            reqs = _requests(keys, n, variant != "put", variant)
            started = time.monotonic()
            if variant == "batcher":
                batcher = TxnBatcher(store, max_in_flight=in_flight, timeout=30)
                runner = asyncio.create_task(batcher.run())
                started = time.monotonic()
                futures = [batcher.submit(op, key) for key, op in reqs]
                results = await asyncio.gather(*futures)
                seconds = time.monotonic() - started
                runner.cancel()
                try:
                    await runner
                except asyncio.CancelledError:
                    pass
                failed = sum(1 for r in results if not r.succeeded)
            else:
                ops = [op for _, op in reqs]
                failed = await _pipelined(store, ops, batch, in_flight)
                seconds = time.monotonic() - started
            out[variant] = {
                "seconds": seconds,
                "keys_per_s": n / seconds,
                "failed": failed,
            }
        await store.delete(keys.root, prefix=True, timeout=30)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--endpoint", default=None, help="etcd host:port (default: a LocalEtcd)")
    p.add_argument("--keys", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=127)
    p.add_argument("--in-flight", type=int, default=4)
    args = p.parse_args()

    async def go(endpoint: str) -> dict[str, Any]:
        return await measure(endpoint, args.keys, batch=args.batch, in_flight=args.in_flight)

    if args.endpoint:
        result = asyncio.run(go(args.endpoint))
    else:
        from hub.operate.localetcd import LocalEtcd

        with LocalEtcd(name="bench-ceiling") as etcd:
            result = asyncio.run(go(etcd.endpoint))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
