"""hub.core.plan: the pure decision for one child, from hand-built snapshots.

The table covers every Action and each safety rule of the planner's module docstring;
the hypothesis properties check the rules over random snapshots.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.core.plan import Action, ChildView, Self, plan, plan_replicated
from hub.core.registry import OwnerEntry, SpecEntry
from hub.model import ChildSpec, OwnerRecord, OwnerState

LEASE = 100  # this node's current lease (incarnation)
OLD_LEASE = 99  # this node's previous incarnation
OTHER_LEASE = 200  # another node's lease

ME = Self("n1", LEASE, draining=False)
ME_NO_LEASE = Self("n1", 0, draining=False)
ME_DRAINING = Self("n1", LEASE, draining=True)

SPEC = SpecEntry(ChildSpec("c", "pkg.mod:Worker"), create_revision=10, mod_revision=10)
TOKEN = 20  # create revision of our owner key: the fencing token


def owner(
    node: str = "n1",
    incarnation: int = LEASE,
    *,
    create: int = TOKEN,
    lease: int | None = None,
    state: OwnerState = OwnerState.RUNNING,
) -> OwnerEntry:
    """A decodable owners/{id} entry; its lease defaults to the record's incarnation."""
    record = OwnerRecord(node, incarnation, state, 1.0)
    return OwnerEntry(record, create, create, incarnation if lease is None else lease, None)


def corrupt_owner(lease: int) -> OwnerEntry:
    """An owners/{id} entry whose value could not be decoded."""
    return OwnerEntry(None, 30, 30, lease, None)


MINE = owner()


@dataclass(frozen=True)
class Case:
    name: str
    expected: Action
    me: Self = ME
    spec: SpecEntry | None = SPEC
    owner: OwnerEntry | None = None
    desired: str | None = "n1"
    owned_token: int | None = None
    running: bool = False
    cache_revision: int = 50
    my_replica: bool = False  # the cache shows replicas/{id}/{me}


