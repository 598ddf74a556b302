"""Value types shared by every module: ids, child specs, handles and results.

Everything here is immutable and free of I/O. A ``ChildSpec`` validates itself when it is
built, so a malformed spec is refused before anything reaches etcd.
"""

from __future__ import annotations

import enum
import functools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NewType

from hub.errors import InvalidChildId, InvalidSpec

NodeId = NewType("NodeId", str)
ChildId = NewType("ChildId", str)
Revision = NewType("Revision", int)
LeaseId = NewType("LeaseId", int)

#: Longest child id, in UTF-8 bytes. Keys stay far below etcd's limits even when escaped.
MAX_CHILD_ID_BYTES = 512
#: Longest node id or hub id, in UTF-8 bytes.
MAX_NAME_BYTES = 128

_TARGET_RE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class RestartPolicy(enum.StrEnum):
    """When the local supervisor restarts a worker that exited.

    ``permanent``: always. ``transient``: only after an abnormal exit; a normal exit removes
    the child from the cluster (its spec is deleted). ``temporary``: never; any exit removes it.
    """

    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


class OwnerState(enum.StrEnum):
    """Lifecycle of the active instance, as recorded in ``owners/{child_id}``."""

    STARTING = "starting"  # ownership acquired, worker being started
    RUNNING = "running"  # worker passed its start phase
    RESTARTING = "restarting"  # worker crashed, waiting for its backoff
    FAILED = "failed"  # start failed or restart intensity exceeded: parked, not running


class NodeState(enum.StrEnum):
    """A member's state in ``nodes/{node_id}``. Draining nodes own nothing new."""

    ACTIVE = "active"
    DRAINING = "draining"


def validate_child_id(child_id: object) -> ChildId:
    """Return ``child_id`` if it is a usable id, else raise :class:`InvalidChildId`."""
    if not isinstance(child_id, str):
        raise InvalidChildId(f"child id must be a str, got {type(child_id).__name__}")
    if not child_id:
        raise InvalidChildId("child id must not be empty")
    try:
        size = len(child_id.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidChildId(f"child id is not valid unicode: {exc}") from None
    if size > MAX_CHILD_ID_BYTES:
        raise InvalidChildId(f"child id is {size} bytes; the limit is {MAX_CHILD_ID_BYTES}")
    return ChildId(child_id)


def validate_name(kind: str, name: object) -> str:
    """Validate a hub id or node id: letters, digits, ``_.-``, at most 128 bytes."""
    if not isinstance(name, str) or not name:
        raise InvalidSpec(f"{kind} must be a non-empty str")
    if len(name.encode()) > MAX_NAME_BYTES or not _NAME_RE.match(name):
        raise InvalidSpec(
            f"{kind} {name!r} must match [A-Za-z0-9][A-Za-z0-9_.-]* and be at most "
            f"{MAX_NAME_BYTES} bytes"
        )
    return name


def canonical_json(value: Any, what: str) -> str:
    """Encode ``value`` as compact JSON, raising :class:`InvalidSpec` if it cannot be."""
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise InvalidSpec(f"{what} must be JSON-serializable: {exc}") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # "1e999"
        raise ValueError(f"{text} is not a finite number")
    return value


def _loads(text: str) -> Any:
    """Parse stored JSON, refusing the ``NaN``/``Infinity`` that canonical_json never writes."""
    if text == "{}":
        return {}  # by far the most common args/metadata: skip the parser
    return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)


def _validate_nodes(child_id: str, nodes: object) -> tuple[str, ...]:
    if isinstance(nodes, str) or not isinstance(nodes, (tuple, list)):
        raise InvalidSpec(f"child {child_id!r}: nodes must be a sequence of node ids")
    out = tuple(nodes)
    for node in out:
        if not isinstance(node, str) or not _NAME_RE.match(node) or len(node) > MAX_NAME_BYTES:
            raise InvalidSpec(f"child {child_id!r}: {node!r} is not a valid node id")
    if len(set(out)) != len(out):
        raise InvalidSpec(f"child {child_id!r}: nodes contains duplicates")
    return out


