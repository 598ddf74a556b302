"""One conformance suite over every redundancy strategy, the custom example included, and
the migration strategies (which are configuration: their values are all there is to check)."""

from __future__ import annotations

import doctest
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st

import strategies.migration
import strategies.redundancy
from hub.core.placement import Placement
from strategies import (
    ColdSwap,
    ConsistentHashing,
    Guarantee,
    HotSwap,
    MigrationStrategy,
    PlacementInput,
    RedundancyMode,
    RedundancyStrategy,
    Replication,
    Singularity,
    checks,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from examples.custom_migration import EnvironmentHandover
from examples.custom_redundancy import GrowingStandbys

NODES = [f"node-{i}" for i in range(12)]

REDUNDANCY = [
    Singularity(),
    Replication(1),
    Replication(2),
    Replication(3, mode="active_passive"),
    Replication("cluster"),
    Replication("cluster", mode="active_passive"),
    GrowingStandbys(),
    GrowingStandbys(members_per_standby=1, max_standbys=3),
]
redundancy_param = pytest.mark.parametrize("strategy", REDUNDANCY, ids=repr)
member_counts = st.integers(0, 500)


@redundancy_param
def test_conformance_protocol_and_checks(strategy: RedundancyStrategy) -> None:
    assert isinstance(strategy, RedundancyStrategy)
    assert checks.redundancy_problems(strategy) == []
    assert strategy.mode in get_args(RedundancyMode)
    assert isinstance(strategy.guarantees, frozenset)
    assert all(isinstance(g, Guarantee) for g in strategy.guarantees)
    assert Guarantee.AVAILABLE_DURING_OUTAGE not in strategy.guarantees


@redundancy_param
@given(members=member_counts)
def test_conformance_count_is_a_positive_int(strategy: RedundancyStrategy, members: int) -> None:
    count = strategy.count(members)
    assert isinstance(count, int) and not isinstance(count, bool) and count >= 1


@redundancy_param
@given(members=member_counts, more=st.integers(0, 50))
def test_conformance_more_members_never_mean_fewer_instances(
    strategy: RedundancyStrategy, members: int, more: int
) -> None:
    assert strategy.count(members + more) >= strategy.count(members)


@redundancy_param
@given(members=member_counts)
def test_conformance_at_most_one_owner_means_one_active_instance(
    strategy: RedundancyStrategy, members: int
) -> None:
    if Guarantee.AT_MOST_ONE_OWNER in strategy.guarantees:
        assert strategy.mode == "active_passive" or strategy.count(members) == 1


@redundancy_param
@given(live=st.integers(0, len(NODES)), child_id=st.text(min_size=1, max_size=12))
def test_conformance_instances_on_distinct_members(
    strategy: RedundancyStrategy, live: int, child_id: str
) -> None:
    """What the hub places: min(count, members) distinct members, the owner first."""
    members = dict.fromkeys(NODES[:live], 1)
    placer = ConsistentHashing(32).placer(PlacementInput(members))
    placement = Placement(members, placer, max(1, strategy.count(len(members))))
    instances = placement.instances(child_id)
    assert len(set(instances)) == len(instances) == min(strategy.count(live), live)
    assert set(instances) <= set(members)
    assert placement.owner(child_id) == (instances[0] if instances else None)
    assert placement.replicated == (strategy.count(live) > 1)


def test_redundancy_conformance_covers_every_builtin() -> None:
    assert {type(s) for s in REDUNDANCY} == {Singularity, Replication, GrowingStandbys}


def test_a_plain_object_is_a_redundancy_strategy() -> None:
    class Two:
        guarantees: frozenset[Guarantee] = frozenset()
        mode = "active_active"

        def count(self, members: int) -> int:
            return 2

    assert isinstance(Two(), RedundancyStrategy)
    assert checks.redundancy_problems(Two()) == []


@dataclass(frozen=True)
class Redundancy:
    """A hand-made redundancy strategy, broken in one member at a time."""

    guarantees: object = frozenset()
    mode: object = "active_active"
    answer: object = 2

    def count(self, members: int) -> int:
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("strategy", "problem"),
    [
        (Redundancy(guarantees={Guarantee.AT_MOST_ONE_OWNER}), "frozenset of Guarantee"),
        (Redundancy(guarantees=frozenset({"at_most_one_owner"})), "frozenset of Guarantee"),
        (
            Redundancy(guarantees=frozenset({Guarantee.AVAILABLE_DURING_OUTAGE})),
            "only a partition strategy",
        ),
        (Redundancy(mode="active"), "mode must be"),
        (Redundancy(answer=0), r"count\(0\) must return an int >= 1, got 0"),
        (Redundancy(answer=True), "must return an int"),
        (Redundancy(answer=2.0), "must return an int"),
        (Redundancy(answer=ValueError("no")), r"count\(0\) raised ValueError: no"),
        (
            Redundancy(guarantees=frozenset({Guarantee.AT_MOST_ONE_OWNER})),
            "promises AT_MOST_ONE_OWNER, but with mode 'active_active' its 2 instances",
        ),
    ],
)
def test_checks_name_what_is_wrong(strategy: Redundancy, problem: str) -> None:
    (found,) = checks.redundancy_problems(strategy)
    assert found.startswith("Redundancy")
    assert re.search(problem, found), found


