"""Node HTTP endpoints on a live hub (real etcd, in-process): health, readiness, Prometheus
metrics (parsed with prometheus_client's parser) and the JSON read model."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.wait import wait_until

from hub import ChildSpec, Hub
from hub.operate.http import CHILD_STATES, HttpServer, HubMetrics, children_view
from integration import state_workers
from strategies.migration import ColdSwap, HotSwap

COUNTER = "hub.operate.demo:Counter"
STATEFUL = f"{state_workers.__name__}:Counter"


async def request(
    address: str, method: str = "GET", path: str = "/", raw: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request; returns (status, headers, body). The server closes."""
    host, _, port = address.rpartition(":")
    reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
    try:
        if raw is None:
            raw = f"{method} {path} HTTP/1.1\r\nHost: {address}\r\n\r\n".encode()
        writer.write(raw)
        await writer.drain()
        async with asyncio.timeout(10):
            data = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("ascii").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    assert int(headers["content-length"]) == len(body)
    return status, headers, body


async def scrape(address: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """``GET /metrics`` parsed: sample name -> sorted labels -> value."""
    status, headers, body = await request(address, path="/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def by_state(samples: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str) -> Any:
    return {dict(labels)["state"]: value for labels, value in samples[name].items()}


def registry_states(hub: Hub, local: bool) -> dict[str, int]:
    counts = dict.fromkeys(CHILD_STATES, 0)
    if local:
        del counts["pending"]
    for child in children_view(hub)["children"]:
        if not local or child["node"] == hub.node_id:
            counts[child["state"]] += 1
    return counts


@pytest.fixture
async def node(etcd_endpoint: str, hub_prefix: str) -> AsyncIterator[tuple[Hub, str]]:
    hub = Hub("h", endpoints=[etcd_endpoint], node_id="n1", lease_ttl=3, prefix=hub_prefix)
    async with hub:
        HubMetrics(hub)
        async with HttpServer(hub) as server:
            yield hub, server.address


async def test_healthz_readyz_and_errors(node: tuple[Hub, str]) -> None:
    _, address = node
    status, headers, body = await request(address, path="/healthz")
    assert (status, body) == (200, b"ok\n")
    status, _, body = await request(address, path="/readyz")
    assert (status, body) == (200, b"ready\n")
    assert (await request(address, path="/nope"))[0] == 404
    status, headers, _ = await request(address, method="POST", path="/metrics")
    assert status == 405 and headers["allow"] == "GET"
    assert (await request(address, raw=b"garbage\r\n\r\n"))[0] == 400
    too_big = b"GET /healthz HTTP/1.1\r\nX: " + b"a" * 10_000 + b"\r\n\r\n"
    assert (await request(address, raw=too_big))[0] == 431
    # query strings are ignored for routing
    assert (await request(address, path="/healthz?verbose=1"))[0] == 200


async def test_readyz_503_while_draining(node: tuple[Hub, str]) -> None:
    hub, address = node
    assert (await request(address, path="/readyz"))[0] == 200
    await hub.drain(hub.node_id, wait=False)
    await wait_until(hub.left.is_set, 10)
    status, _, body = await request(address, path="/readyz")
    assert status == 503
    assert body == b"node is draining\n"
    assert (await request(address, path="/healthz"))[0] == 200


async def test_readyz_503_after_stop(etcd_endpoint: str, hub_prefix: str) -> None:
    hub = Hub("h", endpoints=[etcd_endpoint], node_id="n1", lease_ttl=3, prefix=hub_prefix)
    async with hub:
        async with HttpServer(hub) as server:  # creates the hub's HubMetrics itself
            assert (await request(server.address, path="/readyz"))[0] == 200
            await hub.stop()
            status, _, body = await request(server.address, path="/readyz")
            assert (status, body) == (503, b"hub is not running\n")
            assert (await request(server.address, path="/healthz"))[0] == 200
            samples = await scrape(server.address)
            assert samples["processhub_ready"][()] == 0
            assert samples["processhub_lease_valid"][()] == 0


async def test_metrics_match_the_registry(node: tuple[Hub, str]) -> None:
    hub, address = node
    ids = [f"c-{i}" for i in range(5)]
    result = await hub.start_children(
        [ChildSpec(id=c, start=COUNTER) for c in ids], wait=True, timeout=10
    )
    assert not result.errors
    await wait_until(
        lambda: all(
            (h := hub.registry.handles.get(c)) is not None and h.state == "running" for c in ids
        ),
        10,
    )

    samples = await scrape(address)
    assert by_state(samples, "processhub_registry_children") == registry_states(hub, local=False)
    assert by_state(samples, "processhub_node_children") == registry_states(hub, local=True)
    assert by_state(samples, "processhub_node_children")["running"] == 5
    assert samples["processhub_child_starts_total"][()] == 5
    assert samples["processhub_child_restarts_total"][()] == 0
    assert samples["processhub_child_failures_total"][()] == 0
    assert samples["processhub_children_migrated_total"][()] == 0
    assert 0 < samples["processhub_lease_time_left_seconds"][()] <= 3
    assert samples["processhub_lease_valid"][()] == 1
    assert samples["processhub_ready"][()] == 1
    assert samples["processhub_partitioned"][()] == 0
    assert samples["processhub_registry_specs"][()] == len(hub.registry.specs) == 5
    assert samples["processhub_registry_owners"][()] == len(hub.registry.owners) == 5
    assert samples["processhub_registry_nodes"][()] == 1
    assert samples["processhub_supervised_workers"][()] == len(hub.supervisor) == 5
    assert samples["processhub_owned_children"][()] == 5
    assert samples["processhub_watch_lag_revisions"][()] >= 0
    assert samples["processhub_registry_revision"][()] > 0
    assert samples["processhub_registry_corrupt_records_total"][()] == 0
    assert samples["processhub_batcher_batches_total"][()] >= 1
    assert samples["processhub_batcher_ops_total"][()] >= 5
    assert samples["processhub_reconcile_rounds_total"][()] >= 1
    assert samples["processhub_informer_reconnects_total"][()] >= 0
    assert samples["processhub_informer_relists_total"][()] >= 0
    assert samples["processhub_registry_updates_total"][(("kind", "batch"),)] >= 1
    info = samples["processhub_node_info"]
    assert info == {(("hub_id", "h"), ("node_id", "n1")): 1}

    await hub.stop_child(ids[0])
    # Spec and owner both gone: nothing about it changes any more while we scrape.
    registry = hub.registry
    await wait_until(lambda: ids[0] not in registry.specs and ids[0] not in registry.owners, 10)
    samples = await scrape(address)
    assert samples["processhub_registry_specs"][()] == 4
    assert by_state(samples, "processhub_registry_children") == registry_states(hub, local=False)
    assert samples["processhub_child_stops_total"][(("reason", "fenced"),)] == 0

    async def stop_counted() -> bool:
        samples = await scrape(address)
        return samples["processhub_child_stops_total"][(("reason", "stopped"),)] == 1

    await wait_until(stop_counted, 10)
    await wait_until(lambda: len(hub.supervisor) == 4, 10)


async def test_api_children_and_nodes_equal_the_registry(node: tuple[Hub, str]) -> None:
    hub, address = node
    ids = [f"a-{i}" for i in range(3)]
    result = await hub.start_children(
        [ChildSpec(id=c, start=COUNTER) for c in ids], wait=True, timeout=10
    )
    assert not result.errors

    status, headers, body = await request(address, path="/api/children")
    assert status == 200 and headers["content-type"] == "application/json"
    document = json.loads(body)
    assert document["hub_id"] == "h"
    children = {c["child_id"]: c for c in document["children"]}
    assert set(children) == set(hub.registry.specs) == set(ids)
    for child_id, child in children.items():
        handle = hub.registry.handles[child_id]
        assert child["node"] == handle.node_id == "n1"
        assert child["state"] == handle.state.value
        assert child["token"] == handle.fencing_token > 0
        assert child["restarts"] == handle.restarts

    status, _, body = await request(address, path="/api/nodes")
    assert status == 200
    nodes = json.loads(body)["nodes"]
    assert [n["node_id"] for n in nodes] == sorted(hub.registry.nodes) == ["n1"]
    entry = hub.registry.nodes["n1"].info
    assert nodes[0]["state"] == entry.state.value == "active"
    assert nodes[0]["address"] == entry.address
    assert nodes[0]["load"] == entry.load
    assert nodes[0]["capacity"] == entry.capacity


async def test_slow_client_times_out_and_stop_ends_connections(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    hub = Hub("h", endpoints=[etcd_endpoint], node_id="n1", lease_ttl=3, prefix=hub_prefix)
    async with hub:
        server = HttpServer(hub, read_timeout=0.2)
        address = await server.start()
        # a client that never finishes its request head gets 408
        status, _, _ = await request(address, raw=b"GET /healthz HTTP/1.1\r\n")
        assert status == 408
        # an idle open connection does not keep stop() waiting
        host, _, port = address.rpartition(":")
        server.read_timeout = 60
        reader, writer = await asyncio.open_connection(host, int(port))
        await wait_until(lambda: len(server._connections) == 1, 5)
        async with asyncio.timeout(5):
            await server.stop()
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        await server.stop()  # idempotent


async def test_latency_metrics_and_time_without_owner(etcd_endpoint: str, hub_prefix: str) -> None:
    async with (
        Hub(
            "h",
            endpoints=[etcd_endpoint],
            node_id="x1",
            lease_ttl=3,
            prefix=hub_prefix,
            http="127.0.0.1:0",
        ) as first,
        Hub("h", endpoints=[etcd_endpoint], node_id="x2", lease_ttl=3, prefix=hub_prefix) as second,
    ):
        assert first.http_server is not None
        address = first.http_server.address
        result = await first.start_children(
            [ChildSpec(id=f"lat-{i}", start="hub.operate.demo:Counter") for i in range(20)],
            wait=True,
            timeout=10,
        )
        assert result.ok
        moving = [h.child_id for h in result.started if h.node_id == "x2"]
        assert moving
        await second.stop()  # its children move to x1: each is briefly without an owner
        await wait_until(
            lambda: all((h := first.get_pid(c)) is not None and h.is_running for c in moving), 10
        )

        async def counted() -> bool:
            samples = await scrape(address)
            gaps = samples.get("processhub_child_without_owner_seconds_count", {})
            return sum(gaps.values()) >= len(moving)

        await wait_until(counted, 5, message="migration gaps not measured")
        samples = await scrape(address)
        txn = samples["processhub_etcd_request_seconds_count"]
        assert sum(v for labels, v in txn.items() if ("method", "Txn") in labels) > 0
        assert sum(samples["processhub_reconcile_round_seconds_count"].values()) > 0


@pytest.mark.parametrize(
    ("migration", "kind"), [(ColdSwap(), "cold"), (HotSwap(state_timeout=2.0), "hot")]
)
async def test_handover_duration_per_child_released_on_join(
    etcd_endpoint: str, hub_prefix: str, migration: ColdSwap | HotSwap, kind: str
) -> None:
    """A join moves children off the first node: it observes one hand-over per child it
    released, measured from its decision to the commit of the release."""
    options: dict[str, Any] = {
        "endpoints": [etcd_endpoint],
        "lease_ttl": 3,
        "prefix": hub_prefix,
        "migration": migration,
    }
    async with Hub("h", node_id="y1", http="127.0.0.1:0", **options) as first:
        assert first.http_server is not None
        address = first.http_server.address
        ids = [f"hand-{i}" for i in range(24)]
        result = await first.start_children(
            [ChildSpec(id=c, start=STATEFUL) for c in ids], wait=True, timeout=10
        )
        assert result.ok and {h.node_id for h in result.started} == {"y1"}
        samples = await scrape(address)
        assert samples["processhub_handover_duration_seconds_count"] == {(("migration", kind),): 0}

        async with Hub("h", node_id="y2", http="127.0.0.1:0", **options) as second:
            await wait_until(
                lambda: all(
                    (h := first.get_pid(c)) is not None
                    and h.is_running
                    and h.node_id == second.placement(c)
                    for c in ids
                ),
                15,
            )
            moved = [c for c in ids if first.get_pid(c).node_id == "y2"]  # type: ignore[union-attr]
            assert moved and len(moved) < len(ids)
            await wait_until(first.is_settled, 10)
            samples = await scrape(address)
            labels = (("migration", kind),)
            assert samples["processhub_handover_duration_seconds_count"][labels] == len(moved)
            total = samples["processhub_handover_duration_seconds_sum"][labels]
            assert 0 < total < len(moved) * 5.0  # each took more than nothing, far below 5 s
            buckets = {
                dict(labels)["le"]: value
                for labels, value in samples["processhub_handover_duration_seconds_bucket"].items()
                if dict(labels)["migration"] == kind
            }
            assert buckets["+Inf"] == len(moved)
            assert buckets["0.001"] <= buckets["1.0"] <= buckets["30.0"] == len(moved)
            # The node that only acquired released nothing.
            count = "processhub_handover_duration_seconds_count"
            registry = HubMetrics.of(second).registry
            assert registry.get_sample_value(count, {"migration": kind}) == 0
