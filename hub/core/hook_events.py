"""Hook names and payloads: what each hook means and what its handlers receive.

Each :class:`HookName` has one frozen payload dataclass, named after the event
(``CHILD_STARTED`` -> :class:`ChildStarted`), whose ``hook`` class attribute names it;
:func:`payload_type` maps a name to its class and :func:`hook_name` resolves a name given as
a string. :attr:`HookName.description` and :attr:`HookName.fires_on` are the one-line
documentation that :mod:`hub.core.hook_table` renders into ``docs/hooks.md``. Handlers and
dispatch live in :mod:`hub.core.hooks`, which re-exports everything here.

Contract:

* **Where hooks fire.** A hook fires on the node that observes the event. Registry hooks
  (``NODE_JOINED``, ``NODE_LEFT``, ``CHILDREN_REGISTERED``, ``CHILDREN_UNREGISTERED``) fire on
  every node, from its own watch of etcd, once per applied batch. Child lifecycle hooks
  (``CHILD_STARTED``, ``CHILD_RESTARTED``, ``CHILD_STOPPED``, ``CHILD_FAILED``) fire only on
  the node that runs the worker, from the supervisor's events. ``CHILDREN_MIGRATED``,
  ``PARTITION_CHANGED``, ``HUB_STOPPING`` and the alter hook ``CHILD_DATA_ALTER`` fire on the
  node that acts. :attr:`HookName.fires_on` (the "Fires on" column of the table) says which.
* **Values.** Payloads are frozen, slotted dataclasses; their collection fields are copied
  into tuples or a read-only mapping when a payload is built.
* **Observe or alter.** Handlers observe a :class:`HookEvent`. An :class:`AlterPayload`
  (``CHILD_DATA_ALTER``) may be replaced by a handler's result, and only as
  :meth:`AlterPayload.alteration_error` allows.
* **No I/O, no tasks.** This module defines values only: no asyncio, no logging.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import ClassVar, Self

from hub.model import ChildHandle, ChildSpec

__all__ = [
    "AlterPayload",
    "ChildFailed",
    "ChildRestarted",
    "ChildStarted",
    "ChildStarting",
    "ChildStopped",
    "ChildrenMigrated",
    "ChildrenRegistered",
    "ChildrenUnregistered",
    "HookEvent",
    "HookName",
    "HookPayload",
    "HubStopping",
    "NodeJoined",
    "NodeLeft",
    "PartitionChanged",
    "hook_name",
    "payload_type",
]


class HookName(enum.StrEnum):
    """Every hook a hub dispatches; :attr:`description` says when each one fires."""

    NODE_JOINED = "node_joined"
    NODE_LEFT = "node_left"
    CHILD_STARTED = "child_started"
    CHILD_RESTARTED = "child_restarted"
    CHILD_STOPPED = "child_stopped"
    CHILD_FAILED = "child_failed"
    CHILDREN_REGISTERED = "children_registered"
    CHILDREN_UNREGISTERED = "children_unregistered"
    CHILDREN_MIGRATED = "children_migrated"
    PARTITION_CHANGED = "partition_changed"
    CHILD_DATA_ALTER = "child_data_alter"
    HUB_STOPPING = "hub_stopping"

    @property
    def description(self) -> str:
        """One line: when the hook fires (used for the generated documentation)."""
        return _DESCRIPTIONS[self][1]

    @property
    def fires_on(self) -> str:
        """``"every node"`` for registry hooks, ``"this node"`` for the others."""
        return _DESCRIPTIONS[self][0]

    @property
    def is_alter(self) -> bool:
        """True for alter hooks: handlers return a payload instead of observing it."""
        return issubclass(payload_type(self), AlterPayload)


_EVERY = "every node"
_THIS = "this node"

# (fires on, when it fires): one line each, read by HookName and the doc table.
_DESCRIPTIONS: Mapping[HookName, tuple[str, str]] = {
    HookName.NODE_JOINED: (
        _EVERY,
        "A member record appeared in the registry: a new node, or a new incarnation "
        "(lease) of a node that rejoined; the node also sees itself join.",
    ),
    HookName.NODE_LEFT: (
        _EVERY,
        "A member record disappeared: the node left (graceful) or its lease expired "
        "(crash or partition); lists the children it owned at that moment.",
    ),
    HookName.CHILD_STARTED: (
        _THIS,
        "A worker passed its start window on this node, on its first start or after "
        "a crash restart (`restarts` > 0).",
    ),
    HookName.CHILD_RESTARTED: (
        _THIS,
        "A local worker exited and the supervisor scheduled restart number `restarts` "
        "after a backoff; `child_started` follows once the new instance is up.",
    ),
    HookName.CHILD_STOPPED: (
        _THIS,
        "A local worker ended for good without being parked: the hub stopped it "
        "(released, moved, fenced, node leaving) or its restart policy let it exit.",
    ),
    HookName.CHILD_FAILED: (
        _THIS,
        "A local child was parked as failed: its start failed or it exceeded its restart "
        "intensity; it stays down, its owner (or, for a replica instance, its replica "
        "record; `fencing_token` 0) marked `failed`, until it is stopped and started again "
        "or this node goes away.",
    ),
    HookName.CHILDREN_REGISTERED: (
        _EVERY,
        "The registry saw new owners: children whose active instance now has a new "
        "node or fencing token; once per watch batch.",
    ),
    HookName.CHILDREN_UNREGISTERED: (
        _EVERY,
        "The registry saw owner keys removed (released, expired with their lease, or "
        "deleted with the child); once per watch batch.",
    ),
    HookName.CHILDREN_MIGRATED: (
        _THIS,
        "This node released children so that other nodes run them (rebalance after a "
        "join, or drain); fires after their owner keys were deleted.",
    ),
    HookName.PARTITION_CHANGED: (
        _THIS,
        "This node lost its lease and fenced itself (`partitioned` true), or got a "
        "new lease and rejoined (`partitioned` false).",
    ),
    HookName.CHILD_DATA_ALTER: (
        _THIS,
        "Alter hook, just before a worker starts on this node: handlers may return a "
        "changed spec (for example other args for a migrated child); the hub starts "
        "the result.",
    ),
    HookName.HUB_STOPPING: (
        _THIS,
        "This node began to leave the cluster (`Hub.stop()` or the end of its "
        "`async with` block), before draining or stopping anything.",
    ),
}


# -- payloads ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HookPayload:
    """Base of every payload; ``hook`` names the :class:`HookName` it belongs to."""

    hook: ClassVar[HookName]


@dataclass(frozen=True, slots=True)
class HookEvent(HookPayload):
    """Base of the payloads handlers observe (every hook except the alter hooks)."""


@dataclass(frozen=True, slots=True)
class AlterPayload(HookPayload):
    """Base of the payloads alter handlers may replace."""

    def alteration_error(self, altered: Self) -> str | None:
        """Why ``altered`` may not replace this payload, or None if it may."""
        return None


@dataclass(frozen=True, slots=True)
class NodeJoined(HookEvent):
    """A member appeared; ``incarnation`` is its lease id, ``revision`` the etcd revision."""

    hook: ClassVar[HookName] = HookName.NODE_JOINED
    node_id: str
    incarnation: int
    revision: int


@dataclass(frozen=True, slots=True)
class NodeLeft(HookEvent):
    """A member disappeared.

    ``graceful`` is True when the node announced its leave (its record said draining),
    False when its record vanished while active (its lease expired: crash or partition),
    None when the hub cannot tell (a relist). ``child_ids`` are the children the registry
    showed it owning when it left.
    """

    hook: ClassVar[HookName] = HookName.NODE_LEFT
    node_id: str
    incarnation: int
    graceful: bool | None
    child_ids: tuple[str, ...]
    revision: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "child_ids", tuple(self.child_ids))


@dataclass(frozen=True, slots=True)
class ChildStarted(HookEvent):
    """A worker instance is up on ``node_id`` (this node), fenced by ``fencing_token``."""

    hook: ClassVar[HookName] = HookName.CHILD_STARTED
    child_id: str
    node_id: str
    fencing_token: int
    restarts: int


@dataclass(frozen=True, slots=True)
class ChildRestarted(HookEvent):
    """A local worker exited with ``reason``; restart number ``restarts`` is pending."""

    hook: ClassVar[HookName] = HookName.CHILD_RESTARTED
    child_id: str
    fencing_token: int
    restarts: int
    reason: str


@dataclass(frozen=True, slots=True)
class ChildStopped(HookEvent):
    """A local worker ended for good.

    ``reason`` is ``"normal"`` (it returned and its policy does not restart it),
    ``"crashed: ..."`` (a ``temporary`` child), ``"stopped"`` (its spec was deleted),
    ``"migrated"`` (released so that another node runs it), ``"fenced"`` (this node lost
    its lease or its ownership) or ``"shutdown"`` (the node is leaving).
    """

    hook: ClassVar[HookName] = HookName.CHILD_STOPPED
    child_id: str
    fencing_token: int
    reason: str


@dataclass(frozen=True, slots=True)
class ChildFailed(HookEvent):
    """A local child was parked: its start failed or its restart intensity ran out (a
    replica instance has ``fencing_token`` 0)."""

    hook: ClassVar[HookName] = HookName.CHILD_FAILED
    child_id: str
    fencing_token: int
    reason: str


@dataclass(frozen=True, slots=True)
class ChildrenRegistered(HookEvent):
    """New owners seen in one registry batch (at etcd ``revision``)."""

    hook: ClassVar[HookName] = HookName.CHILDREN_REGISTERED
    handles: tuple[ChildHandle, ...]
    revision: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "handles", tuple(self.handles))


@dataclass(frozen=True, slots=True)
class ChildrenUnregistered(HookEvent):
    """Owners removed in one registry batch: ``(child_id, node_id)`` pairs."""

    hook: ClassVar[HookName] = HookName.CHILDREN_UNREGISTERED
    children: tuple[tuple[str, str], ...]
    revision: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "children", tuple(tuple(pair) for pair in self.children))


@dataclass(frozen=True, slots=True)
class ChildrenMigrated(HookEvent):
    """Children this node handed over: ``targets`` maps child id to the node meant to run it."""

    hook: ClassVar[HookName] = HookName.CHILDREN_MIGRATED
    targets: Mapping[str, str]

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", MappingProxyType(dict(self.targets)))


@dataclass(frozen=True, slots=True)
class PartitionChanged(HookEvent):
    """This node entered (``partitioned``) or left partitioned mode; ``reason`` says why."""

    hook: ClassVar[HookName] = HookName.PARTITION_CHANGED
    partitioned: bool
    reason: str


@dataclass(frozen=True, slots=True)
class ChildStarting(AlterPayload):
    """A worker about to start on ``node_id`` (this node).

    ``migrated``: the child ran on another node before (this start moves it).
    ``handover``: it starts from state its previous owner handed over.
    Handlers may change ``spec`` (args, metadata, start target...) but not its id, nor
    any other field.
    """

    hook: ClassVar[HookName] = HookName.CHILD_DATA_ALTER
    spec: ChildSpec
    node_id: str
    fencing_token: int
    migrated: bool
    handover: bool

    def alteration_error(self, altered: ChildStarting) -> str | None:
        if not isinstance(altered.spec, ChildSpec):
            return f"spec must be a ChildSpec, got {type(altered.spec).__name__}"
        if altered.spec.id != self.spec.id:
            return f"spec id changed from {self.spec.id!r} to {altered.spec.id!r}"
        for name in ("node_id", "fencing_token", "migrated", "handover"):
            if getattr(altered, name) != getattr(self, name):
                return f"{name} may not change"
        return None


@dataclass(frozen=True, slots=True)
class HubStopping(HookEvent):
    """This node (``node_id``) begins to leave; with ``drain`` its children move first."""

    hook: ClassVar[HookName] = HookName.HUB_STOPPING
    node_id: str
    drain: bool


_PAYLOAD_TYPES: Mapping[HookName, type[HookPayload]] = MappingProxyType(
    {
        cls.hook: cls
        for cls in (
            NodeJoined,
            NodeLeft,
            ChildStarted,
            ChildRestarted,
            ChildStopped,
            ChildFailed,
            ChildrenRegistered,
            ChildrenUnregistered,
            ChildrenMigrated,
            PartitionChanged,
            ChildStarting,
            HubStopping,
        )
    }
)


def payload_type(name: HookName) -> type[HookPayload]:
    """The payload class of hook ``name``."""
    return _PAYLOAD_TYPES[name]


def hook_name(name: HookName | str) -> HookName:
    """Resolve a hook name given as a member or its value (``"child_started"``).

    Raises:
        ValueError: no such hook; the message lists the valid names.
    """
    if isinstance(name, HookName):
        return name
    try:
        return HookName(name)
    except ValueError:
        valid = ", ".join(member.value for member in HookName)
        raise ValueError(f"unknown hook {name!r}; valid hooks: {valid}") from None
