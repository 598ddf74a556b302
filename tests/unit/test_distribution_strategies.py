"""Unit and property tests for Guided and BoundedLoad, and one conformance suite over every
distribution strategy (tooz-style: each implementation must pass the same properties)."""

from __future__ import annotations

import dataclasses
import doctest
import json
import math
import os
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import strategies.base
import strategies.bounded_load
import strategies.checks
import strategies.errors
import strategies.guided
import strategies.pins
from strategies import (
    BoundedLoad,
    BoundedLoadPlacer,
    ChildMappingMismatch,
    ChildReplicationMismatch,
    ConsistentHashing,
    DistributionStrategy,
    Guarantee,
    Guided,
    GuidedPlacer,
    HashRing,
    InvalidChildMapping,
    MissingChildMapping,
    PinnedPlacer,
    PlacementError,
    PlacementInput,
    Placer,
    checks,
    stable_hash,
    validate_mapping,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from examples.custom_strategy import Rendezvous

VNODES = 32  # small rings keep the properties fast; they hold for any vnode count
UNIVERSE = [f"node-{i}" for i in range(10)]
IDS_200 = [f"child-{i}" for i in range(200)]


def equal(nodes: Sequence[str]) -> dict[str, int]:
    return dict.fromkeys(nodes, 1)


# -- Guided: validation ---------------------------------------------------------------------------


def test_guided_errors_form_one_tree() -> None:
    for error in (
        MissingChildMapping,
        InvalidChildMapping,
        ChildMappingMismatch,
        ChildReplicationMismatch,
    ):
        assert issubclass(error, PlacementError)
    assert issubclass(PlacementError, ValueError)


def test_missing_mapping() -> None:
    with pytest.raises(MissingChildMapping):
        validate_mapping(["a"], None, replicas=1)


@pytest.mark.parametrize(
    "mapping",
    [
        [("a", ["node-1"])],  # a keyword list is not a mapping (ProcessHub's own example)
        "a=node-1",
        {"a": "node-1"},  # a str is not a list of node ids
        {"a": {"node-1"}},
        {"a": ["node-1", 2]},
        {"a": [""]},
        {"a": ["node-1", "node-1"]},
        {"": ["node-1"]},
        {"a": ["node-1"], "b": "oops"},  # entries for other children are checked too
    ],
)
def test_invalid_mapping(mapping: object) -> None:
    with pytest.raises(InvalidChildMapping):
        validate_mapping(["a"], mapping, replicas=1)


def test_child_without_an_entry() -> None:
    with pytest.raises(ChildMappingMismatch) as caught:
        validate_mapping(["a", "b", "c"], {"b": ["node-1"]}, replicas=1)
    assert caught.value.child_ids == ("a", "c")


def test_child_mapped_to_the_wrong_number_of_nodes() -> None:
    mapping = {"a": ["node-1", "node-2"], "b": ["node-1"]}
    with pytest.raises(ChildReplicationMismatch) as caught:
        validate_mapping(["a", "b"], mapping, replicas=2)
    assert (caught.value.child_id, caught.value.expected, caught.value.actual) == ("b", 2, 1)


def test_validation_follows_processhub_order() -> None:
    # Each case also breaks every later rule; the earliest rule must win.
    with pytest.raises(MissingChildMapping):
        validate_mapping(["a"], None, replicas=2)
    with pytest.raises(InvalidChildMapping):
        validate_mapping(["a", "b"], {"a": "node-1"}, replicas=2)  # also b missing, wrong length
    with pytest.raises(ChildMappingMismatch):
        validate_mapping(["a", "b"], {"a": ["node-1"]}, replicas=2)  # also a's length
    with pytest.raises(ChildReplicationMismatch):
        validate_mapping(["a"], {"a": ["node-1"]}, replicas=2)


def test_valid_mappings() -> None:
    validate_mapping(["a"], {"a": ["node-1"], "unrelated": ("x", "y")}, replicas=1)
    validate_mapping(["a", "b"], {"a": ("node-1", "node-2"), "b": ["z", "node-1"]}, replicas=2)
    validate_mapping([], {}, replicas=1)
    Guided.validate(["a"], {"a": ["node-9"]}, 1)  # nodes need not be members yet
    with pytest.raises(ChildMappingMismatch):
        Guided().validate(["a"], {}, 1)


@pytest.mark.parametrize("replicas", [0, True, 1.0])
def test_validation_needs_a_replica_count(replicas: object) -> None:
    with pytest.raises(ValueError, match="replicas"):
        validate_mapping(["a"], {"a": ["n"]}, replicas)  # type: ignore[arg-type]


# -- Guided: placement ------------------------------------------------------------------------


def test_guided_returns_live_mapped_nodes_in_mapping_order() -> None:
    mapping = {"a": ["node-3", "node-1", "node-2"]}
    placer = Guided().placer(PlacementInput(equal(["node-1", "node-2", "node-4"]), pins=mapping))
    assert placer.owner("a") == "node-1"
    assert placer.owners("a", 3) == ("node-1", "node-2")
    assert placer.owners("a", 1) == ("node-1",)
    everyone = Guided().placer(PlacementInput(equal(["node-1", "node-2", "node-3"]), pins=mapping))
    assert everyone.owners("a", 3) == ("node-3", "node-1", "node-2")
    assert everyone.owners("a", 2) == ("node-3", "node-1")


def test_guided_wait_leaves_children_of_dead_nodes_unplaced() -> None:
    mapping = {"a": ["node-1"], "b": ["node-2", "node-3"]}
    placer = Guided(fallback="wait").placer(PlacementInput(equal(["node-4"]), pins=mapping))
    assert placer.fallback == "wait"
    assert placer.owner("a") is None and placer.owners("a", 2) == ()
    assert placer.owner("unknown") is None and placer.owners("unknown") == ()
    # node-1 comes back: its child is placed again, on it.
    back = Guided(fallback="wait").placer(PlacementInput(equal(["node-4", "node-1"]), pins=mapping))
    assert back.owner("a") == "node-1"
    assert back.owner("b") is None


def test_guided_ring_falls_back_to_consistent_hashing() -> None:
    members = equal(["node-4", "node-5", "node-6"])
    ring = HashRing(members, VNODES)
    mapping = {"a": ["node-1"], "b": ["node-5", "node-9"]}
    placer = Guided(fallback="ring", vnodes_per_weight=VNODES).placer(
        PlacementInput(members, pins=mapping)
    )
    assert placer.fallback == "ring"
    assert placer.owner("a") == ring.owner("a")
    assert placer.owners("a", 2) == ring.owners("a", 2)
    assert placer.owner("unknown") == ring.owner("unknown")
    # A missing replica is topped up from the ring; the live mapped node stays first.
    topped = placer.owners("b", 2)
    assert topped[0] == "node-5" and len(topped) == 2 and topped[1] in members
    assert topped[1] == next(node for node in ring.successors("b") if node != "node-5")
    assert placer.owners("b", 5) == ("node-5", *(n for n in ring.owners("b", 3) if n != "node-5"))


def test_guided_reads_the_mapping_lazily() -> None:
    mapping: dict[str, list[str]] = {}
    placer = Guided().placer(PlacementInput(equal(["node-1"]), pins=mapping))
    assert placer.owner("late") is None
    mapping["late"] = ["node-1"]  # a child started after the placer was built
    assert placer.owner("late") == "node-1"


def test_guided_without_mapping_is_empty() -> None:
    assert Guided().placer(PlacementInput(equal(["node-1"]))).owner("a") is None
    assert GuidedPlacer(equal(["node-1"])).owners("a") == ()


def test_guided_validates_config_and_input() -> None:
    with pytest.raises(ValueError, match="fallback"):
        Guided(fallback="nearest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="vnodes_per_weight"):
        Guided(vnodes_per_weight=0)
    with pytest.raises(ValueError, match="fallback"):
        GuidedPlacer({}, {}, fallback="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="weight"):
        Guided().placer(PlacementInput({"node-1": 0}, pins={}))
    with pytest.raises(ValueError, match="same members"):
        GuidedPlacer(equal(["a"]), {}, fallback="ring", ring=HashRing(equal(["b"])))
    with pytest.raises(ValueError, match="n must be"):
        Guided().placer(PlacementInput(equal(["a"]), pins={})).owners("x", 0)


def test_guided_ring_is_reused_while_members_do_not_change() -> None:
    strategy = Guided(fallback="ring", vnodes_per_weight=VNODES)
    first = strategy.placer(PlacementInput(equal(["a", "b"]), pins={}))
    again = strategy.placer(PlacementInput(equal(["b", "a"]), {"x": ["a"]}))
    assert first._ring is again._ring
    assert strategy.placer(PlacementInput(equal(["a"]), pins={}))._ring is not first._ring


# -- BoundedLoad ------------------------------------------------------------------------------


def reference_capacity(
    weights: Mapping[str, int], children: int, c: float, free: Mapping[str, float]
) -> dict[str, int]:
    """The module doc's formula, written out again (exactly: a tiny share still rounds up)."""
    scaled = {node: weight * Fraction(free.get(node, 1.0)) for node, weight in weights.items()}
    if not any(scaled.values()):
        scaled = {node: Fraction(weight) for node, weight in weights.items()}
    total = sum(scaled.values())
    return {node: math.ceil(Fraction(c) * children * s / total) for node, s in scaled.items()}


weighted_members = st.dictionaries(
    st.sampled_from(UNIVERSE), st.integers(1, 3), min_size=1, max_size=8
)
child_id_lists = st.lists(st.text(max_size=12), max_size=120)
balance = st.floats(1.0, 3.0)


@settings(max_examples=60, deadline=None)
@given(weighted_members, child_id_lists, balance, st.data())
def test_bounded_load_never_exceeds_capacity(
    members: dict[str, int], child_ids: list[str], c: float, data: st.DataObject
) -> None:
    free = data.draw(st.dictionaries(st.sampled_from(UNIVERSE), st.floats(0.0, 1.0)))
    placer = BoundedLoad(c, VNODES).placer(PlacementInput(members, child_ids, free))
    unique = set(child_ids)
    assert dict(placer.capacity) == reference_capacity(members, len(unique), c, free)
    assert sum(placer.capacity.values()) >= len(unique)
    owners = Counter(placer.owner(child_id) for child_id in unique)
    assert set(owners) <= set(members)
    assert dict(placer.load) == {node: owners.get(node, 0) for node in sorted(members)}
    for node, load in placer.load.items():
        assert load <= placer.capacity[node]


@settings(max_examples=40, deadline=None)
@given(weighted_members, child_id_lists, balance, st.randoms(use_true_random=False))
def test_bounded_load_is_deterministic_under_permutation(
    members: dict[str, int], child_ids: list[str], c: float, rnd: random.Random
) -> None:
    placer = BoundedLoad(c, VNODES).placer(PlacementInput(members, child_ids))
    shuffled_ids = child_ids[:]
    rnd.shuffle(shuffled_ids)
    items = list(members.items())
    rnd.shuffle(items)
    again = BoundedLoad(c, VNODES).placer(PlacementInput(dict(items), shuffled_ids + child_ids[:3]))
    for child_id in child_ids:
        assert again.owner(child_id) == placer.owner(child_id)


@given(weighted_members, st.lists(st.text(max_size=12), max_size=40))
def test_bounded_load_with_large_c_is_consistent_hashing(
    members: dict[str, int], child_ids: list[str]
) -> None:
    # Every capacity is at least ceil(100 * m * share) >= m: no node is ever full.
    placer = BoundedLoad(100.0, VNODES).placer(PlacementInput(members, child_ids))
    ring = ConsistentHashing(VNODES).placer(PlacementInput(members))
    for child_id in child_ids:
        assert placer.owner(child_id) == ring.owner(child_id)


def test_bounded_load_evens_out_what_a_ring_does_not() -> None:
    members = equal(["node-1", "node-2", "node-3"])
    children = [f"job-{i}" for i in range(9)]
    ring_loads = Counter(HashRing(members).owner(child_id) for child_id in children)
    assert max(ring_loads.values()) == 6
    placer = BoundedLoad(1.0).placer(PlacementInput(members, children))
    assert dict(placer.load) == {"node-1": 3, "node-2": 3, "node-3": 3}


def test_capacities_shift_load_away_from_busy_nodes() -> None:
    members = equal(UNIVERSE[:4])
    even = BoundedLoad().placer(PlacementInput(members, IDS_200))
    busy = BoundedLoad().placer(PlacementInput(members, IDS_200, {"node-0": 0.2}))
    assert busy.load["node-0"] < even.load["node-0"]
    assert busy.capacity["node-0"] == math.ceil(1.25 * 200 * 0.2 / 3.2)
    assert busy.load["node-0"] <= busy.capacity["node-0"]
    assert sum(busy.load.values()) == 200
    full = BoundedLoad().placer(PlacementInput(members, IDS_200, {"node-0": 0.0}))
    assert full.load["node-0"] == 0 and full.capacity["node-0"] == 0
    # Relative, not absolute: everyone equally busy is the same as no information.
    everyone = BoundedLoad().placer(PlacementInput(members, IDS_200, dict.fromkeys(members, 0.5)))
    nobody = BoundedLoad().placer(PlacementInput(members, IDS_200, dict.fromkeys(members, 0.0)))
    for child_id in IDS_200:
        assert everyone.owner(child_id) == even.owner(child_id) == nobody.owner(child_id)
    # Entries for nodes that are not members are ignored.
    assert BoundedLoad().placer(PlacementInput(members, IDS_200, {"gone": 0.0})).load == even.load


def test_bounded_load_weights_are_proportional() -> None:
    placer = BoundedLoad(1.0).placer(PlacementInput({"node-1": 1, "node-2": 3}, IDS_200))
    assert dict(placer.capacity) == {"node-1": 50, "node-2": 150}
    assert dict(placer.load) == {"node-1": 50, "node-2": 150}


def test_bounded_load_movement_on_join_is_bounded() -> None:
    """10 equal nodes, an 11th joins, 200 children, c=1.25, 20 node-id sets.

    Measured over 500 sets: 9.8 % of the children move on average (worst 14 %) against a
    plain ring's 9.1 % (worst 14.5 %); 0.7 % (worst 3 %) move to a node other than the
    joiner. The bound held here, and stated in the module doc: under 20 % in all, under 5 %
    elsewhere than the joiner.
    """
    moved_total, moved_elsewhere = [], []
    for seed in range(20):
        rnd = random.Random(seed)
        nodes = [f"node-{rnd.randrange(10**9)}" for _ in range(11)]
        joiner = nodes[-1]
        before = BoundedLoad().placer(PlacementInput(equal(nodes[:10]), IDS_200))
        after = BoundedLoad().placer(PlacementInput(equal(nodes), IDS_200))
        moved = [c for c in IDS_200 if before.owner(c) != after.owner(c)]
        moved_total.append(len(moved) / len(IDS_200))
        moved_elsewhere.append(sum(after.owner(c) != joiner for c in moved) / len(IDS_200))
    assert max(moved_total) < 0.20
    assert max(moved_elsewhere) < 0.05
    assert 0.07 < sum(moved_total) / len(moved_total) < 0.12  # about 1/11, as a ring


def test_bounded_load_children_outside_the_set() -> None:
    members = equal(["node-1", "node-2", "node-3"])
    children = [f"job-{i}" for i in range(9)]
    placer = BoundedLoad(1.0).placer(PlacementInput(members, children))  # every node exactly full
    ring = HashRing(members)
    assert placer.owner("stranger") == ring.owner("stranger")
    roomy = BoundedLoad(2.0).placer(PlacementInput(members, children))
    owner = roomy.owner("stranger")
    assert owner is not None and roomy.load[owner] < roomy.capacity[owner]
    assert roomy.owner("stranger") == owner  # not counted, so asking twice agrees
    assert dict(roomy.load) == dict(BoundedLoad(2.0).placer(PlacementInput(members, children)).load)


def test_bounded_load_replicas_follow_the_ring() -> None:
    members = equal(UNIVERSE[:5])
    placer = BoundedLoad(1.0).placer(PlacementInput(members, IDS_200))
    for child_id in IDS_200[:50]:
        owners = placer.owners(child_id, 3)
        assert owners[0] == placer.owner(child_id)
        assert len(set(owners)) == 3 and set(owners) <= set(members)
        assert placer.owners(child_id, 9) == (
            owners[0],
            *(n for n in placer.ring.successors(child_id) if n != owners[0]),
        )


def test_bounded_load_validates_config_and_input() -> None:
    for c in (0.99, 0, math.nan, math.inf, True):
        with pytest.raises(ValueError, match="c must be"):
            BoundedLoad(c)
    with pytest.raises(ValueError, match="vnodes_per_weight"):
        BoundedLoad(vnodes_per_weight=0)
    for free in (-0.1, 1.5, math.nan, True):
        with pytest.raises(ValueError, match="free fraction"):
            BoundedLoad().placer(PlacementInput(equal(["a"]), ["x"], {"a": free}))
    with pytest.raises(ValueError, match="child ids"):
        BoundedLoad().placer(PlacementInput(equal(["a"]), [3]))  # type: ignore[list-item]
    with pytest.raises(ValueError, match="n must be"):
        BoundedLoad().placer(PlacementInput(equal(["a"]), ["x"])).owners("x", 0)
    with pytest.raises(ValueError, match="c must be"):
        BoundedLoadPlacer(HashRing(equal(["a"])), [], 0.5)


@given(weighted_members, st.text(max_size=20))
def test_ring_successors_is_the_lazy_owners(members: dict[str, int], child_id: str) -> None:
    ring = HashRing(members, VNODES)
    assert tuple(ring.successors(child_id)) == ring.owners(child_id, len(ring))
    assert tuple(HashRing({}).successors(child_id)) == ()


# -- conformance: every distribution strategy -------------------------------------------------


def full_mapping(child_ids: Sequence[str]) -> dict[str, list[str]]:
    """Two distinct nodes of UNIVERSE per child, some of which will not be live."""
    mapping = {}
    for child_id in child_ids:
        first = stable_hash(child_id) % len(UNIVERSE)
        second = (first + 1 + stable_hash(child_id + "#") % (len(UNIVERSE) - 1)) % len(UNIVERSE)
        mapping[child_id] = [UNIVERSE[first], UNIVERSE[second]]
    return mapping


def some_pins(child_ids: Sequence[str]) -> dict[str, list[str]]:
    """About every third child (by its hash, not its position) pinned to two nodes of
    UNIVERSE, which are often not live."""
    pinned = [child_id for child_id in child_ids if stable_hash(child_id) % 3 == 0]
    return full_mapping(pinned)


@dataclass(frozen=True)
class Case:
    """One strategy, and how the hub builds its placer (what extra input it needs)."""

    name: str
    strategy: DistributionStrategy
    build: Callable[[DistributionStrategy, Mapping[str, int], Sequence[str]], Placer]
    always_placed: bool = True  # every child gets min(n, members) nodes when any is live
    #: a new, cold instance equal to ``strategy`` (default: dataclasses.replace)
    make: Callable[[], DistributionStrategy] | None = None

    def fresh(self) -> DistributionStrategy:
        if self.make is not None:
            return self.make()
        return dataclasses.replace(self.strategy)  # type: ignore[type-var]

    @property
    def pinned(self) -> bool:
        """Built with :func:`some_pins`: pinned children wait for their pinned nodes."""
        return self.build is _pinned


def _plain(strategy: Any, members: Mapping[str, int], child_ids: Sequence[str]) -> Placer:
    placer: Placer = strategy.placer(PlacementInput(members))
    return placer


def _guided(strategy: Any, members: Mapping[str, int], child_ids: Sequence[str]) -> Placer:
    placer: Placer = strategy.placer(PlacementInput(members, pins=full_mapping(child_ids)))
    return placer


def _bounded(strategy: Any, members: Mapping[str, int], child_ids: Sequence[str]) -> Placer:
    placer: Placer = strategy.placer(PlacementInput(members, child_ids))
    return placer


def _pinned(strategy: Any, members: Mapping[str, int], child_ids: Sequence[str]) -> Placer:
    """As the hub builds it: the child set (ChildSetAware strategies read it) and pins."""
    placement = PlacementInput(members, child_ids, pins=some_pins(child_ids))
    placer: Placer = strategy.placer(placement)
    return placer


CASES = [
    Case("consistent_hashing", ConsistentHashing(VNODES), _plain),
    Case("guided_ring", Guided(fallback="ring", vnodes_per_weight=VNODES), _guided),
    Case("guided_wait", Guided(fallback="wait", vnodes_per_weight=VNODES), _guided, False),
    Case("bounded_load", BoundedLoad(vnodes_per_weight=VNODES), _bounded),
    Case("bounded_load_tight", BoundedLoad(1.0, VNODES), _bounded),
    Case("rendezvous_example", Rendezvous(), _plain, make=Rendezvous),
    Case("consistent_hashing_pinned", ConsistentHashing(VNODES), _pinned, False),
    Case("bounded_load_pinned", BoundedLoad(vnodes_per_weight=VNODES), _pinned, False),
    Case("rendezvous_example_pinned", Rendezvous(), _pinned, False, make=Rendezvous),
]
case_param = pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
child_sets = st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=40, unique=True)


@case_param
def test_conformance_protocols(case: Case) -> None:
    assert isinstance(case.strategy, DistributionStrategy)
    assert checks.distribution_problems(case.strategy) == []
    assert isinstance(case.build(case.strategy, equal(["a"]), ["x"]), Placer)
    assert Guarantee.DETERMINISTIC in case.strategy.guarantees
    assert Guarantee.AT_MOST_ONE_OWNER in case.strategy.guarantees


@case_param
@settings(max_examples=40, deadline=None)
@given(members=weighted_members, child_ids=child_sets, n=st.integers(1, 4))
def test_conformance_places_only_on_live_members(
    case: Case, members: dict[str, int], child_ids: list[str], n: int
) -> None:
    placer = case.build(case.strategy, members, child_ids)
    for child_id in child_ids:
        owner = placer.owner(child_id)
        owners = placer.owners(child_id, n)
        assert set(owners) <= set(members)
        assert len(set(owners)) == len(owners) <= min(n, len(members))
        assert owner == (owners[0] if owners else None)
        if case.always_placed:
            assert owner is not None
            assert len(owners) == min(n, len(members))


@case_param
@given(child_ids=child_sets)
def test_conformance_no_members_places_nothing(case: Case, child_ids: list[str]) -> None:
    placer = case.build(case.strategy, {}, child_ids)
    for child_id in child_ids:
        assert placer.owner(child_id) is None
        assert placer.owners(child_id, 3) == ()


@case_param
@settings(max_examples=40, deadline=None)
@given(
    members=weighted_members,
    child_ids=child_sets,
    rnd=st.randoms(use_true_random=False),
)
def test_conformance_is_deterministic(
    case: Case, members: dict[str, int], child_ids: list[str], rnd: random.Random
) -> None:
    placer = case.build(case.strategy, members, child_ids)
    items = list(members.items())
    rnd.shuffle(items)
    shuffled = child_ids[:]
    rnd.shuffle(shuffled)
    again = case.build(case.fresh(), dict(items), shuffled)
    for child_id in child_ids:
        assert again.owners(child_id, 3) == placer.owners(child_id, 3)


MOVEMENT_CASES = [case for case in CASES if Guarantee.MINIMAL_MOVEMENT in case.strategy.guarantees]


@pytest.mark.parametrize("case", MOVEMENT_CASES, ids=[case.name for case in MOVEMENT_CASES])
@settings(max_examples=40, deadline=None)
@given(
    nodes=st.lists(st.sampled_from(UNIVERSE), min_size=2, max_size=8, unique=True),
    child_ids=child_sets,
)
def test_conformance_minimal_movement_when_promised(
    case: Case, nodes: list[str], child_ids: list[str]
) -> None:
    joiner = nodes[-1]
    before = case.build(case.strategy, equal(nodes[:-1]), child_ids)
    after = case.build(case.strategy, equal(nodes), child_ids)
    for child_id in child_ids:
        old, new = before.owner(child_id), after.owner(child_id)
        # Read forwards a join moves a child only onto the joiner; read backwards (the joiner
        # leaving) only the leaver's children move. Both say the same:
        if old != new:
            assert new == joiner


PINNED_CASES = [case for case in CASES if case.pinned]


@pytest.mark.parametrize("case", PINNED_CASES, ids=[case.name for case in PINNED_CASES])
@settings(max_examples=40, deadline=None)
@given(members=weighted_members, child_ids=child_sets, n=st.integers(1, 4))
def test_conformance_pinned_children_run_on_their_pins_or_wait(
    case: Case, members: dict[str, int], child_ids: list[str], n: int
) -> None:
    placer = case.build(case.strategy, members, child_ids)
    pins = some_pins(child_ids)
    unpinned = case.build(case.strategy, members, [])  # no pins at all
    for child_id in child_ids:
        if child_id in pins:
            live = [node for node in pins[child_id] if node in members]
            assert placer.owner(child_id) == (live[0] if live else None)
            assert placer.owners(child_id, n) == tuple(live[:n])
        elif not isinstance(case.strategy, BoundedLoad):  # its loads count the child set
            assert placer.owners(child_id, n) == unpinned.owners(child_id, n)


def test_pinned_placer_is_the_inner_placer_for_unpinned_children() -> None:
    members = equal(UNIVERSE[:4])
    inner = Rendezvous().placer(PlacementInput(members))
    placer = PinnedPlacer(inner, members, {"pinned": ["node-3", "node-0"]})
    assert placer.inner is inner
    assert placer.owners("pinned", 4) == ("node-3", "node-0")
    for child_id in IDS_200[:40]:
        assert placer.owners(child_id, 3) == inner.owners(child_id, 3)
    with pytest.raises(ValueError, match="n must be"):
        placer.owners("pinned", 0)


def test_conformance_covers_every_distribution_strategy() -> None:
    defined = {ConsistentHashing, Guided, BoundedLoad}
    assert {type(case.strategy) for case in CASES} == defined | {Rendezvous}
    assert {type(case.strategy) for case in PINNED_CASES} == defined - {Guided} | {Rendezvous}
    assert [case.name for case in MOVEMENT_CASES] == [
        "consistent_hashing",
        "guided_ring",
        "guided_wait",
        "rendezvous_example",
        "consistent_hashing_pinned",
        "rendezvous_example_pinned",
    ]
    exported = {
        obj
        for name in strategies.__all__
        if isinstance(obj := getattr(strategies, name), type)
        and obj is not DistributionStrategy
        and hasattr(obj, "placer")
        and hasattr(obj, "guarantees")
    }
    assert exported == defined


def test_every_strategy_places_the_same_in_any_process() -> None:
    """Hash-seed independence across processes, for every strategy (as test_ring does)."""
    code = (
        "import json\n"
        "from strategies import BoundedLoad, ConsistentHashing, Guided, PlacementInput\n"
        "m = {'node-1': 1, 'node-2': 2, 'node-3': 1}\n"
        "ids = [f'c{i}' for i in range(60)]\n"
        "pins = {i: ['node-9', 'node-2'] for i in ids[::2]}\n"
        "g = Guided(fallback='ring').placer(PlacementInput(m, pins=pins))\n"
        "b = BoundedLoad(1.0).placer(PlacementInput(m, ids))\n"
        "r = ConsistentHashing().placer(PlacementInput(m))\n"
        "print(json.dumps([[p.owners(i, 2) for i in ids] for p in (g, b, r)]))\n"
    )
    outputs = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        outputs.add(result.stdout)
    assert len(outputs) == 1
    guided, bounded, ring = json.loads(outputs.pop())
    assert guided[0][0] == "node-2"  # c0 is mapped to node-9 (down), then node-2
    assert len(bounded) == len(ring) == 60


@pytest.mark.parametrize(
    "module",
    [
        strategies.base,
        strategies.bounded_load,
        strategies.checks,
        strategies.errors,
        strategies.guided,
        strategies.pins,
    ],
)
def test_docstring_examples(module: object) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)  # type: ignore[arg-type]
    assert result.failed == 0
