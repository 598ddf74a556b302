"""The quorum gate asks the partition strategy only through its Protocol (no etcd: the
members it reads are the registry's, and nothing here touches the store)."""

from __future__ import annotations

from typing import Any

import pytest

from hub.core.quorum import QuorumGate
from hub.core.registry import Registry
from hub.errors import ConfigError
from hub.etcd.keys import KeySpace
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