CASES = [
    # -- acquiring: only when desired == me, lease valid, not draining, key absent --------
    Case("free child placed here is acquired", Action.ACQUIRE),
    Case("free child placed elsewhere", Action.NOOP, desired="n2"),
    Case("free child with no eligible node", Action.NOOP, desired=None),
    Case("no lease: never acquire", Action.NOOP, me=ME_NO_LEASE),
    Case("draining: never acquire", Action.NOOP, me=ME_DRAINING),
    Case(
        "held by another node: no second instance",
        Action.NOOP,
        owner=owner("n2", OTHER_LEASE),
    ),
    Case(
        "held by another node in restart backoff",
        Action.NOOP,
        owner=owner("n2", OTHER_LEASE, state=OwnerState.RESTARTING),
    ),
    Case(
        "held by our previous incarnation: foreign, left to expire",
        Action.NOOP,
        owner=owner("n1", OLD_LEASE),
    ),
    Case(
        "held by our previous incarnation, placed elsewhere",
        Action.NOOP,
        owner=owner("n1", OLD_LEASE),
        desired="n2",
    ),
    Case(
        "a decodable owner without a lease is not ours to clear",
        Action.NOOP,
        owner=owner("n2", OTHER_LEASE, lease=0),
    ),
    Case("no spec, nothing here: nothing to do", Action.NOOP, spec=None, desired=None),
    # -- adopting: the cache shows our current incarnation owns it -----------------------
    Case("cache shows our ownership we did not know about", Action.ADOPT, owner=MINE),
    Case(
        "adopt first even when placed elsewhere (release follows)",
        Action.ADOPT,
        owner=MINE,
        desired="n2",
    ),
    Case(
        "adopt a failed child (kept parked, not restarted)",
        Action.ADOPT,
        owner=owner(state=OwnerState.FAILED),
    ),
    Case(
        "no lease: a record naming incarnation 0 is not ours",
        Action.NOOP,
        me=ME_NO_LEASE,
        owner=owner("n1", 0, lease=0),
    ),
    # -- steady state ----------------------------------------------------------------------
    Case("owned and placed here", Action.NOOP, owner=MINE, owned_token=TOKEN, running=True),
    Case(
        "owned, no eligible node: keep it",
        Action.NOOP,
        owner=MINE,
        owned_token=TOKEN,
        running=True,
        desired=None,
    ),
    Case(
        "owned, cache exactly at our acquire revision",
        Action.NOOP,
        owner=MINE,
        owned_token=TOKEN,
        running=True,
        cache_revision=TOKEN,
    ),
    Case(
        "acquired, cache not caught up yet: trust our own write",
        Action.NOOP,
        owner=None,
        owned_token=TOKEN,
        running=True,
        cache_revision=TOKEN - 1,
    ),
    # -- releasing: spec gone or placed elsewhere ----------------------------------------
    Case(
        "owned, placed elsewhere",
        Action.RELEASE,
        owner=MINE,
        owned_token=TOKEN,
        running=True,
        desired="n2",
    ),
    Case(
        "owned while draining (placement excludes us)",
        Action.RELEASE,
        me=ME_DRAINING,
        owner=MINE,
        owned_token=TOKEN,
        running=True,
        desired="n2",
    ),
    Case(
        "owned, spec deleted",
        Action.RELEASE,
        spec=None,
        owner=MINE,
        owned_token=TOKEN,
        running=True,
        desired=None,
    ),
    Case(
        "cache shows ours, spec deleted, we did not know",
        Action.RELEASE,
        spec=None,
        owner=MINE,
        desired=None,
    ),
    Case(
        "acquired, cache behind, spec deleted",
        Action.RELEASE,
        spec=None,
        owned_token=TOKEN,
        running=True,
        desired=None,
        cache_revision=TOKEN - 1,
    ),
    Case(
        "acquired, cache behind, placed elsewhere",
        Action.RELEASE,
        owned_token=TOKEN,
        running=True,
        desired="n2",
        cache_revision=TOKEN - 1,
    ),
    # -- stopping without ownership ------------------------------------------------------
    Case(
        "cache past our token shows no owner: ownership lost",
        Action.STOP_LOCAL,
        owned_token=TOKEN,
        running=True,
        cache_revision=TOKEN,
    ),
    Case(
        "cache past our token shows a newer owner key",
        Action.STOP_LOCAL,
        owner=owner("n2", OTHER_LEASE, create=TOKEN + 5),
        owned_token=TOKEN,
        running=True,
    ),
    Case(
        "cache shows our node but a newer key than our token",
        Action.STOP_LOCAL,
        owner=owner(create=TOKEN + 5),
        owned_token=TOKEN,
        running=True,
    ),
    Case(
        "cache shows our token under a previous incarnation",
        Action.STOP_LOCAL,
        owner=owner("n1", OLD_LEASE),
        owned_token=TOKEN,
        running=True,
    ),
    Case(
        "ownership lost and spec gone: stop, do not delete someone else's key",
        Action.STOP_LOCAL,
        spec=None,
        owner=owner("n2", OTHER_LEASE, create=TOKEN + 5),
        owned_token=TOKEN,
        running=True,
        desired=None,
    ),
    Case(
        "ownership lost after losing the lease",
        Action.STOP_LOCAL,
        me=ME_NO_LEASE,
        owner=MINE,
        owned_token=TOKEN,
        running=True,
    ),
    Case(
        "a worker runs here but another node owns the child",
        Action.STOP_LOCAL,
        owner=owner("n2", OTHER_LEASE),
        running=True,
    ),
    Case(
        "a worker runs here for a previous incarnation's key",
        Action.STOP_LOCAL,
        owner=owner("n1", OLD_LEASE),
        running=True,
    ),
    Case(
        "a worker runs here for a deleted child nobody owns",
        Action.STOP_LOCAL,
        spec=None,
        running=True,
        desired=None,
    ),
    Case(
        "a worker runs here next to an undecodable owner",
        Action.STOP_LOCAL,
        owner=corrupt_owner(lease=0),
        running=True,
    ),
    # -- undecodable owner keys ----------------------------------------------------------
    Case(
        "corrupt owner with a lease: leave it, start nothing",
        Action.NOOP,
        owner=corrupt_owner(lease=OTHER_LEASE),
    ),
    Case(
        "corrupt owner without a lease on the desired node: clear it",
        Action.CLEAR_FOREIGN,
        owner=corrupt_owner(lease=0),
    ),
    Case(
        "corrupt owner without a lease, placed elsewhere: not ours to clear",
        Action.NOOP,
        owner=corrupt_owner(lease=0),
        desired="n2",
    ),
    Case(
        "corrupt owner without a lease, no eligible node",
        Action.NOOP,
        owner=corrupt_owner(lease=0),
        desired=None,
    ),
    Case(
        "corrupt owner without a lease, but we have no lease",
        Action.NOOP,
        me=ME_NO_LEASE,
        owner=corrupt_owner(lease=0),
    ),
    Case(
        "corrupt owner without a lease, spec gone",
        Action.NOOP,
        spec=None,
        owner=corrupt_owner(lease=0),
        desired=None,
    ),
    # -- one instance per child, after more (Replication("cluster") shrunk to one node) --
    Case(
        "a leftover replica placed here is promoted (the acquire withdraws its key)",
        Action.ACQUIRE,
        running=True,
        my_replica=True,
    ),
    Case(
        "a leftover parked replica's key placed here is promoted too",
        Action.ACQUIRE,
        my_replica=True,
    ),
    Case(
        "a leftover replica placed elsewhere is withdrawn",
        Action.REPLICA_DOWN,
        running=True,
        my_replica=True,
        desired="n2",
    ),
    Case(
        "a leftover replica key alone, placed elsewhere, is withdrawn",
        Action.REPLICA_DOWN,
        my_replica=True,
        desired="n2",
    ),
    Case(
        "a leftover replica of a draining node is withdrawn",
        Action.REPLICA_DOWN,
        me=ME_DRAINING,
        running=True,
        my_replica=True,
    ),
    Case(
        "a leftover replica key next to another owner is withdrawn",
        Action.REPLICA_DOWN,
        owner=owner("n2", OTHER_LEASE),
        running=True,
        my_replica=True,
    ),
    Case(
        "a leftover replica key of a deleted child is withdrawn",
        Action.REPLICA_DOWN,
        spec=None,
        desired=None,
        my_replica=True,
    ),
    Case(
        "a replica key next to our own ownership is left to our acquire",
        Action.NOOP,
        owner=MINE,
        owned_token=TOKEN,
        running=True,
        my_replica=True,
    ),
    Case(
        "a leftover replica of a child we lost is stopped like any lost instance",
        Action.STOP_LOCAL,
        owner=owner("n2", OTHER_LEASE, create=TOKEN + 5),
        owned_token=TOKEN,
        running=True,
        my_replica=True,
    ),
]


