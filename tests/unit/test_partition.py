"""Unit and property tests for the partition strategies (strategies/partition.py).

The sequences are ProcessHub's: the pure majority-quorum tests
(test/strategy/partition_tolerance/majority_quorum_test.exs) and integration scenarios 10-13,
replayed as membership views folded through ``decide``.
"""

from __future__ import annotations

import doctest
import json
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import strategies.base
import strategies.partition
from strategies import (
    Availability,
    DynamicQuorum,
    Guarantee,
    MajorityQuorum,
    MembershipView,
    NoClusterSize,
    PartitionStrategy,
    QuorumDecision,
    QuorumState,
    StaticQuorum,
    Strict,
    checks,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from examples.custom_partition import Witness

NODES = [f"n{i}" for i in range(1, 13)]
HOUR = 3600.0


def view(nodes: Iterable[str], now: float = 0.0, self_id: str = "n1") -> MembershipView:
    return MembershipView(frozenset(nodes), now=now, self_id=self_id)


def first(count: int) -> list[str]:
    return NODES[:count]


def replay(
    strategy: PartitionStrategy,
    views: Sequence[MembershipView],
    state: QuorumState | None = None,
) -> list[QuorumDecision]:
    """Fold ``views`` through ``strategy`` as the hub does, returning every decision."""
    state = QuorumState() if state is None else state
    decisions = []
    for seen in views:
        decision = strategy.decide(seen, state)
        decisions.append(decision)
        state = decision.state
    return decisions


def partitioned(decisions: Sequence[QuorumDecision]) -> list[bool]:
    return [decision.partitioned for decision in decisions]


# -- inputs ------------------------------------------------------------------------------------


def test_view_counts_self_and_validates() -> None:
    seen = MembershipView(frozenset({"n2"}), now=5, self_id="n1")
    assert seen.members == {"n1", "n2"}
    assert seen.now == 5.0 and isinstance(seen.now, float)
    for bad in ({"members": frozenset({""})}, {"self_id": ""}, {"now": math.nan}):
        kwargs: dict[str, object] = {"members": frozenset({"n1"}), "now": 0.0, "self_id": "n1"}
        kwargs.update(bad)
        with pytest.raises(ValueError):
            MembershipView(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="now"):
        MembershipView(frozenset(), now=True, self_id="n1")


def test_state_defaults_and_validation() -> None:
    state = QuorumState()
    assert state.is_initial and state.max_seen == 0 and not state.partitioned
    unsorted = QuorumState(down_log=(("b", 2.0), ("a", 2.0), ("c", 1.0)))
    assert unsorted.down_log == (("c", 1.0), ("a", 2.0), ("b", 2.0))
    for bad in (
        {"max_seen": -1},
        {"max_seen": True},
        {"down_log": (("a",),)},
        {"down_log": (("", 1.0),)},
        {"down_log": (("a", math.inf),)},
        {"previous_members": frozenset({3})},
        {"partitioned": 1},
    ):
        with pytest.raises(ValueError):
            QuorumState(**bad)


def test_resumed_keeps_memory_and_forgets_the_view() -> None:
    state = QuorumState(
        max_seen=7,
        down_log=(("n9", 1.0),),
        previous_members=frozenset({"n1", "n2"}),
        partitioned=True,
    )
    resumed = state.resumed()
    assert resumed == QuorumState(max_seen=7, down_log=(("n9", 1.0),))
    assert resumed.is_initial


states = st.builds(
    QuorumState,
    max_seen=st.integers(0, 20),
    down_log=st.lists(
        st.tuples(st.sampled_from(NODES), st.floats(-1e9, 1e9)), unique_by=lambda e: e[0]
    ).map(tuple),
    previous_members=st.frozensets(st.sampled_from(NODES)),
    partitioned=st.booleans(),
)


@given(states)
def test_state_round_trips_through_json(state: QuorumState) -> None:
    data = json.loads(json.dumps(state.to_dict()))
    assert QuorumState.from_dict(data) == state


def test_from_dict_defaults_and_rejects_garbage() -> None:
    assert QuorumState.from_dict({}) == QuorumState()
    with pytest.raises(ValueError):
        QuorumState.from_dict({"down_log": "n1"})
    with pytest.raises(ValueError):
        QuorumState.from_dict({"previous_members": 3})
    with pytest.raises(ValueError):
        QuorumState.from_dict({"max_seen": "5"})


# -- Strict and Availability ---------------------------------------------------------------


def test_strict_and_availability_never_partition() -> None:
    # Scenario 10 (Divergence upstream): 12 nodes, then stopped one by one.
    views = [view(first(6)), view(first(12))] + [view(first(k)) for k in range(11, 0, -1)]
    for strategy in (Strict(), Availability()):
        decisions = replay(strategy, views)
        assert not any(partitioned(decisions))
        assert all(decision.has_quorum for decision in decisions)
        assert decisions[-1].state.max_seen == 12
        assert decisions[-1].state.previous_members == {"n1"}


def test_guarantees() -> None:
    fenced = (Strict(), StaticQuorum(3), DynamicQuorum(50), MajorityQuorum())
    for strategy in fenced:
        assert isinstance(strategy, PartitionStrategy)
        assert strategy.guarantees == {Guarantee.AT_MOST_ONE_OWNER}
    assert isinstance(Availability(), PartitionStrategy)
    assert Availability().guarantees == {Guarantee.AVAILABLE_DURING_OUTAGE}
    assert Guarantee.AT_MOST_ONE_OWNER not in Availability().guarantees


# -- the members the hub reads besides decide -------------------------------------------------


def test_persists_state_only_where_a_restart_needs_the_memory() -> None:
    builtins = (Strict(), Availability(), StaticQuorum(3), DynamicQuorum(50), MajorityQuorum())
    assert [s.persists_state for s in builtins] == [False, False, False, True, True]


def test_only_dynamic_quorum_has_a_timer() -> None:
    lossy = QuorumState(down_log=(("n9", 100.0),), previous_members=frozenset({"n1"}))
    for strategy in (Strict(), Availability(), StaticQuorum(3), MajorityQuorum()):
        assert strategy.next_expiry(lossy) is None
    assert DynamicQuorum(50, threshold_time=30).next_expiry(lossy) == 130.0
    assert DynamicQuorum(50).next_expiry(QuorumState()) is None


@pytest.mark.parametrize(
    "strategy", [Strict(), Availability(), StaticQuorum(2), DynamicQuorum(50)], ids=repr
)
def test_reset_cluster_size_without_a_cluster_size_raises(strategy: PartitionStrategy) -> None:
    name = type(strategy).__name__
    with pytest.raises(NoClusterSize, match=f"^{name} keeps no cluster size to reset: ") as caught:
        strategy.reset_cluster_size(QuorumState(max_seen=3), 2)
    assert caught.value.strategy == name
    assert isinstance(caught.value, ValueError)


# -- MajorityQuorum: ProcessHub's pure tests -------------------------------------------------


@pytest.mark.parametrize(("size", "quorum"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4)])
def test_majority_quorum_size(size: int, quorum: int) -> None:
    assert MajorityQuorum.quorum(size) == quorum


