"""Registry hooks from hand-built watch batches (no etcd): ``node_left`` names the children
a crashed node owned whichever other hooks have handlers."""

from __future__ import annotations

import pytest

from hub.core.hooks import (
    ChildrenUnregistered,
    HookEvent,
    HookHandler,
    HookName,
    Hooks,
    NodeLeft,
)
from hub.core.registry import Registry
from hub.etcd.codec import encode_node, encode_owner
from hub.etcd.keys import KeySpace
from hub.etcd.store import Event
from hub.model import NodeInfo, OwnerRecord, OwnerState

KEYS = KeySpace("h")
LEASE = 7


def put(key: bytes, value: bytes, revision: int) -> Event:
    return Event(key, value, False, revision, revision, LEASE)


def delete(key: bytes, revision: int) -> Event:
    return Event(key, b"", True, 0, revision, 0)


def registry_with(hooks: Hooks) -> Registry:
    registry = Registry(KEYS)
    registry.hooks = hooks
    node = encode_node(NodeInfo("n2", LEASE))
    owner = encode_owner(OwnerRecord("n2", LEASE, OwnerState.RUNNING, 0.0))
    registry.apply(
        [
            put(KEYS.node("n2"), node, 2),
            put(KEYS.owner("c1"), owner, 3),
            put(KEYS.owner("c2"), owner, 4),
        ],
        4,
    )
    return registry


@pytest.mark.parametrize("node_first", [True, False], ids=["node-key-first", "owners-first"])
@pytest.mark.parametrize("also_unregistered", [False, True], ids=["alone", "with-unregistered"])
def test_node_left_lists_the_children_of_a_crashed_node(
    node_first: bool, also_unregistered: bool
) -> None:
    seen: list[HookEvent] = []
    hooks = Hooks()
    hooks.register(HookName.NODE_LEFT, HookHandler("test", seen.append))
    if also_unregistered:
        hooks.register(HookName.CHILDREN_UNREGISTERED, HookHandler("test", seen.append))
    registry = registry_with(hooks)
    # The lease expires: etcd deletes every key bound to it in one revision, one batch.
    owners = [delete(KEYS.owner("c1"), 5), delete(KEYS.owner("c2"), 5)]
    node = [delete(KEYS.node("n2"), 5)]
    registry.apply(node + owners if node_first else owners + node, 5)
    (left,) = [event for event in seen if isinstance(event, NodeLeft)]
    assert left.node_id == "n2" and left.graceful is False
    assert left.child_ids == ("c1", "c2")
    unregistered = [event for event in seen if isinstance(event, ChildrenUnregistered)]
    assert len(unregistered) == int(also_unregistered)
    assert not registry._unregistered  # nothing carried into the next batch


def test_without_hook_handlers_nothing_is_collected() -> None:
    registry = registry_with(Hooks())
    registry.apply([delete(KEYS.owner("c1"), 5), delete(KEYS.node("n2"), 5)], 5)
    assert not registry._unregistered and not registry._left
