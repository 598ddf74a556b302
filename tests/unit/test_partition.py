"""Unit and property tests for the partition strategies (strategies/partition.py).

The sequences are ProcessHub's: the pure majority-quorum tests
(test/strategy/partition_tolerance/majority_quorum_test.exs) and integration scenarios 10-13,
replayed as membership views folded through ``decide``.
"""

from __future__ import annotations

import doctest
import json
import math
from collections.abc import Iterable, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

import strategies.base
import strategies.partition
from strategies import (
    Availability,
    DynamicQuorum,
    Guarantee,
    MajorityQuorum,
    MembershipView,
    PartitionStrategy,
    QuorumDecision,
    QuorumState,
    StaticQuorum,
    Strict,
)

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


@pytest.mark.parametrize("module", [strategies.partition, strategies.base])
def test_docstring_examples(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert result.failed == 0