def _run(case: Case) -> Action:
    return plan(
        ChildView(
            case.me,
            case.spec,
            case.owner,
            owned_token=case.owned_token,
            running=case.running,
            cache_revision=case.cache_revision,
            desired=case.desired,
            my_replica=case.my_replica,
        )
    )


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_plan_table(case: Case) -> None:
    assert _run(case) is case.expected


def test_tables_cover_every_action() -> None:
    covered = {case.expected for case in CASES} | {expected for *_, expected in REPLICATED}
    assert covered == set(Action)


# -- replication: plan_replicated ---------------------------------------------------------

# (name, me, spec, owner, replica set, owned token, running, my replica key, expected)
REPLICATED = [
    ("primary acquires", ME, SPEC, None, ("n1", "n2"), None, False, False, Action.ACQUIRE),
    (
        "a running replica is promoted",
        ME,
        SPEC,
        None,
        ("n1", "n2"),
        None,
        True,
        True,
        Action.ACQUIRE,
    ),
    (
        "primary waits for the old owner",
        ME,
        SPEC,
        owner("n2", OTHER_LEASE),
        ("n1", "n2"),
        None,
        False,
        False,
        Action.NOOP,
    ),
    (
        "no lease: no acquire",
        ME_NO_LEASE,
        SPEC,
        None,
        ("n1", "n2"),
        None,
        False,
        False,
        Action.NOOP,
    ),
    (
        "second node starts a replica",
        ME,
        SPEC,
        owner("n2", OTHER_LEASE),
        ("n2", "n1"),
        None,
        False,
        False,
        Action.REPLICA_UP,
    ),
    (
        "replica keeps running",
        ME,
        SPEC,
        owner("n2", OTHER_LEASE),
        ("n2", "n1"),
        None,
        True,
        True,
        Action.NOOP,
    ),
    (
        "out of the set: replica down",
        ME,
        SPEC,
        owner("n2", OTHER_LEASE),
        ("n2", "n3"),
        None,
        True,
        True,
        Action.REPLICA_DOWN,
    ),
    (
        "stale replica key alone is withdrawn",
        ME,
        SPEC,
        None,
        ("n2", "n3"),
        None,
        False,
        True,
        Action.REPLICA_DOWN,
    ),
    ("demoted primary releases", ME, SPEC, MINE, ("n2", "n1"), TOKEN, True, False, Action.RELEASE),
    ("primary keeps", ME, SPEC, MINE, ("n1", "n2"), TOKEN, True, False, Action.NOOP),
    (
        "draining primary releases",
        ME_DRAINING,
        SPEC,
        MINE,
        ("n1", "n2"),
        TOKEN,
        True,
        False,
        Action.RELEASE,
    ),
    (
        "draining replica goes down",
        ME_DRAINING,
        SPEC,
        None,
        ("n1", "n2"),
        None,
        True,
        True,
        Action.REPLICA_DOWN,
    ),
    ("spec gone: replica down", ME, None, None, ("n1",), None, True, True, Action.REPLICA_DOWN),
    ("spec gone: primary releases", ME, None, MINE, ("n1",), TOKEN, True, False, Action.RELEASE),
    (
        "lost primary stops",
        ME,
        SPEC,
        owner("n2", OTHER_LEASE, create=TOKEN + 5),
        ("n1",),
        TOKEN,
        True,
        False,
        Action.STOP_LOCAL,
    ),
    ("cache shows ours: adopt", ME, SPEC, MINE, ("n1", "n2"), None, False, False, Action.ADOPT),
]


