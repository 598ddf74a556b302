"""Size limits in the store: error translation, and reads that never outgrow the channel.

The KV stub below answers like etcd, and fails a reply larger than the receive limit the
way gRPC's client does, so that read planning and splitting are checked without MBs of
data in a real etcd (tests/integration/test_large_state.py does that).
"""

from __future__ import annotations

from typing import Any

import grpc
import grpc.aio
import pytest
from aetcd import rpc

from hub.errors import ConfigError, RequestTooLarge, RevisionCompacted, StoreError
from hub.etcd.store import (
    PLANNED_VALUE_BYTES,
    RESPONSE_HEADER_BYTES,
    EtcdConfig,
    ResponseTooLarge,
    Store,
    translate,
)

MiB = 1024 * 1024


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details, "")


@pytest.mark.parametrize(
    ("code", "details", "expected"),
    [
        # gRPC's own client-side check: executed by etcd, reply dropped here
        (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "Stream removed (CLIENT: Received message larger than max (6761374 vs. 4194304))",
            ResponseTooLarge,
        ),
        # etcd's gRPC server (--max-request-bytes + 512 KiB): never executed
        (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "grpc: received message larger than max (2097273 vs. 2097152)",
            RequestTooLarge,
        ),
        (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: request is too large", RequestTooLarge),
        # other RESOURCE_EXHAUSTED errors are not about size: never split or shrunk for
        (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "etcdserver: mvcc: database space exceeded",
            StoreError,
        ),
    ],
)
def test_size_errors_are_told_apart(
    code: grpc.StatusCode, details: str, expected: type[StoreError]
) -> None:
    assert type(translate(rpc_error(code, details))) is expected


def test_the_receive_limit_is_validated() -> None:
    assert EtcdConfig().max_response_bytes == 64 * MiB
    with pytest.raises(ConfigError, match="max_response_bytes"):
        EtcdConfig(max_response_bytes=MiB - 1)


class FakeKV:
    """Range and read-only Txn over a dict, with gRPC's receive limit on every reply."""

    def __init__(self, data: dict[bytes, bytes], limit: int) -> None:
        self.data = dict(sorted(data.items()))
        self.limit = limit
        self.txn_sizes: list[int] = []  # keys asked per txn, refused ones included
        self.range_limits: list[int] = []

    def _kv(self, key: bytes) -> Any:
        return rpc.KeyValue(key=key, value=self.data[key], create_revision=1, mod_revision=2)

    def _reply(self, response: Any) -> Any:
        size = response.ByteSize()
        if size > self.limit:
            raise rpc_error(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"Stream removed (CLIENT: Received message larger than max ({size} vs. "
                f"{self.limit}))",
            )
        return response

    async def Txn(self, request: Any, timeout: float, metadata: Any) -> Any:
        self.txn_sizes.append(len(request.success))
        responses = []
        for op in request.success:
            key = op.request_range.key
            kvs = [self._kv(key)] if key in self.data else []
            responses.append(rpc.ResponseOp(response_range=rpc.RangeResponse(kvs=kvs)))
        return self._reply(rpc.TxnResponse(succeeded=True, responses=responses))

    async def Range(self, request: Any, timeout: float, metadata: Any) -> Any:
        self.range_limits.append(request.limit)
        keys = [k for k in self.data if request.key <= k < request.range_end]
        page = keys[: request.limit]
        resp = rpc.RangeResponse(kvs=[self._kv(k) for k in page], more=len(keys) > len(page))
        resp.header.revision = 9
        return self._reply(resp)


def fake_store(data: dict[bytes, bytes], limit: int) -> tuple[Store, FakeKV]:
    store = Store(EtcdConfig(max_response_bytes=limit))
    kv = FakeKV(data, limit)
    store._channel = object()  # type: ignore[assignment]  # "connected"
    store._kv = kv
    return store, kv


async def test_reads_are_planned_for_values_of_the_planned_size() -> None:
    limit = 8 * MiB
    data = {b"/s/%03d" % i: b"x" * 100 for i in range(69)}
    store, kv = fake_store(data, limit)
    found, too_large = await store.get_many([(key, 5) for key in data] + [(b"/s/none", 5)])
    assert {k: v.value for k, v in found.items()} == data and not too_large
    per_txn = (limit - RESPONSE_HEADER_BYTES) // (PLANNED_VALUE_BYTES + 64 + 6)
    # 31, 31, 8, read concurrently: none refused
    assert sorted(kv.txn_sizes) == sorted([per_txn, per_txn, 70 - 2 * per_txn])


async def test_a_reply_too_large_is_read_again_in_halves() -> None:
    # Values bigger than etcd's default allows (an etcd configured for more).
    data = {b"/s/%d" % i: bytes([i]) * (3 * MiB) for i in range(5)}
    store, kv = fake_store(data, 8 * MiB)
    found, too_large = await store.get_many([(key, 0) for key in data])
    assert {k: v.value for k, v in found.items()} == data and not too_large
    assert kv.txn_sizes[0] == 5  # 15 MiB: refused, then 2 + 3, then 1 + 2 ...
    assert max(kv.txn_sizes[1:]) <= 3


async def test_a_value_that_never_fits_is_reported_not_raised() -> None:
    data = {b"/s/a": b"a" * 1000, b"/s/b": b"b" * (MiB + 1), b"/s/c": b"c" * 1000}
    store, _ = fake_store(data, MiB)
    found, too_large = await store.get_many([(key, 0) for key in data])
    assert set(found) == {b"/s/a", b"/s/c"}
    assert set(too_large) == {b"/s/b"}
    assert isinstance(too_large[b"/s/b"], ResponseTooLarge)


async def test_listing_halves_its_pages_until_they_fit() -> None:
    data = {b"/p/%03d" % i: b"v" * (100 * 1024) for i in range(40)}
    store, kv = fake_store(data, MiB)
    kvs, revision = await store.list_prefix(b"/p/", page_size=2000)
    assert [x.key for x in kvs] == list(data) and revision == 9
    assert kv.range_limits[:5] == [2000, 1000, 500, 250, 125]  # ... down to 7 (700 KiB)
    assert max(n for n in kv.range_limits if n * 100 * 1024 <= MiB) == 7


async def test_listing_raises_when_one_key_alone_does_not_fit() -> None:
    store, _ = fake_store({b"/p/big": b"v" * (2 * MiB)}, MiB)
    with pytest.raises(ResponseTooLarge):
        await store.list_prefix(b"/p/")


async def test_an_error_in_one_of_several_concurrent_reads_is_raised_as_itself() -> None:
    data = {b"/s/%03d" % i: b"x" * 100 for i in range(200)}
    store, kv = fake_store(data, 8 * MiB)

    async def compacted(request: Any, timeout: float, metadata: Any) -> Any:
        raise rpc_error(
            grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted"
        )

    kv.Txn = compacted  # type: ignore[method-assign]
    with pytest.raises(RevisionCompacted):
        await store.get_many([(key, 5) for key in data])
