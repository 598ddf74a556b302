"""The quorum gate asks the partition strategy only through its Protocol (no etcd: the
members it reads are the registry's, and nothing here touches the store)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from hub.core.quorum import SCHEMA, QuorumGate
from hub.core.registry import Registry
from hub.errors import ConfigError
from hub.etcd.keys import KeySpace
from hub.testing import FakeKV
from strategies import (
    Availability,
    DynamicQuorum,
    MajorityQuorum,
    PartitionStrategy,
    QuorumState,
    StaticQuorum,
    Strict,
)


def gate(strategy: PartitionStrategy) -> QuorumGate:
    keys = KeySpace("h")
    changes: list[tuple[bool, str]] = []
    store: Any = None  # never used by the calls below
    return QuorumGate(
        store=store,
        keys=keys,
        registry=Registry(keys),
        node_id="n1",
        strategy=strategy,
        on_change=lambda partitioned, reason: changes.append((partitioned, reason)),
    )


@pytest.mark.parametrize(
    ("strategy", "persists"),
    [
        (Strict(), False),
        (Availability(), False),
        (StaticQuorum(1), False),
        (DynamicQuorum(50), True),
        (MajorityQuorum(), True),
    ],
    ids=repr,
)
def test_the_gate_stores_state_only_when_the_strategy_says_so(
    strategy: PartitionStrategy, persists: bool
) -> None:
    assert gate(strategy).persists is persists


@pytest.mark.parametrize(
    "strategy", [Strict(), Availability(), StaticQuorum(1), DynamicQuorum(50)], ids=repr
)
def test_reset_without_a_cluster_size_is_a_config_error(strategy: PartitionStrategy) -> None:
    name = type(strategy).__name__
    with pytest.raises(ConfigError, match=f"partition={name}: {name} keeps no cluster size"):
        gate(strategy).reset_cluster_size(1)


async def test_reset_takes_the_size_and_decides_again() -> None:
    majority = gate(MajorityQuorum())
    majority.state = QuorumState(max_seen=5, previous_members=frozenset({"n1"}), partitioned=True)
    majority.reset_cluster_size(1)
    assert majority.state.max_seen == 1
    assert majority._changed.is_set()  # the run loop decides again at once
    decision = majority.decide()
    assert not decision.partitioned and decision.has_quorum
    with pytest.raises(ValueError, match="size must be an int >= 1"):
        majority.reset_cluster_size(0)


async def test_a_reset_made_after_the_hub_loaded_the_state_is_not_read_over() -> None:
    """The Hub loads the stored state before it reports ready, then runs the gate: the run
    must not read the state a second time, or a reset_cluster_size() made in between (right
    after ``async with Hub(...)``) would be overwritten by the stored size."""
    kv = FakeKV()
    keys = KeySpace("h")
    record = {"schema": SCHEMA, **QuorumState(max_seen=5).to_dict()}
    await kv.put(keys.quorum("n1"), json.dumps(record).encode())
    majority = QuorumGate(
        store=kv,  # type: ignore[arg-type]  # the gate only gets and puts
        keys=keys,
        registry=Registry(keys),
        node_id="n1",
        strategy=MajorityQuorum(),
        on_change=lambda partitioned, reason: None,
    )
    await majority.load()
    assert majority.state.max_seen == 5
    majority.reset_cluster_size(1)

    async def stored_size() -> int:
        kv_now = await kv.get(keys.quorum("n1"))
        assert kv_now is not None
        return int(json.loads(kv_now.value)["max_seen"])

    async with asyncio.TaskGroup() as tg:
        runner = tg.create_task(majority.run())
        deadline = asyncio.get_running_loop().time() + 5.0
        while await stored_size() != 1:  # the run stores what it decided
            assert asyncio.get_running_loop().time() < deadline, "the reset was not stored"
            await asyncio.sleep(0.01)
        runner.cancel()
    assert majority.state.max_seen == 1
