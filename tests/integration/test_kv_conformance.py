"""The KV conformance suite (tests/support/kv_conformance.py) against a real etcd."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from support.kv_conformance import Backend, KVConformance
from support.wait import wait_until

from hub.etcd.store import EtcdConfig, Store

pytestmark = pytest.mark.etcd


class TestEtcdStore(KVConformance):
    @pytest.fixture
    async def backend(self, etcd_endpoint: str, hub_prefix: str) -> AsyncIterator[Backend]:
        async with Store(EtcdConfig(endpoints=(etcd_endpoint,), request_timeout=3.0)) as store:

            async def expire(lease_id: int, ttl: int) -> None:
                async def gone() -> bool:
                    return await store.lease_ttl(lease_id) == -1

                await wait_until(gone, ttl + 5.0, interval=0.1, message="lease never expired")

            yield Backend(store, f"{hub_prefix}/".encode(), expire)