@functools.lru_cache(maxsize=4096)
def _is_target(start: str) -> bool:
    return _TARGET_RE.match(start) is not None


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """What to run, durably stored under ``specs/{id}``.

    Args:
        id: cluster-unique child id (any string up to 512 UTF-8 bytes).
        start: import string ``"package.module:attr"`` naming a class with
            ``async def run(self, ctx)`` or an ``async def run(ctx)`` function.
        args: JSON-serializable value handed to the worker as ``ctx.args``.
        restart: restart policy (see :class:`RestartPolicy`).
        metadata: JSON-serializable mapping kept in the registry; ``"tag"`` feeds
            :meth:`hub.Hub.tag_query`.
        max_restarts: restart intensity: more than this many restarts within
            ``max_seconds`` parks the child as ``failed`` on its node.
        max_seconds: the intensity window.
        nodes: pin the child to these nodes, in order of preference (guided placement,
            :meth:`hub.client.HubClient.move`); empty means the distribution strategy
            places it. A pinned child whose nodes are all gone **waits** for one of them
            to return; it is never dropped (unpin it to let the ring place it).

    Raises:
        InvalidChildId: the id is empty, too long or not a string.
        InvalidSpec: the target is malformed, args or metadata are not JSON, limits invalid.
    """

    id: str
    start: str
    args: Any = field(default_factory=dict)
    restart: RestartPolicy = RestartPolicy.PERMANENT
    metadata: Mapping[str, Any] = field(default_factory=dict)
    max_restarts: int = 10
    max_seconds: float = 30.0
    nodes: tuple[str, ...] = ()
    #: canonical JSON of ``args`` and ``metadata``, computed once at validation
    args_json: str = field(init=False, repr=False, compare=False, default="")
    metadata_json: str = field(init=False, repr=False, compare=False, default="")

    def __post_init__(self) -> None:
        validate_child_id(self.id)
        if not isinstance(self.start, str) or not _TARGET_RE.match(self.start):
            raise InvalidSpec(
                f"child {self.id!r}: start target {self.start!r} must look like "
                "'package.module:attr'"
            )
        try:
            object.__setattr__(self, "restart", RestartPolicy(self.restart))
        except ValueError:
            raise InvalidSpec(
                f"child {self.id!r}: restart must be one of "
                f"{[p.value for p in RestartPolicy]}, got {self.restart!r}"
            ) from None
        object.__setattr__(self, "args_json", canonical_json(self.args, f"child {self.id!r}: args"))
        if not isinstance(self.metadata, Mapping):
            raise InvalidSpec(f"child {self.id!r}: metadata must be a mapping")
        object.__setattr__(
            self,
            "metadata_json",
            canonical_json(dict(self.metadata), f"child {self.id!r}: metadata"),
        )
        if not isinstance(self.max_restarts, int) or self.max_restarts < 0:
            raise InvalidSpec(f"child {self.id!r}: max_restarts must be an int >= 0")
        seconds = self.max_seconds
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
            raise InvalidSpec(f"child {self.id!r}: max_seconds must be a number > 0")
        object.__setattr__(self, "nodes", _validate_nodes(self.id, self.nodes))

    @classmethod
    def from_json(
        cls,
        *,
        id: str,
        start: str,
        args_json: str,
        restart: str,
        metadata_json: str,
        max_restarts: int,
        max_seconds: float,
        nodes: tuple[str, ...] = (),
    ) -> ChildSpec:
        """Rebuild a spec from its stored JSON without re-encoding it (the registry's path).

        Validates everything except JSON-serializability, which parsing JSON implies.

        Raises:
            InvalidSpec: a field is invalid; ValueError: the JSON does not parse.
        """
        validate_child_id(id)
        if not _is_target(start):
            raise InvalidSpec(f"child {id!r}: malformed start target {start!r}")
        try:
            policy = RestartPolicy(restart or "permanent")
        except ValueError:
            raise InvalidSpec(f"child {id!r}: unknown restart policy {restart!r}") from None
        metadata = _loads(metadata_json) if metadata_json else {}
        if not isinstance(metadata, dict):
            raise InvalidSpec(f"child {id!r}: metadata is not an object")
        max_seconds = max_seconds or 30.0
        if not max_seconds > 0:  # also refuses NaN, like __post_init__
            raise InvalidSpec(f"child {id!r}: max_seconds must be > 0")
        spec = object.__new__(cls)
        for name, value in (
            ("id", id),
            ("start", start),
            ("args", _loads(args_json) if args_json else {}),
            ("restart", policy),
            ("metadata", metadata),
            ("max_restarts", max_restarts),
            ("max_seconds", max_seconds),
            ("args_json", args_json or "{}"),
            ("metadata_json", metadata_json or "{}"),
            ("nodes", _validate_nodes(id, nodes)),
        ):
            object.__setattr__(spec, name, value)
        return spec

    @property
    def tag(self) -> str | None:
        """The ``metadata["tag"]`` value, if it is a string."""
        tag = self.metadata.get("tag")
        return tag if isinstance(tag, str) else None


