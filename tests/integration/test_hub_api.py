"""The public Hub API against a real etcd, with one to three in-process hubs.

Ports ProcessHub's single-node API tests (PROCESSHUB.md 8b) and adds what the etcd design
promises: cluster-wide duplicate checks, fencing tokens, restart policies through the hub,
and tolerance of foreign bytes under the hub prefix. Every wait is a condition with a
deadline (``wait_until`` or the API's own awaited results), never a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from support.wait import wait_until

from hub import (
    AlreadyStarted,
    ChildFailure,
    ChildSpec,
    Hub,
    HubClosed,
    InvalidChildId,
    InvalidSpec,
    OwnerState,
    PartitionedError,
    RestartPolicy,
    StoppedChild,
)
from hub._proto import processhub_pb2 as pb
from hub.etcd.keys import KeySpace, Kind
from hub.etcd.store import EtcdConfig, Store
from hub.testing import HubCluster
from strategies import ConsistentHashing
from strategies.redundancy import Replication

from . import parked_workers, workers

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")

W = workers.__name__
TIMEOUT = 10.0  # ceiling for every wait; the tests normally take milliseconds
TTL = 2


def target(name: str) -> str:
    return f"{W}:{name}"


def sleeper(child_id: str, **kw: Any) -> ChildSpec:
    return ChildSpec(child_id, target("Sleeper"), **kw)


@pytest.fixture(autouse=True)
def _reset_workers() -> Any:
    workers.reset()
    yield
    workers.reset()


def make_hub(endpoint: str, prefix: str, node_id: str = "n1", hub_id: str = "h", **kw: Any) -> Hub:
    kw.setdefault("lease_ttl", TTL)
    kw.setdefault("request_timeout", 2.0)
    kw.setdefault("drain_timeout", 5.0)
    return Hub(hub_id, endpoints=[endpoint], node_id=node_id, prefix=prefix, **kw)


@contextlib.asynccontextmanager
async def cluster(endpoint: str, prefix: str, size: int, **kw: Any) -> AsyncIterator[list[Hub]]:
    """``size`` hubs (n1, n2...) of one HubCluster, each seeing every member before the
    body runs."""
    kw = {"request_timeout": 2.0, "drain_timeout": 5.0, **kw}
    names = [f"n{i + 1}" for i in range(size)]
    async with HubCluster(
        [endpoint], prefix=prefix, hub_id="h", lease_ttl=TTL, nodes=names, **kw
    ) as nodes:
        yield [nodes[name] for name in names]


@contextlib.asynccontextmanager
async def raw_store(endpoint: str) -> AsyncIterator[Store]:
    """A separate etcd connection, to look behind the hub's back or write foreign bytes."""
    async with Store(EtcdConfig(endpoints=(endpoint,), request_timeout=2.0)) as store:
        yield store


def running(hub: Hub, child_id: str) -> bool:
    handle = hub.get_pid(child_id)
    return handle is not None and handle.state is OwnerState.RUNNING


def restarts(hub: Hub, child_id: str) -> int | None:
    handle = hub.get_pid(child_id)
    return handle.restarts if handle is not None else None


async def spec_in_etcd(hub: Hub, child_id: str) -> bool:
    return await hub.store.get(hub.keys.spec(child_id)) is not None


async def specs_in_history(hub: Hub, first: int, last: int) -> set[str]:
    """Ids that had a spec at some revision in (first, last], read from etcd's history."""
    family = hub.keys.family(Kind.SPEC)
    seen: set[str] = set()
    for revision in range(first + 1, last + 1):
        kvs, _ = await hub.store.list_prefix(family, revision=revision)
        for kv in kvs:
            split = hub.keys.split(kv.key)
            if split is not None:
                seen.add(split[1])
    return seen


# -- starting ----------------------------------------------------------------------------