def test_majority_single_node_has_quorum() -> None:
    for strategy in (MajorityQuorum(), MajorityQuorum(initial_cluster_size=1)):
        [start, again] = replay(strategy, [view(["n1"]), view(["n1"])])
        assert start.has_quorum and again.has_quorum
        assert not start.partitioned and not again.partitioned
        assert start.state.max_seen == 1


def test_majority_two_nodes_need_both() -> None:
    decisions = replay(MajorityQuorum(), [view(first(2)), view(first(1))])
    assert partitioned(decisions) == [False, True]
    assert decisions[1].reason.endswith("lost on a leave")


def test_majority_remembers_max_size_after_a_leave() -> None:
    decisions = replay(MajorityQuorum(), [view(first(1)), view(first(2)), view(first(1))])
    assert [d.state.max_seen for d in decisions] == [1, 2, 2]
    assert partitioned(decisions) == [False, False, True]


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [((3, 2, 1), [False, False, True]), ((5, 3, 2), [False, False, True])],
)
def test_majority_losing_nodes(sizes: tuple[int, ...], expected: list[bool]) -> None:
    assert partitioned(replay(MajorityQuorum(), [view(first(k)) for k in sizes])) == expected


def test_majority_split_3_2_keeps_the_majority_side() -> None:
    five = first(5)
    majority_side = replay(MajorityQuorum(), [view(five), view(five[:3])])
    assert partitioned(majority_side) == [False, False]
    minority_side = replay(
        MajorityQuorum(), [view(five, self_id="n4"), view(five[3:], self_id="n4")]
    )
    assert partitioned(minority_side) == [False, True]
    assert not minority_side[1].has_quorum


