"""The protocols strategies implement, the values they exchange, and their guarantees.

A strategy is pure: it takes a snapshot of the cluster (the active members and their weights,
or a :class:`MembershipView`) and returns a decision. It does no I/O, starts no tasks and keeps
no state that changes what it answers. The hub executes the decisions; strategies only
compute them.

The protocols live here:

* :class:`DistributionStrategy` builds a :class:`Placer` from one :class:`PlacementInput`
  (the members, their capacities, the pinned children, and for :class:`ChildSetAware`
  strategies the set of children): which node owns each child. Two optional capabilities
  are Protocols too, so the hub never asks which class a strategy is:
  :class:`ChildSetAware` (placement depends on which children exist) and
  :class:`RequiresChildMapping` (every start must name the nodes of its children).
* :class:`RedundancyStrategy` says how many instances of each child run and whether the
  extra ones are active or passive.
* :class:`PartitionStrategy` decides from a :class:`MembershipView` and the
  :class:`QuorumState` it returned last time whether this node must stop its children
  (:class:`QuorumDecision`). Whatever such a strategy has to remember between two decisions is
  in :class:`QuorumState`, a plain value the hub stores (in etcd) and passes back in.

Each implementation declares ``guarantees: frozenset[Guarantee]`` so the hub can refuse a
configuration whose strategies promise what they cannot deliver (:mod:`strategies.checks`).
A strategy of a family is any object with the members of its Protocol: no base class.

Example, what the hub asks of a distribution and a partition strategy, by hand::

    >>> from strategies import ConsistentHashing, MajorityQuorum
    >>> placement = PlacementInput({"node-1": 1, "node-2": 1}, pins={"billing": ["node-2"]})
    >>> placer = ConsistentHashing().placer(placement)
    >>> placer.owner("billing")  # pinned to node-2
    'node-2'
    >>> isinstance(placer, Placer), isinstance(ConsistentHashing(), ChildSetAware)
    (True, False)
    >>> view = MembershipView(frozenset({"node-2"}), now=0.0, self_id="node-1")
    >>> decision = MajorityQuorum().decide(view, QuorumState())
    >>> decision.partitioned, decision.state.max_seen, sorted(decision.state.previous_members)
    (False, 2, ['node-1', 'node-2'])
    >>> MajorityQuorum().next_expiry(decision.state) is None  # no timer: membership only
    True
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, Protocol, runtime_checkable

__all__ = [
    "NO_PINS",
    "ChildSetAware",
    "DistributionStrategy",
    "Guarantee",
    "MembershipView",
    "PartitionStrategy",
    "PlacementInput",
    "Placer",
    "QuorumDecision",
    "QuorumState",
    "RedundancyMode",
    "RedundancyStrategy",
    "RequiresChildMapping",
]


class Guarantee(enum.Enum):
    """A property a strategy promises; each member's ``__doc__`` defines it."""

    def __new__(cls, value: str, doc: str) -> Guarantee:
        member = object.__new__(cls)
        member._value_ = value
        member.__doc__ = doc
        return member

    AT_MOST_ONE_OWNER = (
        "at_most_one_owner",
        "For a given member set every child has at most one owner (exactly one unless the "
        "strategy leaves it unplaced), so nodes that see the same members never both claim it. "
        "(Nodes with different views are settled by the hub's fenced owner key, not by the "
        "strategy.) For a partition strategy: it leaves the hub's self-fencing in force, so a "
        "node that loses its lease stops its children and two copies never run at once.",
    )
    MINIMAL_MOVEMENT = (
        "minimal_movement",
        "A membership change moves only the children it must: on a join, only children whose "
        "new owner is the joining node; on a leave, only the children the leaving node owned.",
    )
    DETERMINISTIC = (
        "deterministic",
        "Placement is a pure function of the child id, the members and the strategy's config: "
        "every process on every platform computes the same answer, whatever the insertion "
        "order or PYTHONHASHSEED.",
    )
    AVAILABLE_DURING_OUTAGE = (
        "available_during_outage",
        "Children keep running while etcd is unreachable, even after this node's lease may "
        "have expired. Bought with AT_MOST_ONE_OWNER: until the node reconnects and "
        "reconciles, another node may run a second copy of the same child.",
    )