# -- migration: configuration -------------------------------------------------------------

MIGRATION = [
    ColdSwap(),
    HotSwap(),
    HotSwap(state_timeout=0.5, handover_ttl=5),
    EnvironmentHandover(),
    EnvironmentHandover.read({"HANDOVER_STATE_TIMEOUT": "20", "HANDOVER_TTL": "600"}),
]


@pytest.mark.parametrize("strategy", MIGRATION, ids=repr)
def test_migration_conformance(strategy: MigrationStrategy) -> None:
    assert isinstance(strategy, MigrationStrategy)
    assert checks.migration_problems(strategy) == []
    assert strategy.guarantees == {Guarantee.AT_MOST_ONE_OWNER}
    if strategy.handover:
        assert strategy.state_timeout > 0 and strategy.handover_ttl >= 5


def test_environment_handover_reads_its_settings() -> None:
    read = EnvironmentHandover.read({"HANDOVER_STATE_TIMEOUT": "20", "HANDOVER_TTL": "600"})
    assert (read.state_timeout, read.handover_ttl) == (20.0, 600)
    assert EnvironmentHandover.read({}) == EnvironmentHandover() == EnvironmentHandover(3.0, 60)


@dataclass(frozen=True)
class Migration:
    guarantees: object = frozenset({Guarantee.AT_MOST_ONE_OWNER})
    handover: object = True
    state_timeout: object = 3.0
    handover_ttl: object = 60


@pytest.mark.parametrize(
    ("strategy", "problem"),
    [
        (Migration(handover=1), "handover must be a bool"),
        (Migration(state_timeout=-1.0), "state_timeout must be a number of seconds >= 0"),
        (Migration(state_timeout=float("nan")), "state_timeout must be a number"),
        (Migration(state_timeout=0), "state_timeout must be > 0 with handover=True"),
        (Migration(handover_ttl=2.5), "handover_ttl must be an int >= 0"),
        (Migration(handover_ttl=4), "handover_ttl must be >= 5 with handover=True"),
        (Migration(guarantees=[]), "frozenset of Guarantee"),
    ],
)
def test_migration_checks_name_what_is_wrong(strategy: Migration, problem: str) -> None:
    assert [problem in found for found in checks.migration_problems(strategy)] == [True]


def test_cold_swap_values_need_no_handover_settings() -> None:
    assert (
        checks.migration_problems(Migration(handover=False, state_timeout=0, handover_ttl=0)) == []
    )


def test_a_migration_object_missing_a_member_is_named() -> None:
    class NoTtl:
        guarantees = frozenset({Guarantee.AT_MOST_ONE_OWNER})
        handover = True
        state_timeout = 3.0

    assert checks.migration_problems(NoTtl()) == [
        "NoTtl has no `handover_ttl` (a MigrationStrategy has guarantees, handover, "
        "state_timeout, handover_ttl)"
    ]


@pytest.mark.parametrize("module", [strategies.redundancy, strategies.migration])
def test_docstring_examples(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert result.failed == 0 and result.attempted > 0