def test_majority_split_2_1_keeps_the_majority_side() -> None:
    three = first(3)
    assert partitioned(replay(MajorityQuorum(), [view(three), view(three[:2])])) == [False, False]
    lone = replay(MajorityQuorum(), [view(three, self_id="n3"), view(["n3"], self_id="n3")])
    assert partitioned(lone) == [False, True]


def test_majority_without_tracking_keeps_the_first_size() -> None:
    strategy = MajorityQuorum(initial_cluster_size=3, track_max_size=False)
    decisions = replay(strategy, [view(first(k)) for k in (1, 5, 2, 1)])
    assert [d.state.max_seen for d in decisions] == [3, 3, 3, 3]
    # 1 of 3 at start-up: no quorum, but the first decision never locks.
    assert [d.has_quorum for d in decisions] == [False, True, True, False]
    assert partitioned(decisions) == [False, False, False, True]


def test_majority_without_tracking_starts_from_the_current_size() -> None:
    # As upstream's init: max(initial_cluster_size, current size), then frozen.
    strategy = MajorityQuorum(initial_cluster_size=3, track_max_size=False)
    decisions = replay(strategy, [view(first(k)) for k in (5, 6, 3, 2)])
    assert [d.state.max_seen for d in decisions] == [5, 5, 5, 5]
    assert partitioned(decisions) == [False, False, False, True]


def test_majority_with_tracking_follows_growth() -> None:
    decisions = replay(MajorityQuorum(), [view(first(k)) for k in (1, 3, 5, 2)])
    assert [d.state.max_seen for d in decisions] == [1, 3, 5, 5]
    assert partitioned(decisions) == [False, False, False, True]


def test_majority_initial_size_5_on_one_node_has_no_quorum() -> None:
    [start] = replay(MajorityQuorum(initial_cluster_size=5), [view(["n1"])])
    assert start.state.max_seen == 5
    assert not start.has_quorum
    assert not start.partitioned  # upstream's init never locks either
    # ... but the first leave below 3 does.
    later = replay(MajorityQuorum(initial_cluster_size=5), [view(first(2)), view(first(1))])
    assert partitioned(later) == [False, True]


def test_majority_initial_size_is_a_baseline_until_exceeded() -> None:
    [start] = replay(MajorityQuorum(initial_cluster_size=3), [view(first(2))])
    assert start.state.max_seen == 3 and start.has_quorum


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6])
def test_majority_even_and_odd_sizes(size: int) -> None:
    quorum = size // 2 + 1
    sequence = [view(first(size)), view(first(quorum))]
    expected = [False, False]
    if quorum > 1:
        sequence.append(view(first(quorum - 1)))
        expected.append(True)
    assert partitioned(replay(MajorityQuorum(), sequence)) == expected


def test_majority_reset_cluster_size() -> None:
    strategy = MajorityQuorum()
    state = QuorumState(max_seen=5, previous_members=frozenset(first(4)))
    three = strategy.decide(view(first(3)), state)
    assert not three.partitioned
    two = strategy.decide(view(first(2)), three.state)
    assert two.partitioned
    reset = MajorityQuorum.reset_cluster_size(two.state, 3)
    assert (
        reset.max_seen == 3
        and reset.partitioned
        and reset.previous_members == two.state.previous_members
    )
    cleared = strategy.decide(view(first(2)), reset)
    assert not cleared.partitioned and cleared.has_quorum
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match="size"):
            MajorityQuorum.reset_cluster_size(state, bad)  # type: ignore[arg-type]


