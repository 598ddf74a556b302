"""The tenants example (examples/tenants) on real node processes: buckets follow tenants.

Three ``processhub node --app examples.tenants.app --migration hot`` processes, each with
its own HTTP front. Tenants are hit through one node's front while the node that runs some
of them drains: every hit gets an answer, no hit is lost or counted twice, and the bucket
(tokens included: a refill rate of 0 makes a reset visible) arrives intact on the next node.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.cluster import Cluster, NodeProcess, http_json
from support.wait import wait_until_sync

pytestmark = pytest.mark.slow

CAPACITY = 5
TENANTS = [f"t{i}" for i in range(9)]


@pytest.fixture
def cluster(etcd_endpoint: str, hub_prefix: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(
        hub_id="tenants",
        endpoint=etcd_endpoint,
        prefix=hub_prefix,
        lease_ttl=5,
        record_dir=tmp_path,
        apps=("examples.tenants.app",),
        extra_args=["--migration", "hot", "--allow", "examples.tenants.*"],
        env={
            "TENANTS_HTTP": "127.0.0.1:0",  # the front prints the port it got
            "TENANTS_CAPACITY": str(CAPACITY),
            "TENANTS_REFILL_PER_SECOND": "0",  # no refill: a reset bucket would show
        },
    )
    try:
        yield c
    finally:
        c.close()


def front(node: NodeProcess) -> str:
    """The ``host:port`` of a node's tenants front (from its ``tenants_http`` line)."""
    wait_until_sync(
        lambda: any(e.get("event") == "tenants_http" for e in node.history),
        30,
        message=f"{node.node_id}: front never listened",
    )
    return str(next(e["address"] for e in node.history if e.get("event") == "tenants_http"))


class Hitter:
    """Hits tenants through one front, one request at a time, and checks each answer."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.hits: dict[str, int] = {}
        self.problems: list[str] = []

    def hit(self, tenant: str) -> dict[str, Any]:
        expected = self.hits.get(tenant, 0) + 1
        try:
            status, body = http_json("POST", self.address, f"/tenants/{tenant}/hit")
        except OSError as exc:  # no answer: counted or not, we cannot tell
            self.problems.append(f"{tenant}: hit {expected} got no answer: {exc!r}")
            return {}
        if status not in (200, 429):
            self.problems.append(f"{tenant}: hit {expected} answered {status} {body}")
            return {}
        self.hits[tenant] = expected
        # Sequential: the n-th hit of a tenant is its n-th count, wherever it runs.
        if body["hits"] != expected:
            self.problems.append(f"{tenant}: hit {expected} counted as {body['hits']}")
        if (status == 200) != (expected <= CAPACITY) or body["allowed"] != (status == 200):
            self.problems.append(f"{tenant}: hit {expected} answered {status}")
        return dict(body)


def test_buckets_follow_tenants_through_a_drain_and_every_front_answers(
    cluster: Cluster,
) -> None:
    nodes = [cluster.add() for _ in range(3)]
    fronts = {node.node_id: front(node) for node in nodes}
    entry = Hitter(fronts["node-1"])
    for tenant in TENANTS:  # started on demand by the first hit
        for _ in range(CAPACITY + 2):
            entry.hit(tenant)
    assert not entry.problems, entry.problems

    # Any front lists every tenant and knows where each runs.
    status, listing = http_json("GET", fronts["node-2"], "/tenants")
    assert status == 200
    placed = {item["tenant"]: item["node"] for item in listing["tenants"]}
    assert set(placed) == set(TENANTS)
    victim = max(
        ("node-2", "node-3"), key=lambda n: sum(1 for node in placed.values() if node == n)
    )
    moving = sorted(t for t, node in placed.items() if node == victim)
    assert moving, placed
    survivor = "node-3" if victim == "node-2" else "node-2"

    # Keep hitting the tenants that move, through a surviving front, while they move.
    stop = threading.Event()
    during = Hitter(fronts[survivor])
    during.hits = dict(entry.hits)

    def hammer() -> None:
        while not stop.is_set():
            for tenant in moving:
                during.hit(tenant)

    thread = threading.Thread(target=hammer, daemon=True)
    thread.start()
    try:
        wait_until_sync(lambda: sum(during.hits.values()) > sum(entry.hits.values()) + 20, 30)
        began, hits_before = time.monotonic(), sum(during.hits.values())
        assert cluster.terminate(victim) == 0
        drained = time.monotonic() - began
        before = sum(during.hits.values())
        wait_until_sync(lambda: sum(during.hits.values()) > before + 20, 30)
    finally:
        stop.set()
        thread.join(30)
    assert not during.problems, during.problems[:10]
    print(
        f"{victim} drained {len(moving)} tenants in {drained:.2f}s while "
        f"{before - hits_before} hits were answered; {sum(during.hits.values())} hits in all"
    )

    # Each moved tenant answers from a surviving node with exactly the hits it was given.
    for tenant in TENANTS:
        status, state = http_json("GET", fronts["node-1"], f"/tenants/{tenant}")
        assert status == 200, state
        assert state["node"] != victim
        assert state["hits"] == during.hits[tenant], (tenant, state)
        assert state["allowed_hits"] == CAPACITY and state["tokens"] == 0, (tenant, state)
        if tenant in moving:
            assert state["state_source"] == "handover", (tenant, state)


def test_front_answers_errors_as_json(cluster: Cluster) -> None:
    address = front(cluster.add())
    assert http_json("GET", address, "/tenants/nobody")[0] == 404
    assert http_json("GET", address, "/tenants/-bad")[0] == 400
    assert http_json("GET", address, "/tenants/t1/hit")[0] == 405
    assert http_json("POST", address, "/tenants")[0] == 405
    assert http_json("GET", address, "/elsewhere")[0] == 404
    status, body = http_json("POST", address, "/tenants/acme/hit")
    assert (status, body["hits"], body["node"]) == (200, 1, "node-1")
    assert http_json("GET", address, "/tenants")[1]["tenants"][0]["tenant"] == "acme"
