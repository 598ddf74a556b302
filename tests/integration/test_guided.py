"""Guided placement on real etcd (ProcessHub 8a scenario 3, without its silent-loss bug)."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest
from support.wait import wait_until

from hub import ChildSpec, Hub
from integration import state_workers
from strategies.errors import (
    ChildMappingMismatch,
    ChildReplicationMismatch,
    InvalidChildMapping,
    MissingChildMapping,
)
from strategies.guided import Guided
from strategies.redundancy import Replication

COUNTER = f"{state_workers.__name__}:Counter"


def make(endpoint: str, prefix: str, name: str, guided: Guided) -> Hub:
    return Hub(
        "gd", endpoints=[endpoint], node_id=name, lease_ttl=3, prefix=prefix, distribution=guided
    )


async def test_guided_validates_and_places_exactly_as_mapped(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    async with AsyncExitStack() as stack:
        hubs = {
            n: await stack.enter_async_context(make(etcd_endpoint, hub_prefix, n, Guided()))
            for n in ("a", "b", "c")
        }
        a = hubs["a"]
        spec = [ChildSpec(id="g1", start=COUNTER)]
        with pytest.raises(MissingChildMapping):
            await a.start_children(spec)
        with pytest.raises(InvalidChildMapping):
            await a.start_children(spec, child_mapping=[("g1", ["a"])])  # type: ignore[arg-type]
        with pytest.raises(ChildMappingMismatch):
            await a.start_children(spec, child_mapping={"other": ["a"]})
        with pytest.raises(ChildReplicationMismatch):
            await a.start_children(spec, child_mapping={"g1": ["a", "b"]})
        assert not a.registry_dump()  # nothing was written

        mapping = {f"g{i}": [("a", "b", "c")[i % 3]] for i in range(12)}
        specs = [ChildSpec(id=c, start=COUNTER) for c in mapping]
        result = await a.start_children(specs, child_mapping=mapping, wait=True, timeout=10)
        assert result.ok, result.errors
        assert {h.child_id: [h.node_id] for h in result.started} == mapping
        await a.stop_children(list(mapping), wait=True)
        await wait_until(lambda: not a.registry_dump(), 5)


@pytest.mark.parametrize("fallback", ["wait", "ring"])
async def test_children_of_a_gone_guided_node_wait_or_use_the_ring(
    etcd_endpoint: str, hub_prefix: str, fallback: str
) -> None:
    guided = Guided(fallback=fallback)  # type: ignore[arg-type]
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(make(etcd_endpoint, hub_prefix, "a", guided))
        b = make(etcd_endpoint, hub_prefix, "b", guided)
        await b.start()
        try:
            mapping = {f"w{i}": ["b"] for i in range(5)}
            result = await a.start_children(
                [ChildSpec(id=c, start=COUNTER) for c in mapping],
                child_mapping=mapping,
                wait=True,
                timeout=10,
            )
            assert result.ok and {h.node_id for h in result.started} == {"b"}
        finally:
            await b.stop()
        if fallback == "wait":
            await wait_until(lambda: not a.registry.handles, 10)
            assert set(a.registry_dump()) == set(mapping)  # still desired: nothing vanished
        else:
            await wait_until(
                lambda: all(
                    (h := a.get_pid(c)) is not None and h.is_running and h.node_id == "a"
                    for c in mapping
                ),
                10,
            )
        b = await stack.enter_async_context(make(etcd_endpoint, hub_prefix, "b", guided))
        await wait_until(
            lambda: all(
                (h := a.get_pid(c)) is not None and h.is_running and h.node_id == "b"
                for c in mapping
            ),
            10,
            message="children did not return to their guided node",
        )


async def test_guided_replication_runs_both_instances_on_the_mapped_nodes(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    state_workers.reset()
    redundancy = Replication(2, mode="active_passive")
    async with AsyncExitStack() as stack:
        hubs = {
            n: await stack.enter_async_context(
                Hub(
                    "gr",
                    endpoints=[etcd_endpoint],
                    node_id=n,
                    lease_ttl=3,
                    prefix=hub_prefix,
                    distribution=Guided(),
                    redundancy=redundancy,
                )
            )
            for n in ("a", "b", "c")
        }
        a = hubs["a"]
        await wait_until(lambda: len(a.nodes(include_local=True)) == 3, 10)
        mapping = {"r1": ["b", "c"], "r2": ["c", "a"], "r3": ["a", "b"]}
        specs = [ChildSpec(id=c, start=COUNTER) for c in mapping]
        with pytest.raises(ChildReplicationMismatch):  # one node each is not two instances
            await a.start_children(specs, child_mapping={c: n[:1] for c, n in mapping.items()})
        result = await a.start_children(specs, child_mapping=mapping, wait=True, timeout=10)
        assert result.ok, result.errors

        def placed_as_mapped() -> bool:
            for child_id, nodes in mapping.items():
                instances = a.get_pids(child_id)
                if [h.node_id for h in instances] != nodes:
                    return False  # the primary is the first mapped node, the standby second
                workers = [state_workers.BY_NODE.get((child_id, node)) for node in nodes]
                if any(w is None or not w.active for w in workers):
                    return False
                if [w.ctx.role for w in workers] != ["active", "passive"]:  # type: ignore[union-attr]
                    return False
            return True

        await wait_until(placed_as_mapped, 15, message="instances are not where they were mapped")