@runtime_checkable
class Placer(Protocol):
    """Answers where children belong, for one fixed set of members."""

    def owners(self, child_id: str, n: int = 1) -> tuple[str, ...]:
        """Return up to ``n`` distinct node ids for ``child_id``, the owner first.

        Returns at most ``min(n, number of members)`` nodes, ``()`` when there are no
        members. Most strategies return exactly that many; one that binds children to
        particular nodes (``Guided`` waiting for its nodes) may return fewer, or none.

        Raises:
            ValueError: ``n`` is below 1.
        """
        ...

    def owner(self, child_id: str) -> str | None:
        """Return the node that owns ``child_id``, or ``None`` when it has no live owner."""
        ...


#: The ``pins`` of a :class:`PlacementInput` in which no child is pinned.
NO_PINS: Mapping[str, Sequence[str]] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class PlacementInput:
    """Everything a distribution strategy may place children by, for one membership.

    Args:
        members: the active members, node id -> weight (an int >= 1).
        child_ids: every child that has a spec, sorted. The hub fills it only for
            :class:`ChildSetAware` strategies (building it costs a sort of every id);
            ``()`` otherwise.
        capacities: node id -> relative capacity in [0, 1] (the largest published
            capacity is 1.0), or ``None`` when no member publishes one.
        pins: child id -> the nodes it is pinned to, in order of preference (what
            ``move``, ``pin`` and a child mapping store in the spec). The hub passes a
            read-only view of its current specs, read on lookup, not a copy. A pinned child
            belongs on its first pinned node that is a member; with none of them a member
            it waits (``owner()`` is ``None``) unless the strategy says otherwise
            (``Guided(fallback="ring")``). :class:`~strategies.pins.PinnedPlacer` does this
            around any placer. Unpinned children are not in it. :data:`NO_PINS` when none.
    """

    members: Mapping[str, int]
    child_ids: Sequence[str] = ()
    capacities: Mapping[str, float] | None = None
    pins: Mapping[str, Sequence[str]] = field(default_factory=lambda: NO_PINS)


@runtime_checkable
class DistributionStrategy(Protocol):
    """Decides which node owns each child, given one :class:`PlacementInput`."""

    @property
    def guarantees(self) -> frozenset[Guarantee]:
        """The properties this strategy promises."""
        ...

    def placer(self, placement: PlacementInput) -> Placer:
        """Return a :class:`Placer` for ``placement``.

        Raises:
            ValueError: a member id is not a non-empty str or a weight is not an int >= 1.
        """
        ...


@runtime_checkable
class ChildSetAware(Protocol):
    """An optional capability of a distribution strategy: placement depends on which
    children exist (``BoundedLoad``). The hub fills :attr:`PlacementInput.child_ids` for it
    and builds a new placer when children come or go, at most every ``rebuild_interval``
    seconds, as well as on every membership change."""

    @property
    def rebuild_interval(self) -> float:
        """Seconds between two rebuilds while the set of children changes (> 0)."""
        ...


@runtime_checkable
class RequiresChildMapping(Protocol):
    """An optional capability of a distribution strategy: every start names the nodes of
    its children (``Guided``). The hub calls :meth:`validate_child_mapping` before it writes
    anything, and stores each child's nodes as its pins."""

    def validate_child_mapping(
        self, child_ids: Sequence[str], mapping: object, replicas: int
    ) -> None:
        """Check ``mapping`` for a start of ``child_ids`` with ``replicas`` instances each.

        Raises:
            strategies.errors.PlacementError: the mapping is missing or does not fit.
        """
        ...


# -- redundancy ------------------------------------------------------------------------------

#: ``"active_passive"``: only the primary instance is active; ``"active_active"``: all are.
RedundancyMode = Literal["active_passive", "active_active"]


@runtime_checkable
class RedundancyStrategy(Protocol):
    """How many instances of each child run, and which of them are active.

    The hub places ``count(members)`` instances of every child on the first distinct nodes
    its placer returns (``placer.owners(child_id, count)``), so never more than there are
    members. The first is the primary: it holds the owner key and the fencing token; the
    others hold replica keys and run with ``ctx.role`` ``"passive"`` or ``"active"`` as
    :attr:`mode` says. When the count shrinks, the extra instances are stopped and their
    records removed. The hub reads :attr:`mode` and calls :meth:`count` whenever the
    membership changes; :attr:`guarantees` when the configuration is checked.
    """

    @property
    def guarantees(self) -> frozenset[Guarantee]:
        """The properties this strategy promises (``AT_MOST_ONE_OWNER`` for one active)."""
        ...

    @property
    def mode(self) -> RedundancyMode:
        """Whether the instances besides the primary are active or passive."""
        ...

    def count(self, members: int) -> int:
        """Return the instances per child (an int >= 1) when the cluster has ``members``
        active members; also asked with 0, before the hub has seen any member."""
        ...


