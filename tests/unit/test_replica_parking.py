"""A replica parked by its restart intensity (no etcd): the plan keeps it down and has its
key marked failed, the codec carries the ``failed`` role, and the registry shows the
replica as a failed instance, as it shows a parked owner."""

from __future__ import annotations

import pytest

from hub.core.plan import Action, ChildView, Self, plan_replicated
from hub.core.registry import OwnerEntry, Registry, SpecEntry
from hub.errors import CorruptRecord
from hub.etcd.codec import REPLICA_FAILED, ReplicaRecord, decode_replica, encode_replica
from hub.etcd.keys import KeySpace
from hub.etcd.store import Event
from hub.model import ChildSpec, OwnerRecord, OwnerState

ME = Self("n2", 100, draining=False)
SPEC = SpecEntry(ChildSpec("c", "pkg.mod:Worker"), create_revision=10, mod_revision=10)
PRIMARY = OwnerEntry(OwnerRecord("n1", 200, OwnerState.RUNNING, 0.0), 20, 20, 200, handle=None)

# (name, owner, replica set, running, my replica key, parked, recorded failed, expected)
CASES = [
    (
        "a standby that is down is started",
        PRIMARY,
        ("n1", "n2"),
        False,
        True,
        False,
        False,
        Action.REPLICA_UP,
    ),
    (
        "a parked standby has its key marked failed",
        PRIMARY,
        ("n1", "n2"),
        False,
        True,
        True,
        False,
        Action.REPLICA_UP,
    ),
    (
        "a parked standby recorded as failed stays down",
        PRIMARY,
        ("n1", "n2"),
        False,
        True,
        True,
        True,
        Action.NOOP,
    ),
    (
        "a parked standby whose key the cache does not show yet waits",
        PRIMARY,
        ("n1", "n2"),
        False,
        False,
        True,
        False,
        Action.NOOP,
    ),
    (
        "a parked standby is still promoted",
        None,
        ("n2", "n3"),
        False,
        True,
        True,
        True,
        Action.ACQUIRE,
    ),
    (
        "a parked standby placed elsewhere withdraws its key",
        PRIMARY,
        ("n1", "n3"),
        False,
        True,
        True,
        True,
        Action.REPLICA_DOWN,
    ),
]


@pytest.mark.parametrize(
    ("name", "owner", "replica_set", "running", "my_replica", "parked", "recorded", "expected"),
    CASES,
    ids=[case[0] for case in CASES],
)
def test_plan_keeps_a_parked_replica_down(
    name: str,
    owner: OwnerEntry | None,
    replica_set: tuple[str, ...],
    running: bool,
    my_replica: bool,
    parked: bool,
    recorded: bool,
    expected: Action,
) -> None:
    view = ChildView(
        ME,
        SPEC,
        owner,
        running=running,
        cache_revision=100,
        replica_set=replica_set,
        my_replica=my_replica,
        parked=parked,
        recorded_failed=recorded,
    )
    got = plan_replicated(view)
    assert got is expected, name


def test_a_parked_replica_of_a_stopped_child_withdraws_its_key() -> None:
    view = ChildView(ME, None, None, cache_revision=100, my_replica=True, parked=True)
    got = plan_replicated(view)
    assert got is Action.REPLICA_DOWN


def test_the_failed_role_round_trips_and_other_roles_stay_refused() -> None:
    key = b"/t/h/replicas/c/n2"
    record = ReplicaRecord("n2", 100, REPLICA_FAILED, 1.5)
    assert decode_replica(key, encode_replica(record)) == record
    with pytest.raises(CorruptRecord):
        decode_replica(key, encode_replica(ReplicaRecord("n2", 100, "sleeping", 1.5)))


@pytest.mark.parametrize(
    ("role", "state"), [("passive", OwnerState.RUNNING), (REPLICA_FAILED, OwnerState.FAILED)]
)
def test_the_registry_shows_a_parked_replica_as_a_failed_instance(
    role: str, state: OwnerState
) -> None:
    keys = KeySpace("h", "/t")
    registry = Registry(keys)
    value = encode_replica(ReplicaRecord("n2", 100, role, 1.5))
    registry.apply([Event(keys.replica("c", "n2"), value, False, 5, 6, 100)], 6)
    handle = registry.instances("c")["n2"]
    assert (handle.state, handle.role, handle.fencing_token) == (state, role, 0)
    assert not handle.is_primary