@pytest.mark.parametrize(
    "name, me, spec, owner_entry, replica_set, token, running, my_replica, expected",
    REPLICATED,
    ids=[row[0] for row in REPLICATED],
)
def test_plan_replicated(
    name: str,
    me: Self,
    spec: SpecEntry | None,
    owner_entry: OwnerEntry | None,
    replica_set: tuple[str, ...],
    token: int | None,
    running: bool,
    my_replica: bool,
    expected: Action,
) -> None:
    view = ChildView(
        me,
        spec,
        owner_entry,
        owned_token=token,
        running=running,
        cache_revision=100,
        replica_set=replica_set,
        my_replica=my_replica,
    )
    got = plan_replicated(view)
    assert got is expected, name


# -- properties over random snapshots ------------------------------------------------------

NODES = ["n1", "n2", "n3"]
LEASES = [0, LEASE, OLD_LEASE, OTHER_LEASE]

selves = st.builds(
    Self,
    node_id=st.sampled_from(NODES[:2]),
    lease=st.sampled_from(LEASES),
    draining=st.booleans(),
)
spec_entries = st.none() | st.builds(
    lambda rev: SpecEntry(SPEC.spec, rev, rev), st.integers(min_value=1, max_value=60)
)
records = st.none() | st.builds(
    OwnerRecord,
    node_id=st.sampled_from(NODES),
    incarnation=st.sampled_from(LEASES),
    state=st.sampled_from(list(OwnerState)),
    started_at=st.just(1.0),
)
owner_entries = st.none() | st.builds(
    lambda record, create, lease: OwnerEntry(record, create, create, lease, None),
    records,
    st.integers(min_value=1, max_value=60),
    st.sampled_from(LEASES),
)


