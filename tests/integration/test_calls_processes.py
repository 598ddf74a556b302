"""call/cast against node processes: kill -9 failover and mutual TLS with a token."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.certs import make_pki
from support.cluster import Cluster
from support.wait import wait_until

from hub import ChildSpec
from hub.client import HubClient
from hub.errors import CallError, CallTimeout, NodeUnreachable, RpcAuthError
from hub.etcd.store import TlsConfig
from hub.messaging.rpc import RpcConfig

pytestmark = pytest.mark.slow  # node processes

TTL = 3


@pytest.fixture
def cluster(etcd_endpoint: str, hub_prefix: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(
        hub_id="cp", endpoint=etcd_endpoint, prefix=hub_prefix, lease_ttl=TTL, record_dir=tmp_path
    )
    try:
        yield c
    finally:
        c.close()


async def test_every_call_gets_a_reply_or_a_typed_error_through_a_kill9(
    cluster: Cluster, etcd_endpoint: str, hub_prefix: str
) -> None:
    for _ in range(3):
        cluster.add()
    ids = [f"k-{i}" for i in range(15)]
    async with HubClient(
        "cp", endpoints=[etcd_endpoint], prefix=hub_prefix, validate_targets=False
    ) as client:
        result = await client.start_children(
            [ChildSpec(id=c, start="support.recorder:Echo") for c in ids], wait=True, timeout=20
        )
        assert result.ok, result.errors
        outcomes = {"ok": 0, "error": 0}
        stop = asyncio.Event()

        async def caller(child_id: str) -> None:
            loop = asyncio.get_running_loop()
            while not stop.is_set():
                began = loop.time()
                try:
                    reply = await client.call(child_id, "ping", timeout=3)
                    assert reply["echo"] == "ping"
                    outcomes["ok"] += 1
                except CallError:
                    outcomes["error"] += 1
                assert loop.time() - began < 3.5, "a call outlived its timeout"

        async with asyncio.TaskGroup() as tg:
            for child_id in ids:
                tg.create_task(caller(child_id))
            await wait_until(lambda: outcomes["ok"] > 100, 10)
            victim = max(cluster.nodes, key=lambda n: sum(h.node_id == n for h in result.started))
            cluster.kill(victim)
            await wait_until(
                lambda: all(
                    (h := client.get_pid(c)) is not None and h.node_id != victim and h.is_running
                    for c in ids
                ),
                TTL + 10,
            )
            before = outcomes["ok"]
            await wait_until(lambda: outcomes["ok"] > before + 100, 10)
            stop.set()
        for child_id in ids:  # every child answers again, from a survivor
            assert (await client.call(child_id, "x"))["node"] != victim


async def test_node_rpc_requires_tls_and_the_token_when_configured(
    etcd_endpoint: str, hub_prefix: str, tmp_path: Path
) -> None:
    pki = make_pki(tmp_path / "pki")
    os.environ["PROCESSHUB_RPC_TOKEN"] = "t0ken"
    try:
        c = Cluster(
            hub_id="tl",
            endpoint=etcd_endpoint,
            prefix=hub_prefix,
            lease_ttl=TTL,
            record_dir=tmp_path,
            extra_args=[
                "--rpc-cert",
                str(pki.server_cert),
                "--rpc-key",
                str(pki.server_key),
                "--rpc-ca",
                str(pki.ca_cert),
            ],
        )
        try:
            c.add()
        finally:
            del os.environ["PROCESSHUB_RPC_TOKEN"]
        good = RpcConfig(
            token="t0ken",
            client_tls=TlsConfig(str(pki.ca_cert), str(pki.client_cert), str(pki.client_key)),
        )
        async with HubClient(
            "tl", endpoints=[etcd_endpoint], prefix=hub_prefix, rpc=good, validate_targets=False
        ) as client:
            result = await client.start_children(
                [ChildSpec(id="s", start="support.recorder:Echo")], wait=True, timeout=20
            )
            assert result.ok, result.errors
            assert (await client.call("s", "hi"))["echo"] == "hi"
        no_token = RpcConfig(client_tls=good.client_tls)
        plaintext = RpcConfig(token="t0ken")
        no_client_cert = RpcConfig(token="t0ken", client_tls=TlsConfig(str(pki.ca_cert)))
        for config in (no_token, plaintext, no_client_cert):
            async with HubClient(
                "tl", endpoints=[etcd_endpoint], prefix=hub_prefix, rpc=config
            ) as intruder:
                # Refused: at once (auth) or, if the server just drops the connection, as a
                # timeout whose cause is the unreachable node. Never delivered either way.
                with pytest.raises((RpcAuthError, NodeUnreachable, CallTimeout)) as refused:
                    await intruder.call("s", "hi", timeout=2)
                if isinstance(refused.value, CallTimeout):
                    assert isinstance(refused.value.__cause__, (NodeUnreachable, RpcAuthError))
    finally:
        c.close()