@dataclass(frozen=True, slots=True)
class ChildHandle:
    """Where a child's active instance runs, as the local registry saw it.

    ``fencing_token`` is the create revision of ``owners/{child_id}``: it grows with every
    new owner, so external systems can reject writes carrying an older token.
    """

    child_id: str
    node_id: str
    incarnation: int
    fencing_token: int
    state: OwnerState
    started_at: float
    restarts: int = 0
    last_exit: str = ""
    #: "active" for the owner (the primary); a replica is "passive" or, with active/active
    #: replication, "active"; "failed" (state ``FAILED``) once parked by its restart
    #: intensity. Replica handles carry fencing token 0: they hold no owner key.
    role: str = "active"

    @property
    def is_primary(self) -> bool:
        """True for the instance holding ``owners/{child_id}`` (fencing token > 0)."""
        return self.fencing_token > 0

    @property
    def is_running(self) -> bool:
        """True when the worker passed its start phase and has not crashed since."""
        return self.state is OwnerState.RUNNING


@dataclass(frozen=True, slots=True)
class ChildFailure:
    """One error entry of a start or stop result: which child, on which node, and why."""

    child_id: str | None
    node_id: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class StartResult:
    """Outcome of :meth:`hub.Hub.start_children`.

    ``started`` holds a handle per child that reached ``running`` (only when waiting);
    ``pending`` the ids accepted but not awaited; ``errors`` one entry per failure;
    ``rollback`` is True when ``on_failure="rollback"`` stopped the started children.
    """

    started: tuple[ChildHandle, ...] = ()
    errors: tuple[ChildFailure, ...] = ()
    pending: tuple[str, ...] = ()
    rollback: bool = False

    @property
    def ok(self) -> bool:
        """True when no child failed."""
        return not self.errors

    @property
    def status(self) -> str:
        """``"ok"`` or ``"error"``, like ProcessHub's ``StartResult.status``."""
        return "ok" if self.ok else "error"

    def child_ids(self) -> list[str]:
        """Ids of the started children, in request order."""
        return [h.child_id for h in self.started]

    def nodes(self) -> list[str]:
        """Distinct nodes the started children run on."""
        return sorted({h.node_id for h in self.started})


@dataclass(frozen=True, slots=True)
class StoppedChild:
    """A stopped child and the node(s) it was running on (empty if it was not running)."""

    child_id: str
    node_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StopResult:
    """Outcome of :meth:`hub.Hub.stop_children`."""

    stopped: tuple[StoppedChild, ...] = ()
    errors: tuple[ChildFailure, ...] = ()
    pending: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when no child failed to stop."""
        return not self.errors

    @property
    def status(self) -> str:
        """``"ok"`` or ``"error"``."""
        return "ok" if self.ok else "error"

    def child_ids(self) -> list[str]:
        """Ids of the stopped children, in request order."""
        return [s.child_id for s in self.stopped]


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A member's record under ``nodes/{node_id}``; ``incarnation`` is its lease id."""

    node_id: str
    incarnation: int
    address: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    weight: int = 1
    state: NodeState = NodeState.ACTIVE
    version: str = ""
    started_at: float = 0.0
    capacity: int = 0  # children this node is sized for; 0 = no limit
    load: int = 0  # children it ran when it last published


@dataclass(frozen=True, slots=True)
class OwnerRecord:
    """The value of ``owners/{child_id}``: which node incarnation runs the active instance."""

    node_id: str
    incarnation: int
    state: OwnerState
    started_at: float
    restarts: int = 0
    last_exit: str = ""