def test_majority_scenario_13() -> None:
    decisions = replay(MajorityQuorum(), [view(first(k)) for k in (6, 10, 9, 7, 6, 5)])
    assert [d.state.max_seen for d in decisions] == [6, 10, 10, 10, 10, 10]
    assert partitioned(decisions) == [False, False, False, False, False, True]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initial_cluster_size": 0},
        {"initial_cluster_size": True},
        {"initial_cluster_size": 2.0},
        {"track_max_size": 1},
    ],
)
def test_majority_validates_config(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        MajorityQuorum(**kwargs)  # type: ignore[arg-type]


# -- StaticQuorum ---------------------------------------------------------------------------


def test_static_scenario_11_with_startup_confirm() -> None:
    decisions = replay(
        StaticQuorum(7, startup_confirm=True), [view(first(k)) for k in (6, 8, 7, 6)]
    )
    assert partitioned(decisions) == [True, False, False, True]
    assert decisions[0].reason.endswith("missing at start-up")


def test_static_without_startup_confirm_starts_running() -> None:
    decisions = replay(StaticQuorum(7), [view(first(k)) for k in (6, 8, 7, 6)])
    assert partitioned(decisions) == [False, False, False, True]
    assert not decisions[0].has_quorum


def test_static_lock_on_leave_unlock_at_quorum() -> None:
    # A join that leaves the quorum short keeps the mode, whichever it is.
    sizes = (1, 2, 1, 2, 3, 2)
    decisions = replay(StaticQuorum(3), [view(first(k)) for k in sizes])
    assert partitioned(decisions) == [False, False, True, True, False, True]
    assert decisions[1].reason.endswith("no member left since the node was running")
    assert decisions[3].reason.endswith("still missing")


def test_a_replaced_member_counts_as_a_leave() -> None:
    state = StaticQuorum(3).decide(view(["n1", "n2"]), QuorumState()).state
    assert StaticQuorum(3).decide(view(["n1", "n3"]), state).partitioned


@pytest.mark.parametrize(
    "kwargs",
    [
        {"quorum_size": 0},
        {"quorum_size": True},
        {"quorum_size": 2.5},
        {"quorum_size": 3, "startup_confirm": "yes"},
    ],
)
def test_static_validates_config(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        StaticQuorum(**kwargs)  # type: ignore[arg-type]


# -- DynamicQuorum --------------------------------------------------------------------------


def test_dynamic_scenario_12() -> None:
    # 6 nodes, 4 more join (10), then one leaves per minute: 90 %, 80 % healthy, 70 % not.
    views = [view(first(6), now=0), view(first(10), now=10)]
    views += [view(first(10 - k), now=60.0 * k) for k in (1, 2, 3)]
    decisions = replay(DynamicQuorum(80, threshold_time=HOUR), views)
    assert partitioned(decisions) == [False, False, False, False, True]
    assert [len(d.state.down_log) for d in decisions] == [0, 0, 1, 2, 3]
    assert "80% remaining" in decisions[3].reason
    assert "70% remaining" in decisions[4].reason
    assert decisions[4].state.down_log == (("n10", 60.0), ("n9", 120.0), ("n8", 180.0))


def test_dynamic_prunes_entries_older_than_the_threshold() -> None:
    strategy = DynamicQuorum(80, threshold_time=HOUR)
    views = [view(first(10), now=0)] + [view(first(10 - k), now=float(k)) for k in (1, 2, 3)]
    state = replay(strategy, views)[-1].state
    assert state.partitioned and strategy.next_expiry(state) == 1 + HOUR
    # Just before the first entry's hour is up, nothing is pruned.
    assert len(strategy.decide(view(first(7), now=HOUR + 0.5), state).state.down_log) == 3
    # An entry exactly threshold_time old is pruned (upstream keeps `time > now - threshold`).
    at_expiry = strategy.decide(view(first(7), now=HOUR + 1), state)
    assert at_expiry.state.down_log == (("n9", 2.0), ("n8", 3.0))
    assert at_expiry.partitioned  # 7 of 9 is still below 80 %
    later = strategy.decide(view(first(7), now=HOUR + 3), state)
    assert later.state.down_log == () and not later.partitioned and later.has_quorum
    assert strategy.next_expiry(later.state) is None


def test_dynamic_slow_losses_never_partition() -> None:
    # One node per threshold_time: the log never holds two; the worst is 1 live, 1 down (50 %).
    views = [view(first(k), now=(10 - k) * 30.0) for k in range(10, 0, -1)]
    decisions = replay(DynamicQuorum(50), views)
    assert not any(partitioned(decisions))


def test_dynamic_rejoin_leaves_the_log() -> None:
    strategy = DynamicQuorum(80, threshold_time=HOUR)
    views = [view(first(10), now=0)] + [view(first(10 - k), now=float(k)) for k in (1, 2, 3)]
    state = replay(strategy, views)[-1].state
    rejoined = strategy.decide(view(first(8), now=4.0), state)
    assert [node for node, _ in rejoined.state.down_log] == ["n10", "n9"]
    assert not rejoined.partitioned  # 8 of 10 is 80 %


def test_dynamic_first_observation_never_partitions() -> None:
    carried = QuorumState(down_log=tuple((f"x{i}", 0.0) for i in range(50)))
    strategy = DynamicQuorum(90, threshold_time=HOUR)
    start = strategy.decide(view(first(2), now=1.0), carried)
    assert not start.partitioned and not start.has_quorum
    assert len(start.state.down_log) == 50


def test_dynamic_ignores_log_entries_of_live_members() -> None:
    carried = QuorumState(down_log=(("n2", 0.0), ("n3", 0.0)))
    decision = DynamicQuorum(90).decide(view(first(3), now=1.0), carried)
    assert decision.state.down_log == () and decision.has_quorum


def test_dynamic_compares_exactly() -> None:
    # The formula in floats gives 100 - 11 / 20 * 100 == 44.99999999999999 for 9 of 20,
    # which would fall below a 45 % quorum it exactly meets.
    assert 100 - 11 / 20 * 100 < 45
    twenty = [f"n{i}" for i in range(1, 21)]
    strategy = DynamicQuorum(45)
    state = strategy.decide(view(twenty), QuorumState()).state
    decision = strategy.decide(view(twenty[:9]), state)
    assert decision.has_quorum and not decision.partitioned
    assert "45% remaining" in decision.reason


@pytest.mark.parametrize(
    "kwargs",
    [
        {"quorum_size": 0},
        {"quorum_size": 100.5},
        {"quorum_size": math.nan},
        {"quorum_size": True},
        {"quorum_size": 50, "threshold_time": 0},
        {"quorum_size": 50, "threshold_time": -1},
        {"quorum_size": 50, "threshold_time": math.inf},
    ],
)
def test_dynamic_validates_config(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        DynamicQuorum(**kwargs)  # type: ignore[arg-type]


# -- properties ---------------------------------------------------------------------------------

quorum_strategies = st.one_of(
    st.builds(StaticQuorum, st.integers(1, 12), st.booleans()),
    st.builds(MajorityQuorum, st.integers(1, 12), st.booleans()),
    st.builds(DynamicQuorum, st.floats(1, 100), st.floats(1, 1e4)),
)
all_strategies = st.one_of(quorum_strategies, st.just(Strict()), st.just(Availability()))
member_sets = st.frozensets(st.sampled_from(NODES))
times = st.floats(-1e6, 1e6)


@given(all_strategies, states, member_sets, times)
def test_decisions_are_deterministic(
    strategy: PartitionStrategy, state: QuorumState, members: frozenset[str], now: float
) -> None:
    seen = view(members, now)
    decision = strategy.decide(seen, state)
    assert strategy.decide(view(sorted(members, reverse=True), now), state) == decision
    reloaded = QuorumState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert strategy.decide(seen, reloaded) == decision
    assert decision.state.previous_members == seen.members


@given(quorum_strategies, states, member_sets, member_sets, times)
def test_more_live_members_never_partition_a_healthy_node(
    strategy: PartitionStrategy,
    state: QuorumState,
    members: frozenset[str],
    extra: frozenset[str],
    now: float,
) -> None:
    """Monotone in the live count: a superset of members is at least as healthy."""
    fewer = strategy.decide(view(members, now), state)
    more = strategy.decide(view(members | extra, now), state)
    if fewer.has_quorum:
        assert more.has_quorum
    if not fewer.partitioned:
        assert not more.partitioned


@given(quorum_strategies, st.lists(st.tuples(member_sets, st.floats(0, 1e5)), max_size=12))
def test_a_full_quorum_is_never_partitioned(
    strategy: PartitionStrategy, history: list[tuple[frozenset[str], float]]
) -> None:
    decisions = replay(
        strategy, [view(members, now) for members, now in sorted(history, key=lambda h: h[1])]
    )
    for decision in decisions:
        if decision.has_quorum:
            assert not decision.partitioned
        assert decision.state.partitioned == decision.partitioned


# -- conformance: every partition strategy, the custom example included ------------------------

PARTITION = [
    Strict(),
    Availability(),
    StaticQuorum(3),
    StaticQuorum(3, startup_confirm=True),
    DynamicQuorum(60, threshold_time=100),
    MajorityQuorum(),
    MajorityQuorum(5, track_max_size=False),
    Witness("n2"),
]
partition_param = pytest.mark.parametrize("strategy", PARTITION, ids=repr)
recent_times = st.floats(0, 1e5)


@partition_param
def test_conformance_protocol_and_checks(strategy: PartitionStrategy) -> None:
    assert isinstance(strategy, PartitionStrategy)
    assert checks.partition_problems(strategy) == []
    assert isinstance(strategy.persists_state, bool)


@partition_param
@given(state=states, members=member_sets, now=recent_times)
def test_conformance_decisions_are_pure_and_consistent(
    strategy: PartitionStrategy, state: QuorumState, members: frozenset[str], now: float
) -> None:
    seen = view(members, now)
    decision = strategy.decide(seen, state)
    assert strategy.decide(view(sorted(members, reverse=True), now), state) == decision
    reloaded = QuorumState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert strategy.decide(seen, reloaded) == decision
    assert decision.state.previous_members == seen.members
    assert decision.state.partitioned == decision.partitioned
    if decision.has_quorum:
        assert not decision.partitioned


@partition_param
@given(state=states, members=member_sets, extra=member_sets, now=recent_times)
def test_conformance_monotone_in_the_live_members(
    strategy: PartitionStrategy,
    state: QuorumState,
    members: frozenset[str],
    extra: frozenset[str],
    now: float,
) -> None:
    fewer = strategy.decide(view(members, now), state)
    more = strategy.decide(view(members | extra, now), state)
    if fewer.has_quorum:
        assert more.has_quorum
    if not fewer.partitioned:
        assert not more.partitioned


@partition_param
@given(
    state=states,
    before=member_sets,
    members=member_sets,
    now=recent_times,
    later=st.floats(0, 1),
)
def test_conformance_nothing_changes_before_next_expiry(
    strategy: PartitionStrategy,
    state: QuorumState,
    before: frozenset[str],
    members: frozenset[str],
    now: float,
    later: float,
) -> None:
    """With the same members, a decision holds until ``next_expiry`` (forever if None)."""
    settled = strategy.decide(view(before, now), state)
    decision = strategy.decide(view(members, now), settled.state)
    expiry = strategy.next_expiry(decision.state)
    horizon = 1e6 if expiry is None else expiry - now
    assume(horizon > 1e-3)
    again = strategy.decide(view(members, now + later * horizon * 0.99), decision.state)
    assert (again.partitioned, again.has_quorum) == (decision.partitioned, decision.has_quorum)


@partition_param
@given(state=states, members=member_sets, now=recent_times)
def test_conformance_reset_to_the_live_size_restores_the_quorum(
    strategy: PartitionStrategy, state: QuorumState, members: frozenset[str], now: float
) -> None:
    seen = view(members, now)
    current = strategy.decide(seen, state).state
    try:
        reset = strategy.reset_cluster_size(current, len(seen.members))
    except NoClusterSize:
        return
    assert isinstance(reset, QuorumState)
    decision = strategy.decide(seen, reset)
    assert decision.has_quorum and not decision.partitioned


@partition_param
@given(state=states, members=member_sets, now=recent_times)
def test_conformance_unpersisted_state_decides_nothing(
    strategy: PartitionStrategy, state: QuorumState, members: frozenset[str], now: float
) -> None:
    """``persists_state = False`` is honest: a restart with the memory decides as one
    without it."""
    if strategy.persists_state:
        return
    resumed = strategy.decide(view(members, now), state.resumed())
    fresh = strategy.decide(view(members, now), QuorumState())
    assert (resumed.partitioned, resumed.has_quorum) == (fresh.partitioned, fresh.has_quorum)


def test_partition_conformance_covers_every_strategy() -> None:
    builtins = {Strict, Availability, StaticQuorum, DynamicQuorum, MajorityQuorum}
    assert {type(s) for s in PARTITION} == builtins | {Witness}
    exported = {
        obj
        for name in strategies.__all__
        if isinstance(obj := getattr(strategies, name), type)
        and obj is not PartitionStrategy
        and hasattr(obj, "decide")
    }
    assert exported == builtins


def test_the_witness_example_stops_nodes_that_cannot_see_it() -> None:
    witness = Witness("n2")
    decisions = replay(witness, [view(["n2", "n3"]), view(["n3"]), view(["n2", "n3"])])
    assert partitioned(decisions) == [False, True, False]
    assert decisions[1].reason == "witness 'n2' is not a member"
    assert not witness.decide(view([], self_id="n2"), QuorumState()).partitioned


# -- checks: what the hub refuses ----------------------------------------------------------------


@dataclass(frozen=True)
class Partition:
    """A hand-made partition strategy, broken in one member at a time."""

    guarantees: object = frozenset({Guarantee.AT_MOST_ONE_OWNER})
    persists_state: object = False
    decision: object = None
    expiry: object = None
    reset: object = None

    def decide(self, view: MembershipView, state: QuorumState) -> QuorumDecision:
        if isinstance(self.decision, Exception):
            raise self.decision
        if self.decision is not None:
            return self.decision  # type: ignore[return-value]
        return QuorumDecision(False, "fine", QuorumState(previous_members=view.members))

    def next_expiry(self, state: QuorumState) -> float | None:
        return self.expiry  # type: ignore[return-value]

    def reset_cluster_size(self, state: QuorumState, size: int) -> QuorumState:
        if self.reset is None:
            raise NoClusterSize("Partition")
        if isinstance(self.reset, Exception):
            raise self.reset
        return self.reset  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("strategy", "problem"),
    [
        (
            Partition(
                guarantees=frozenset(
                    {Guarantee.AT_MOST_ONE_OWNER, Guarantee.AVAILABLE_DURING_OUTAGE}
                )
            ),
            "promises both AT_MOST_ONE_OWNER and AVAILABLE_DURING_OUTAGE",
        ),
        (Partition(guarantees=("at_most_one_owner",)), "frozenset of Guarantee"),
        (Partition(persists_state="yes"), "persists_state must be a bool"),
        (Partition(decision=RuntimeError("boom")), "decide() on a one-node view raised"),
        (Partition(decision=True), "decide() must return a QuorumDecision"),
        (Partition(expiry="soon"), "next_expiry() must return None or a time"),
        (Partition(expiry=math.inf), "next_expiry() must return None or a time"),
        (Partition(reset=NotImplementedError()), "raise strategies.errors.NoClusterSize"),
        (Partition(reset=3), "reset_cluster_size() must return a QuorumState"),
    ],
)
def test_partition_checks_name_what_is_wrong(strategy: Partition, problem: str) -> None:
    found = checks.partition_problems(strategy)
    assert len(found) == 1 and problem in found[0], found
    assert checks.partition_problems(Partition()) == []
    assert checks.partition_problems(Partition(reset=QuorumState(), expiry=5.0)) == []


def test_a_partition_strategy_without_the_new_members_is_named() -> None:
    class OldStyle:  # what a custom strategy had before the Protocol declared every member
        guarantees = frozenset({Guarantee.AT_MOST_ONE_OWNER})

        def decide(self, view: MembershipView, state: QuorumState) -> QuorumDecision:
            return QuorumDecision(False, "ok", state)

    assert not isinstance(OldStyle(), PartitionStrategy)
    assert checks.partition_problems(OldStyle()) == [
        "OldStyle has no `persists_state` (a PartitionStrategy has guarantees, "
        "persists_state, decide, next_expiry, reset_cluster_size)"
    ]


@pytest.mark.parametrize("module", [strategies.partition, strategies.base])
def test_docstring_examples(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert result.failed == 0 and result.attempted > 0