# -- partition tolerance ---------------------------------------------------------------------


def _check_node_id(node_id: object, what: str) -> str:
    if not isinstance(node_id, str) or not node_id:
        raise ValueError(f"{what} must be a non-empty str, got {node_id!r}")
    return node_id


def _check_time(value: object, what: str) -> float:
    # bool is a number to Python, never a time.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number of seconds, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class MembershipView:
    """What one node sees of the hub's membership at one moment: the input of a decision.

    Args:
        members: the live hub members. ``self_id`` is always counted: it is added when
            missing (a node still running counts itself, as ProcessHub does).
        now: wall-clock seconds (``time.time()``). Wall clock, not monotonic, because the
            times recorded in :attr:`QuorumState.down_log` outlive the process: the hub
            stores them and may hand them to another node.
        self_id: this node's id.

    Raises:
        ValueError: a node id is not a non-empty str, or ``now`` is not a finite number.
    """

    members: frozenset[str]
    now: float
    self_id: str

    def __post_init__(self) -> None:
        self_id = _check_node_id(self.self_id, "self_id")
        members = frozenset(self.members)
        for node_id in members:
            _check_node_id(node_id, "a member id")
        object.__setattr__(self, "members", members | {self_id})
        object.__setattr__(self, "now", _check_time(self.now, "now"))