def _cache_says_mine(me: Self, entry: OwnerEntry | None) -> bool:
    return (
        me.lease != 0
        and entry is not None
        and entry.record is not None
        and entry.record.node_id == me.node_id
        and entry.record.incarnation == me.lease
    )


@given(
    me=selves,
    spec=spec_entries,
    owner_entry=owner_entries,
    desired=st.none() | st.sampled_from(NODES),
    owned_token=st.none() | st.integers(min_value=1, max_value=60),
    running=st.booleans(),
    revision=st.integers(min_value=0, max_value=70),
    my_replica=st.booleans(),
)
def test_plan_safety_properties(
    me: Self,
    spec: SpecEntry | None,
    owner_entry: OwnerEntry | None,
    desired: str | None,
    owned_token: int | None,
    running: bool,
    revision: int,
    my_replica: bool,
) -> None:
    view = ChildView(
        me,
        spec,
        owner_entry,
        owned_token=owned_token,
        running=running,
        cache_revision=revision,
        desired=desired,
        my_replica=my_replica,
    )
    action = plan(view)
    assert action is plan(view)

    if action is Action.ACQUIRE:
        # At most one instance: only over an absent key, only on the desired node, only
        # with a lease to bind the key to, never while draining, never next to a worker.
        assert owner_entry is None
        assert desired == me.node_id
        assert me.lease != 0
        assert not me.draining
        assert spec is not None
        assert not running or my_replica  # a local replica is promoted, nothing else
        assert owned_token is None
    if action is Action.REPLICA_DOWN:
        # Only a leftover replica key of ours, and never an instance we own.
        assert my_replica
        assert owned_token is None and not _cache_says_mine(me, owner_entry)
    if my_replica and owned_token is None and not _cache_says_mine(me, owner_entry):
        # A leftover replica never stays: promoted or withdrawn.
        assert action in (Action.ACQUIRE, Action.REPLICA_DOWN)
    if action is Action.ADOPT:
        assert me.lease != 0
        assert spec is not None
        assert owned_token is None
        assert _cache_says_mine(me, owner_entry)
    if action is Action.RELEASE:
        # Only what we own (or the cache shows as ours) is released.
        assert owned_token is not None or _cache_says_mine(me, owner_entry)
    if action is Action.CLEAR_FOREIGN:
        assert owner_entry is not None
        assert owner_entry.record is None
        assert owner_entry.lease == 0
        assert desired == me.node_id
        assert me.lease != 0
    if spec is None:
        assert action in (Action.NOOP, Action.RELEASE, Action.STOP_LOCAL, Action.REPLICA_DOWN)
    if running and owned_token is None and not _cache_says_mine(me, owner_entry):
        # A worker without any claim to ownership is always stopped (a replica with its
        # key, unless promoted).
        if my_replica:
            assert action in (Action.ACQUIRE, Action.REPLICA_DOWN)
        else:
            assert action is Action.STOP_LOCAL
    still_ours = (
        _cache_says_mine(me, owner_entry)
        and owner_entry is not None
        and owner_entry.create_revision == owned_token
    )
    if owned_token is not None and revision >= owned_token and not still_ours:
        # The cache has seen our acquire and no longer shows it: stop, never write.
        assert action is Action.STOP_LOCAL


def test_a_released_ownership_is_never_adopted_from_a_lagging_cache() -> None:
    """Found by the hot-swap churn checker: after releasing, the cache still showed our
    owner record for a moment and the node adopted it again with the dead token."""
    me = Self("n1", 7, False)
    spec = SpecEntry(ChildSpec(id="c", start="m:f"), 1, 1)
    record = OwnerRecord("n1", 7, OwnerState.RUNNING, 0.0)
    owner = OwnerEntry(record, 40, 41, 7, None)
    view = ChildView(me, spec, owner, cache_revision=45, desired="n1")
    assert plan(view) is Action.ADOPT
    assert plan(view._replace(released_token=40)) is Action.NOOP
    assert plan(view._replace(released_token=40, desired="n2")) is Action.NOOP