async def test_awaited_start_returns_running_handles_with_fencing_tokens(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    async with make_hub(etcd_endpoint, hub_prefix) as hub:
        ids = ["a", "b/with/slashes", "ünïcode %2F"]
        specs = [sleeper("a"), sleeper("b/with/slashes"), ChildSpec(ids[2], target("sleeper"))]
        result = await hub.start_children(specs, wait=True, timeout=5)

        assert result.ok and result.status == "ok"
        assert result.errors == () and result.pending == () and not result.rollback
        assert result.child_ids() == ids
        assert result.nodes() == ["n1"]
        for handle in result.started:
            assert handle.node_id == "n1"
            assert handle.state is OwnerState.RUNNING and handle.is_running
            assert handle.incarnation == hub.incarnation
            assert handle.restarts == 0
            # The token is the owner key's create revision, and the worker got it.
            owner = await hub.store.get(hub.keys.owner(handle.child_id))
            assert owner is not None
            assert handle.fencing_token == owner.create_revision > 0
            assert workers.tokens(handle.child_id) == [handle.fencing_token]
            assert hub.get_pid(handle.child_id) == handle


async def test_start_without_wait_returns_pending_ids_then_runs(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    async with make_hub(etcd_endpoint, hub_prefix) as hub:
        result = await hub.start_children([sleeper("p1"), sleeper("p2")])
        assert result.pending == ("p1", "p2")
        assert result.started == () and result.errors == () and result.ok
        # The specs are durable before the call returns.
        assert await spec_in_etcd(hub, "p1") and await spec_in_etcd(hub, "p2")
        await wait_until(lambda: running(hub, "p1") and running(hub, "p2"), TIMEOUT)
        assert workers.runs("p1") == 1 and workers.runs("p2") == 1

        single = await hub.start_child(sleeper("p3"))
        assert single.pending == ("p3",)
        await wait_until(lambda: running(hub, "p3"), TIMEOUT)


async def test_timeout_zero_reports_a_timeout_and_the_child_still_starts(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    async with make_hub(etcd_endpoint, hub_prefix) as hub:
        result = await hub.start_child(sleeper("t0"), wait=True, timeout=0)
        assert result.status == "error"
        assert result.started == ()
        assert result.errors == (ChildFailure("t0", "n1", "timeout"),)
        await wait_until(lambda: running(hub, "t0"), TIMEOUT)


async def test_static_child_specs_are_listed_when_start_returns(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    specs = [sleeper(f"static-{i}") for i in range(10)]
    async with make_hub(etcd_endpoint, hub_prefix, child_specs=specs) as first:
        listed = first.process_list("global")
        assert sorted(listed) == sorted(s.id for s in specs)
        assert all(h["n1"].state is OwnerState.RUNNING for h in listed.values())
        # A second node with the same static children starts no duplicates (some children
        # move to it, so wait for the moves to settle).
        async with make_hub(etcd_endpoint, hub_prefix, "n2", child_specs=specs) as second:

            def settled() -> bool:
                listed = second.process_list("global")
                return (
                    sorted(listed) == sorted(s.id for s in specs)
                    and all(h.is_running for n in listed.values() for h in n.values())
                    and len(first.supervisor) + len(second.supervisor) == len(specs)
                )

            await wait_until(settled, TIMEOUT)
            assert len(first.registry.specs) == len(second.registry.specs) == len(specs)
            assert second.process_list("local"), "the ring gives the new node some children"


async def test_metadata_option_merges_into_every_spec(etcd_endpoint: str, hub_prefix: str) -> None:
    async with make_hub(etcd_endpoint, hub_prefix) as hub:
        result = await hub.start_children(
            [sleeper("m1", metadata={"owner": "team-a", "tag": "old"}), sleeper("m2")],
            metadata={"tag": "grp"},
            wait=True,
            timeout=5,
        )
        assert result.ok
        lookup = hub.child_lookup("m1", with_metadata=True)
        assert lookup is not None
        assert lookup[2] == {"owner": "team-a", "tag": "grp"}
        assert hub.child_lookup("m2", with_metadata=True) == (
            replace(sleeper("m2"), metadata={"tag": "grp"}),
            {"n1": hub.get_pid("m2")},
            {"tag": "grp"},
        )
        assert sorted(hub.tag_query("grp")) == ["m1", "m2"]
        assert hub.tag_query("old") == {}
        assert dict(workers.SEEN["m1"][0].metadata) == {"owner": "team-a", "tag": "grp"}


# -- lookups -----------------------------------------------------------------------------


async def test_lookups_on_a_single_hub(etcd_endpoint: str, hub_prefix: str) -> None:
    async with make_hub(etcd_endpoint, hub_prefix) as hub:
        specs = [
            sleeper("l1", args={"n": 1}, metadata={"tag": "red"}),
            sleeper("l2", metadata={"tag": "blue", "extra": [1, 2]}),
        ]
        result = await hub.start_children(specs, wait=True, timeout=5)
        h1, h2 = result.started

        assert hub.get_pid("l1") == h1
        assert hub.get_pid("nope") is None
        assert hub.get_pids("l2") == [h2]
        assert hub.get_pids("nope") == []

        assert hub.child_lookup("l1") == (specs[0], {"n1": h1})
        assert hub.child_lookup("l2", with_metadata=True) == (
            specs[1],
            {"n1": h2},
            {"tag": "blue", "extra": [1, 2]},
        )
        assert hub.child_lookup("nope") is None
        assert hub.child_lookup("nope", with_metadata=True) is None

        assert hub.registry_dump() == {
            "l1": (specs[0], {"n1": h1}, {"tag": "red"}),
            "l2": (specs[1], {"n1": h2}, {"tag": "blue", "extra": [1, 2]}),
        }
        assert hub.process_list() == {"l1": {"n1": h1}, "l2": {"n1": h2}}
        assert hub.process_list("global") == hub.process_list()
        assert hub.process_list("local") == {"l1": h1, "l2": h2}
        with pytest.raises(InvalidSpec):
            hub.process_list("everywhere")

        assert hub.tag_query("red") == {"l1": {"n1": h1}}
        assert hub.tag_query("green") == {}
        assert hub.revision >= h2.fencing_token


async def test_lookups_across_three_hubs(etcd_endpoint: str, hub_prefix: str) -> None:
    async with cluster(etcd_endpoint, hub_prefix, 3) as hubs:
        ids = sorted(f"x{i}" for i in range(12))
        result = await hubs[0].start_children([sleeper(c) for c in ids], wait=True, timeout=5)
        assert result.ok
        assert len(result.nodes()) > 1, "consistent hashing should spread 12 children"

        def converged() -> bool:
            views = [h.process_list("global") for h in hubs]
            return all(sorted(v) == ids for v in views) and views[0] == views[1] == views[2]

        await wait_until(converged, TIMEOUT, message="registries did not converge")
        locals_ = [h.process_list("local") for h in hubs]
        # Each child is local to exactly the node its handle names.
        assert sorted(cid for local in locals_ for cid in local) == ids
        for hub, local in zip(hubs, locals_, strict=True):
            assert all(handle.node_id == hub.node_id for handle in local.values())
            assert all(hub.placement(cid) == hub.node_id for cid in local)
        for cid in ids:
            assert hubs[1].get_pid(cid) == hubs[2].get_pid(cid) == hubs[0].get_pid(cid)

        assert hubs[0].nodes() == ["n2", "n3"]
        assert hubs[1].nodes(include_local=True) == ["n1", "n2", "n3"]


async def test_liveness_and_membership(etcd_endpoint: str, hub_prefix: str) -> None:
    hub = make_hub(etcd_endpoint, hub_prefix)
    assert not hub.is_alive()
    with pytest.raises(HubClosed):
        await hub.start_child(sleeper("z"))
    async with hub:
        assert hub.is_alive()
        assert not hub.is_partitioned()
        assert hub.nodes() == []
        assert hub.nodes(include_local=True) == ["n1"]
    assert not hub.is_alive()
    with pytest.raises(HubClosed):
        await hub.start_child(sleeper("z"))
    with pytest.raises(HubClosed):
        await hub.stop_child("z")
    await hub.stop()  # stopping twice is harmless


# -- refusing and reporting bad starts ---------------------------------------------------


async def test_check_existing_refuses_an_existing_id_cluster_wide(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    async with cluster(etcd_endpoint, hub_prefix, 2) as (a, b):
        _, before = await a.store.list_prefix(a.keys.family(Kind.SPEC))
        await a.start_child(sleeper("x"))
        # Retried on the other hub right away: whether or not b's cache has seen x yet,
        # the request is refused as a whole and its other child is not left behind.
        with pytest.raises(AlreadyStarted) as info:
            await b.start_children([sleeper("y"), sleeper("x")])
        assert info.value.child_ids == ("x",)
        assert not await spec_in_etcd(b, "y")

        # A true race: neither cache can have seen "p" when both check it, so only the
        # create-if-absent transaction can catch the duplicate.
        assert "p" not in a.registry.specs and "p" not in b.registry.specs
        others = [f"q{i}" for i in range(20)]
        outcomes = await asyncio.gather(
            a.start_children([sleeper("p")]),
            b.start_children([*map(sleeper, others), sleeper("p")]),
            return_exceptions=True,
        )
        refused = [o for o in outcomes if isinstance(o, AlreadyStarted)]
        assert len(refused) == 1, outcomes
        assert refused[0].child_ids == ("p",)
        b_lost = outcomes[1] is refused[0]

        await wait_until(lambda: running(a, "p") and running(a, "x"), TIMEOUT)
        await wait_until(lambda: a.is_settled() and b.is_settled(), TIMEOUT)
        assert workers.runs("p") == 1
        assert workers.runs("x") == 1
        _, after = await a.store.list_prefix(a.keys.family(Kind.SPEC))
        ever_written = await specs_in_history(a, before, after)
        # A refused request leaves nothing behind and never ran its other children at all:
        # they were never written, at any revision.
        assert "y" not in ever_written
        assert workers.runs("y") == 0
        if b_lost:
            assert not ever_written & set(others)
            assert sum(workers.runs(cid) for cid in others) == 0
        else:
            await wait_until(lambda: all(running(a, cid) for cid in others), TIMEOUT)
            assert all(workers.runs(cid) == 1 for cid in others)


async def test_check_existing_on_requests_larger_than_one_transaction(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    async with make_hub(etcd_endpoint, hub_prefix) as hub:
        ids = [f"big-{i:03}" for i in range(300)]  # more than etcd's 128 ops per txn
        result = await hub.start_children([sleeper(c) for c in ids], wait=True, timeout=10)
        assert result.ok
        assert result.child_ids() == ids  # request order, across chunks

        fresh = [f"more-{i:03}" for i in range(200)]
        with pytest.raises(AlreadyStarted) as info:
            await hub.start_children([*map(sleeper, fresh), sleeper("big-299")])
        assert info.value.child_ids == ("big-299",)
        # The chunks that were written are rolled back.
        await wait_until(hub.is_settled, TIMEOUT)
        for cid in fresh:
            assert not await spec_in_etcd(hub, cid)
        await wait_until(lambda: not any(hub.get_pid(c) for c in fresh), TIMEOUT)
        assert len(hub.process_list("local")) == len(ids)


async def test_check_existing_false_reports_already_started_and_starts_the_rest(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    async with make_hub(etcd_endpoint, hub_prefix) as hub:
        first = await hub.start_child(sleeper("e1"), wait=True, timeout=5)
        token = first.started[0].fencing_token
        result = await hub.start_children(
            [sleeper("e1"), sleeper("e2")], check_existing=False, wait=True, timeout=5
        )
        assert result.status == "error"
        assert result.errors == (ChildFailure("e1", "n1", "already_started"),)
        assert result.child_ids() == ["e2"]
        # The existing child was not touched.
        assert workers.runs("e1") == 1
        assert [h.fencing_token for h in hub.get_pids("e1")] == [token]


async def test_duplicate_ids_in_one_request(etcd_endpoint: str, hub_prefix: str) -> None:
    async with make_hub(etcd_endpoint, hub_prefix) as hub:
        result = await hub.start_children([sleeper("d"), sleeper("d")], wait=True, timeout=5)
        assert result.status == "error"
        assert result.child_ids() == ["d"]
        assert len(result.errors) == 1
        assert result.errors[0].child_id == "d"
        assert "duplicate" in result.errors[0].reason
        await wait_until(hub.is_settled, TIMEOUT)
        assert workers.runs("d") == 1


async def test_malformed_requests_are_refused(etcd_endpoint: str, hub_prefix: str) -> None:
    async with make_hub(etcd_endpoint, hub_prefix) as hub:
        with pytest.raises(InvalidSpec):
            await hub.start_children([])
        with pytest.raises(InvalidSpec):
            await hub.start_children(sleeper("s"))  # type: ignore[arg-type]
        with pytest.raises(InvalidSpec):
            await hub.start_children(["s"])  # type: ignore[list-item]
        with pytest.raises(InvalidSpec):
            await hub.start_children([sleeper("s")], on_failure="retry")  # type: ignore[arg-type]
        with pytest.raises(InvalidSpec):
            await hub.stop_children([])
        with pytest.raises(InvalidSpec):
            await hub.stop_children("s")
        with pytest.raises(InvalidChildId):
            await hub.stop_children([""])
        # Non-JSON args never get as far as the hub.
        with pytest.raises(InvalidSpec):
            sleeper("s", args={"when": object()})
        with pytest.raises(InvalidSpec):
            sleeper("s", args={1, 2})
        assert await hub.store.count_prefix(hub.keys.family(Kind.SPEC)) == 0


async def test_unresolvable_targets_are_error_entries_and_nothing_is_written(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    async with make_hub(etcd_endpoint, hub_prefix) as hub:
        specs = [
            ChildSpec("no-module", "no_such_module_for_processhub_tests:Worker"),
            ChildSpec("no-attr", target("Missing")),
            ChildSpec("not-worker", target("NOT_A_WORKER")),
            sleeper("fine"),
        ]
        result = await hub.start_children(specs, wait=True, timeout=5)
        assert result.child_ids() == ["fine"]
        reasons = {str(e.child_id): e.reason for e in result.errors}
        assert set(reasons) == {"no-module", "no-attr", "not-worker"}
        assert "unknown module" in reasons["no-module"]
        assert "no attribute 'Missing'" in reasons["no-attr"]
        assert "not an async function" in reasons["not-worker"]
        assert all(e.node_id is None for e in result.errors)
        for cid in reasons:
            assert not await spec_in_etcd(hub, cid)
            assert hub.child_lookup(cid) is None


async def test_oversized_spec_is_an_error_entry(etcd_endpoint: str, hub_prefix: str) -> None:
    async with make_hub(etcd_endpoint, hub_prefix, max_spec_bytes=1024) as hub:
        result = await hub.start_children(
            [sleeper("big", args={"blob": "x" * 2000}), sleeper("small")], wait=True, timeout=5
        )
        assert result.child_ids() == ["small"]
        assert len(result.errors) == 1
        error = result.errors[0]
        assert error.child_id == "big" and error.node_id is None
        assert "too large" in error.reason
        assert not await spec_in_etcd(hub, "big")


async def test_allow_list_refuses_other_targets(etcd_endpoint: str, hub_prefix: str) -> None:
    async with make_hub(etcd_endpoint, hub_prefix, allowed_targets=[target("Sleeper")]) as hub:
        result = await hub.start_children(
            [
                sleeper("ok"),
                ChildSpec("no", target("Crash")),
                ChildSpec("cmd", "hub.command:Command"),
            ],
            wait=True,
            timeout=5,
        )
        assert result.child_ids() == ["ok"]
        reasons = {e.child_id: e.reason for e in result.errors}
        assert set(reasons) == {"no", "cmd"}
        assert all("allow-list" in r for r in reasons.values())
        assert not await spec_in_etcd(hub, "no")
        assert workers.runs("no") == 0


async def test_worker_raising_at_start_is_an_error_entry_with_its_node(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    async with cluster(etcd_endpoint, hub_prefix, 2) as (a, b):
        result = await a.start_children(
            [ChildSpec("boom", target("FailAtStart")), sleeper("calm")], wait=True, timeout=5
        )
        assert result.child_ids() == ["calm"]
        assert len(result.errors) == 1
        error = result.errors[0]
        assert error.child_id == "boom"
        assert error.node_id == a.placement("boom")
        assert "RuntimeError: refusing to start boom" in error.reason
        # Parked as failed on its node, not retried, not moved.
        handle = a.get_pid("boom")
        assert handle is not None and handle.state is OwnerState.FAILED
        assert handle.node_id == error.node_id
        assert workers.runs("boom") == 1
        # The other child and the cluster are unaffected.
        assert running(a, "calm") and workers.runs("calm") == 1
        assert a.is_alive() and b.is_alive()
        assert not a.is_partitioned() and not b.is_partitioned()
        after = await b.start_child(sleeper("later"), wait=True, timeout=5)
        assert after.ok


async def test_rollback_stops_everything_the_request_started(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    async with make_hub(etcd_endpoint, hub_prefix) as hub:
        result = await hub.start_children(
            [sleeper("good"), ChildSpec("bad", target("FailAtStart"))],
            on_failure="rollback",
            timeout=5,
        )
        assert result.rollback
        assert result.status == "error"
        assert [e.child_id for e in result.errors] == ["bad"]
        assert result.child_ids() == ["good"]
        assert hub.process_list() == {}
        assert hub.registry_dump() == {}
        assert not await spec_in_etcd(hub, "good")
        assert not await spec_in_etcd(hub, "bad")
        assert workers.CANCELLED.get("good") == 1


async def test_rollback_without_failures_keeps_the_children(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    async with make_hub(etcd_endpoint, hub_prefix) as hub:
        result = await hub.start_children([sleeper("r1")], on_failure="rollback", timeout=5)
        assert result.ok and not result.rollback
        assert running(hub, "r1")


# -- stopping ----------------------------------------------------------------------------


async def test_stop_reports_node_or_not_found(etcd_endpoint: str, hub_prefix: str) -> None:
    async with make_hub(etcd_endpoint, hub_prefix) as hub:
        await hub.start_children([sleeper("s1"), sleeper("a/b")], wait=True, timeout=5)

        unknown = await hub.stop_child("never-started", wait=True, timeout=5)
        assert unknown.status == "error"
        assert unknown.errors == (ChildFailure("never-started", None, "not_found"),)
        assert unknown.stopped == ()

        stopped = await hub.stop_children(["s1", "a/b"], wait=True, timeout=5)
        assert stopped.ok
        assert stopped.stopped == (StoppedChild("s1", ("n1",)), StoppedChild("a/b", ("n1",)))
        assert stopped.child_ids() == ["s1", "a/b"]
        assert hub.get_pid("s1") is None and hub.child_lookup("a/b") is None
        assert workers.CANCELLED == {"s1": 1, "a/b": 1}
        assert not await spec_in_etcd(hub, "s1")
        assert await hub.store.get(hub.keys.owner("s1")) is None


async def test_stop_without_wait_returns_pending(etcd_endpoint: str, hub_prefix: str) -> None:
    async with make_hub(etcd_endpoint, hub_prefix) as hub:
        await hub.start_child(sleeper("s2"), wait=True, timeout=5)
        result = await hub.stop_child("s2")
        assert result.pending == ("s2",) and result.ok
        assert not await spec_in_etcd(hub, "s2")
        await wait_until(lambda: hub.get_pid("s2") is None, TIMEOUT)
        assert workers.CANCELLED == {"s2": 1}


async def test_awaited_stop_in_a_three_hub_cluster_is_prompt(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    async with cluster(etcd_endpoint, hub_prefix, 3) as hubs:
        ids = [f"q{i}" for i in range(9)]
        result = await hubs[0].start_children([sleeper(c) for c in ids], wait=True, timeout=5)
        assert result.ok
        where = {h.child_id: h.node_id for h in result.started}
        # Stop one child hosted elsewhere: only its host is involved, the third node
        # (ProcessHub waited for every node) must not delay the answer.
        remote = next(cid for cid, node in where.items() if node != "n1")
        began = time.monotonic()
        one = await hubs[0].stop_child(remote, wait=True, timeout=10)
        assert time.monotonic() - began < 2.0
        assert one.ok and one.stopped == (StoppedChild(remote, (where[remote],)),)

        rest = [cid for cid in ids if cid != remote]
        began = time.monotonic()
        many = await hubs[1].stop_children(rest, wait=True, timeout=10)
        assert time.monotonic() - began < 2.0
        assert many.ok
        assert {s.child_id: s.node_ids for s in many.stopped} == {
            cid: (where[cid],) for cid in rest
        }
        for hub in hubs:
            await wait_until(partial(lambda h: h.process_list() == {}, hub), TIMEOUT)
            assert hub.process_list("local") == {}


# -- restart policies through the hub ----------------------------------------------------


async def _wait_removed(hubs: list[Hub], child_id: str) -> None:
    def forgotten(hub: Hub) -> bool:
        return hub.child_lookup(child_id) is None and hub.get_pid(child_id) is None

    for hub in hubs:
        await wait_until(
            partial(forgotten, hub),
            TIMEOUT,
            message=f"{child_id} still known to {hub.node_id}",
        )
    assert not await spec_in_etcd(hubs[0], child_id)
    assert await hubs[0].store.get(hubs[0].keys.owner(child_id)) is None


async def test_transient_normal_exit_removes_the_child_cluster_wide(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    async with cluster(etcd_endpoint, hub_prefix, 2) as hubs:
        spec = ChildSpec(
            "tr", target("Gated"), args={"then": "exit"}, restart=RestartPolicy.TRANSIENT
        )
        assert (await hubs[0].start_child(spec, wait=True, timeout=5)).ok
        workers.gate("tr").set()
        await _wait_removed(hubs, "tr")
        assert workers.runs("tr") == 1


async def test_transient_crash_restarts(etcd_endpoint: str, hub_prefix: str) -> None:
    async with make_hub(etcd_endpoint, hub_prefix) as hub:
        spec = ChildSpec(
            "tc", target("Gated"), args={"then": "crash"}, restart=RestartPolicy.TRANSIENT
        )
        token = (await hub.start_child(spec, wait=True, timeout=5)).started[0].fencing_token
        workers.gate("tc").set()
        await wait_until(lambda: workers.runs("tc") == 2, TIMEOUT)
        await wait_until(lambda: running(hub, "tc") and restarts(hub, "tc") == 1, TIMEOUT)
        assert workers.tokens("tc") == [token, token]


async def test_temporary_crash_removes_the_child(etcd_endpoint: str, hub_prefix: str) -> None:
    async with cluster(etcd_endpoint, hub_prefix, 2) as hubs:
        spec = ChildSpec(
            "tmp", target("Gated"), args={"then": "crash"}, restart=RestartPolicy.TEMPORARY
        )
        assert (await hubs[1].start_child(spec, wait=True, timeout=5)).ok
        workers.gate("tmp").set()
        await _wait_removed(hubs, "tmp")
        assert workers.runs("tmp") == 1


async def test_permanent_crash_restarts_with_the_same_fencing_token(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    async with cluster(etcd_endpoint, hub_prefix, 2) as hubs:
        spec = ChildSpec(
            "perm", target("Gated"), args={"then": "crash"}, restart=RestartPolicy.PERMANENT
        )
        first = (await hubs[0].start_child(spec, wait=True, timeout=5)).started[0]

        workers.gate("perm").set()
        await wait_until(lambda: workers.runs("perm") == 2, TIMEOUT)

        def restarted(hub: Hub) -> bool:
            handle = hub.get_pid("perm")
            return handle is not None and handle.restarts == 1 and handle.is_running

        await wait_until(lambda: all(restarted(h) for h in hubs), TIMEOUT)
        handle = hubs[1].get_pid("perm")
        assert handle is not None
        # Restarted in place: same node, same owner key, so the same fencing token.
        assert handle.node_id == first.node_id
        assert handle.fencing_token == first.fencing_token
        assert workers.tokens("perm") == [first.fencing_token] * 2
        assert [ctx.restarts for ctx in workers.SEEN["perm"]] == [0, 1]

        # A permanent child that returns normally is restarted too.
        exit_spec = ChildSpec("perm-exit", target("Gated"), args={"then": "exit"})
        await hubs[0].start_child(exit_spec, wait=True, timeout=5)
        workers.gate("perm-exit").set()
        await wait_until(lambda: workers.runs("perm-exit") == 2, TIMEOUT)
        assert hubs[0].child_lookup("perm-exit") is not None


async def test_crash_loop_parks_the_child_as_failed(etcd_endpoint: str, hub_prefix: str) -> None:
    # Several loops at once: their "running" and "failed" owner writes follow each other
    # closely, so a reordering of one key's writes would leave some shown as running.
    ids = [f"loop{i}" for i in range(6)]
    async with cluster(etcd_endpoint, hub_prefix, 2) as hubs:
        specs = [ChildSpec(cid, target("Crash"), max_restarts=2, max_seconds=30) for cid in ids]
        await hubs[0].start_children(specs)

        def failed(hub: Hub, child_id: str) -> bool:
            handle = hub.get_pid(child_id)
            return handle is not None and handle.state is OwnerState.FAILED

        await wait_until(
            lambda: all(workers.runs(cid) == 3 for cid in ids),
            TIMEOUT,
            message="the loops did not use up their restarts",
        )
        await wait_until(
            lambda: all(failed(h, cid) for h in hubs for cid in ids),
            TIMEOUT,
            message="a parked child is not shown as failed",
        )
        for cid in ids:
            handle = hubs[0].get_pid(cid)
            assert handle is not None
            assert "restart intensity exceeded" in handle.last_exit
            assert "RuntimeError: crash #3" in handle.last_exit
            assert len(set(workers.tokens(cid))) == 1  # restarted in place, never moved
            # The spec stays: the child is parked, not removed.
            assert hubs[0].child_lookup(cid) is not None
        # The nodes stay healthy and keep starting children.
        for hub in hubs:
            assert hub.is_alive() and not hub.is_partitioned()
            assert (await hub.start_child(sleeper(f"healthy-{hub.node_id}"), wait=True)).ok
        await wait_until(lambda: all(h.is_settled() for h in hubs), TIMEOUT)
        assert all(workers.runs(cid) == 3 for cid in ids), "parked children must stay parked"
        assert all(failed(h, cid) for h in hubs for cid in ids)


# -- independence and robustness ---------------------------------------------------------


async def test_hubs_with_different_ids_are_independent(etcd_endpoint: str, hub_prefix: str) -> None:
    async with (
        make_hub(etcd_endpoint, hub_prefix, "n1", hub_id="alpha") as alpha,
        make_hub(etcd_endpoint, hub_prefix, "n1", hub_id="beta") as beta,
    ):
        assert alpha.nodes(include_local=True) == ["n1"]
        assert beta.nodes(include_local=True) == ["n1"]
        # The same child id in both hubs: two children, no AlreadyStarted.
        ra = await alpha.start_child(sleeper("same"), wait=True, timeout=5)
        rb = await beta.start_child(sleeper("same"), wait=True, timeout=5)
        assert ra.ok and rb.ok
        assert sorted(ctx.hub_id for ctx in workers.SEEN["same"]) == ["alpha", "beta"]
        await alpha.stop_child("same", wait=True, timeout=5)
        assert running(beta, "same")
        assert alpha.child_lookup("same") is None
        assert beta.registry_dump().keys() == {"same"}
        assert workers.CANCELLED == {"same": 1}


async def test_foreign_and_corrupt_records_are_skipped(etcd_endpoint: str, hub_prefix: str) -> None:
    keys = KeySpace("h", hub_prefix)
    deep_spec = pb.ChildSpec(
        schema=1, child_id="deep", start=target("Sleeper"), args_json="[" * 50_000 + "]" * 50_000
    ).SerializeToString()
    async with raw_store(etcd_endpoint) as store, make_hub(etcd_endpoint, hub_prefix) as hub:
        await hub.start_child(sleeper("before"), wait=True, timeout=5)
        corrupt_before = hub.registry.corrupt
        lease, _ = await store.lease_grant(30)
        try:
            await store.put(keys.spec("x"), b"\xffgarbage")
            await store.put(keys.spec("deep"), bytes(deep_spec))
            await store.put(keys.owner("y"), b"not an owner")  # no lease: never expires
            await store.put(keys.owner("w"), b"not an owner either", lease=lease)
            await store.put(keys.node("z"), b"\x08")  # schema only, no node id
            await store.put(keys.root + b"replicas/%FF/n1", b"?")  # malformed key
            await store.put(keys.root + b"unrelated/key", b"whatever")
            await store.put(keys.root + b"nodes", b"no id")
            await wait_until(
                lambda: hub.registry.corrupt >= corrupt_before + 5,
                TIMEOUT,
                message="corrupt records were not counted",
            )
            assert hub.is_alive() and not hub.is_partitioned()
            assert hub.nodes(include_local=True) == ["n1"]
            assert "x" not in hub.registry_dump() and "deep" not in hub.registry_dump()
            assert running(hub, "before")

            # A node that lists the garbage at startup copes just as well.
            async with make_hub(etcd_endpoint, hub_prefix, "n2") as late:
                assert late.registry.corrupt >= 5
                assert late.nodes() == ["n1"]

            # A lease-less undecodable owner key would block "y" forever: it is cleared.
            assert (await hub.start_child(sleeper("y"), wait=True, timeout=5)).ok
            assert running(hub, "y")

            # One held by a lease may belong to a live node: nothing starts next to it...
            assert (await hub.start_child(sleeper("w"))).pending == ("w",)
            await wait_until(lambda: "w" in hub.registry.specs and hub.is_settled(), TIMEOUT)
            assert workers.runs("w") == 0 and hub.get_pid("w") is None
        finally:
            await store.lease_revoke(lease)
        # ...until the lease ends.
        await wait_until(lambda: running(hub, "w"), TIMEOUT)
        assert workers.runs("w") == 1

        stopped = await hub.stop_children(["before", "y", "w"], wait=True, timeout=5)
        assert stopped.ok
        assert (await hub.start_child(sleeper("after"), wait=True, timeout=5)).ok


async def test_subprocess_worker_through_the_hub(
    etcd_endpoint: str, hub_prefix: str, tmp_path: Path
) -> None:
    out = tmp_path / "env.json"
    script = (
        "import json, os, sys, time\n"
        "keys = ['PROCESSHUB_CHILD_ID', 'PROCESSHUB_NODE_ID', 'PROCESSHUB_FENCING_TOKEN']\n"
        "data = {k: os.environ.get(k) for k in keys}\n"
        "data['pid'] = os.getpid()\n"
        "data['greeting'] = os.environ.get('GREETING')\n"
        "tmp = sys.argv[1] + '.tmp'\n"
        "open(tmp, 'w').write(json.dumps(data))\n"
        "os.replace(tmp, sys.argv[1])\n"
        "time.sleep(600)\n"
    )
    async with make_hub(etcd_endpoint, hub_prefix) as hub:
        spec = ChildSpec(
            "cmd",
            "hub.command:Command",
            args={
                "argv": [sys.executable, "-c", script, str(out)],
                "env": {"GREETING": "hi"},
                "stop_timeout": 2,
            },
        )
        handle = (await hub.start_child(spec, wait=True, timeout=5)).started[0]
        await wait_until(out.exists, TIMEOUT, message="the command did not run")
        seen = json.loads(out.read_text())
        assert seen["PROCESSHUB_CHILD_ID"] == "cmd"
        assert seen["PROCESSHUB_NODE_ID"] == "n1"
        assert seen["PROCESSHUB_FENCING_TOKEN"] == str(handle.fencing_token)
        assert seen["greeting"] == "hi"
        pid = seen["pid"]

        assert (await hub.stop_child("cmd", wait=True, timeout=10)).ok
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # stopped and reaped before the owner key went away

        # Exit code 0 of a transient command is a normal exit: the child leaves.
        done = ChildSpec(
            "cmd-done",
            "hub.command:Command",
            args={"argv": [sys.executable, "-c", "pass"]},
            restart=RestartPolicy.TRANSIENT,
        )
        assert (await hub.start_child(done, wait=True, timeout=5)).ok
        await _wait_removed([hub], "cmd-done")

        # A non-zero exit is a crash; with no restarts allowed the child is parked.
        failing = ChildSpec(
            "cmd-fail",
            "hub.command:Command",
            args={"argv": [sys.executable, "-c", "import sys; sys.exit(3)"]},
            max_restarts=0,
        )
        await hub.start_child(failing)

        def parked() -> bool:
            h = hub.get_pid("cmd-fail")
            return h is not None and h.state is OwnerState.FAILED

        await wait_until(parked, TIMEOUT)
        assert any("code 3" in h.last_exit for h in hub.get_pids("cmd-fail"))


async def test_partitioned_node_refuses_starts_and_recovers(own_etcd: Any) -> None:
    hub = make_hub(own_etcd.endpoint, "/partition", request_timeout=0.5)
    async with hub:
        await hub.start_child(sleeper("pp"), wait=True, timeout=5)
        own_etcd.pause()
        try:
            await wait_until(hub.is_partitioned, TTL * 3, message="never noticed the partition")
            # Self-fenced: the worker is stopped (the fence may still be finishing when the
            # session reports the loss), and starts are refused.
            await wait_until(lambda: workers.CANCELLED.get("pp") == 1, TTL)
            assert hub.process_list("local") == {}
            with pytest.raises(PartitionedError):
                await hub.start_child(sleeper("during"))
        finally:
            own_etcd.resume()
        await wait_until(lambda: not hub.is_partitioned(), TIMEOUT)
        await wait_until(lambda: running(hub, "pp"), TIMEOUT)
        assert workers.runs("pp") == 2


async def test_process_list_shows_running_instances_not_parked_owners(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    async with cluster(etcd_endpoint, hub_prefix, 2) as hubs:
        a = hubs[0]
        result = await a.start_children(
            [ChildSpec("parked", target("FailAtStart")), sleeper("calm")], wait=True, timeout=5
        )
        assert result.child_ids() == ["calm"]

        def seen_everywhere() -> bool:
            parked = [n.get_pid("parked") for n in hubs]
            failed = all(h is not None and h.state is OwnerState.FAILED for h in parked)
            return failed and all(running(n, "calm") for n in hubs)

        await wait_until(seen_everywhere, TIMEOUT)
        for hub in hubs:
            parked = hub.get_pid("parked")
            assert parked is not None and parked.state is OwnerState.FAILED
            listed = hub.process_list()
            assert set(listed) == {"calm"}, listed
            assert "parked" not in hub.process_list("local")
            # Every instance, parked ones too, stays visible where documented.
            assert [h.state for h in hub.get_pids("parked")] == [OwnerState.FAILED]
            lookup = hub.child_lookup("parked")
            assert lookup is not None and set(lookup[1]) == {parked.node_id}
        calm = a.get_pid("calm")
        assert calm is not None
        owner = next(h for h in hubs if h.node_id == calm.node_id)
        assert set(owner.process_list("local")) == {"calm"}


async def test_process_list_leaves_out_a_replica_parked_as_failed(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    redundancy = Replication(2, mode="active_passive")
    async with cluster(etcd_endpoint, hub_prefix, 2, redundancy=redundancy) as hubs:
        primary, standby = ConsistentHashing().ring({"n1": 1, "n2": 1}).owners("svc", 2)
        spec = ChildSpec(
            "svc",
            f"{parked_workers.__name__}:CrashAsReplicaOn",
            args={"node": standby},
            max_restarts=0,
            max_seconds=60,
        )
        assert (await hubs[0].start_child(spec, wait=True, timeout=5)).ok

        def parked_everywhere() -> bool:
            return all(
                (h := hub.registry.instances("svc").get(standby)) is not None and h.role == "failed"
                for hub in hubs
            )

        await wait_until(parked_everywhere, TIMEOUT, message="the replica is not parked")
        for hub in hubs:
            assert [(h.node_id, h.state) for h in hub.get_pids("svc")] == [
                (primary, OwnerState.RUNNING),
                (standby, OwnerState.FAILED),
            ]
            listed = hub.process_list("global")
            assert set(listed) == {"svc"} and set(listed["svc"]) == {primary}, listed
        by_id = {hub.node_id: hub for hub in hubs}
        assert set(by_id[primary].process_list("local")) == {"svc"}
        assert by_id[standby].process_list("local") == {}