@dataclass(frozen=True, slots=True)
class QuorumState:
    """What a partition strategy remembers between two decisions; a plain, storable value.

    The hub keeps it (in etcd, see :meth:`to_dict`), passes it to each
    :meth:`PartitionStrategy.decide` and stores the ``state`` of the decision it gets back.
    ``QuorumState()`` is the state of a node that has observed nothing yet; a node that
    starts again with a stored state passes :meth:`resumed` so that its first decision is a
    start-up decision.

    Args:
        max_seen: the largest cluster size that counts for a majority (``MajorityQuorum``),
            or the largest member count seen so far (the other strategies).
        down_log: ``(node id, wall-clock second it went down)`` for the nodes recently lost
            (``DynamicQuorum``). Kept sorted by time, then node id.
        previous_members: the members of the last decision; ``frozenset()`` before the
            first, which is how a strategy recognises its first observation.
        partitioned: whether the last decision was partitioned. Quorum strategies only leave
            partition mode once the quorum is back, so a join that still leaves the quorum
            short changes nothing.

    Raises:
        ValueError: a field has the wrong type, ``max_seen`` is negative, or a log entry is
            not a ``(node id, finite time)`` pair.
    """

    max_seen: int = 0
    down_log: tuple[tuple[str, float], ...] = ()
    previous_members: frozenset[str] = field(default_factory=frozenset)
    partitioned: bool = False

    def __post_init__(self) -> None:
        max_seen = self.max_seen
        if not isinstance(max_seen, int) or isinstance(max_seen, bool) or max_seen < 0:
            raise ValueError(f"max_seen must be an int >= 0, got {max_seen!r}")
        if not isinstance(self.partitioned, bool):
            raise ValueError(f"partitioned must be a bool, got {self.partitioned!r}")
        log = []
        for entry in self.down_log:
            if not isinstance(entry, tuple | list) or len(entry) != 2:
                raise ValueError(f"a down_log entry must be a (node id, time) pair, got {entry!r}")
            node_id, went_down = entry
            log.append(
                (
                    _check_node_id(node_id, "a down_log node id"),
                    _check_time(went_down, "a down_log time"),
                )
            )
        log.sort(key=lambda item: (item[1], item[0]))
        previous = frozenset(self.previous_members)
        for node_id in previous:
            _check_node_id(node_id, "a previous member id")
        object.__setattr__(self, "down_log", tuple(log))
        object.__setattr__(self, "previous_members", previous)

    @property
    def is_initial(self) -> bool:
        """True before the first observation (no previous members)."""
        return not self.previous_members

    def resumed(self) -> QuorumState:
        """Return the state a restarting node begins with: the memory, not the last view.

        Keeps ``max_seen`` and ``down_log``; forgets ``previous_members`` and
        ``partitioned``, so the next decision is treated as the first.
        """
        return QuorumState(max_seen=self.max_seen, down_log=self.down_log)

    def to_dict(self) -> dict[str, object]:
        """Return a JSON-ready dict; :meth:`from_dict` reads it back to an equal state."""
        return {
            "max_seen": self.max_seen,
            "down_log": [[node_id, went_down] for node_id, went_down in self.down_log],
            "previous_members": sorted(self.previous_members),
            "partitioned": self.partitioned,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> QuorumState:
        """Build a state from :meth:`to_dict` output (missing keys take their defaults).

        Raises:
            ValueError: a value is malformed.
        """
        down_log = data.get("down_log", ())
        previous = data.get("previous_members", ())
        if not isinstance(down_log, Iterable) or isinstance(down_log, str | bytes):
            raise ValueError(f"down_log must be a list of pairs, got {down_log!r}")
        if not isinstance(previous, Iterable) or isinstance(previous, str | bytes):
            raise ValueError(f"previous_members must be a list of ids, got {previous!r}")
        return cls(
            max_seen=data.get("max_seen", 0),  # type: ignore[arg-type]  # __post_init__ checks
            down_log=tuple(down_log),  # the [node, time] lists of JSON; checked as pairs
            previous_members=frozenset(previous),
            partitioned=data.get("partitioned", False),  # type: ignore[arg-type]
        )


@dataclass(frozen=True, slots=True)
class QuorumDecision:
    """A partition strategy's answer for one :class:`MembershipView`.

    Args:
        partitioned: the node must be in partition mode: stop every local child and refuse
            starts until a later decision clears it.
        reason: one human-readable line saying why (for logs and ``status``).
        state: the state to store and pass to the next decision.
        has_quorum: the strategy's quorum condition holds for this view. It can be False
            while ``partitioned`` is False: at start-up, or after a join that leaves the
            quorum still short while the node was not partitioned.
    """

    partitioned: bool
    reason: str
    state: QuorumState
    has_quorum: bool = True


@runtime_checkable
class PartitionStrategy(Protocol):
    """Decides, from membership alone, whether this node must stop its children.

    The hub (:class:`hub.core.quorum.QuorumGate`) reads these five members and nothing else:

    * :meth:`decide` on every membership change, at start-up (with the stored state's
      :meth:`QuorumState.resumed`, or ``QuorumState()``), after :meth:`reset_cluster_size`
      and at :meth:`next_expiry`; it acts on ``decision.partitioned`` and keeps
      ``decision.state`` for the next call;
    * :attr:`persists_state` once, when the node starts: whether to store that state;
    * :meth:`next_expiry` after every decision: when to decide again without a change;
    * :meth:`reset_cluster_size` only when the user calls ``Hub.reset_cluster_size``;
    * :attr:`guarantees` when the configuration is checked (``AVAILABLE_DURING_OUTAGE``
      also makes the hub keep children running through a lease loss).

    A strategy with nothing to remember, no timers and no cluster size answers ``False``,
    ``None`` and raises :class:`~strategies.errors.NoClusterSize`, as
    :class:`~strategies.partition.Strict` does.
    """

    @property
    def guarantees(self) -> frozenset[Guarantee]:
        """The properties this strategy promises."""
        ...

    @property
    def persists_state(self) -> bool:
        """Whether the hub stores each decision's state in etcd (``gates/{node_id}``).

        True when a node that restarts must resume what the strategy remembered
        (``max_seen``, ``down_log``: what :meth:`QuorumState.resumed` keeps), False when
        no decision depends on it: the hub then never writes the key.
        """
        ...

    def decide(self, view: MembershipView, state: QuorumState) -> QuorumDecision:
        """Return the decision for ``view``, with the state to pass next time.

        Pure: the same view and state always give the same decision.
        """
        ...

    def next_expiry(self, state: QuorumState) -> float | None:
        """Return the wall-clock second at which a decision may change with no membership
        change (a remembered loss stops counting), or ``None`` if only membership matters.

        The hub decides again at that time (sooner if the membership changes).
        """
        ...

    def reset_cluster_size(self, state: QuorumState, size: int) -> QuorumState:
        """Return ``state`` as it must be after an intentional downsize to ``size`` members.

        The hub calls it from ``Hub.reset_cluster_size(size)``, keeps the result and decides
        again at once, so a node partitioned only because of the old size is cleared.

        Raises:
            strategies.errors.NoClusterSize: the strategy keeps no cluster size (the hub
                raises :class:`hub.errors.ConfigError`).
            ValueError: ``size`` is not an int >= 1.
        """
        ...
