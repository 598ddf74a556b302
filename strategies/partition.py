"""Partition strategies: when a node stops its children because too much of the cluster is gone.

A :class:`~strategies.base.PartitionStrategy` looks at one
:class:`~strategies.base.MembershipView` (the live members, self included, and the time) and
the :class:`~strategies.base.QuorumState` it returned last time, and answers with a
:class:`~strategies.base.QuorumDecision`: partitioned or not, why, and the state to pass next
time. Partitioned means the hub stops every local child and refuses starts until a later
decision clears it. Nothing here has a clock or storage: the hub supplies ``now`` and keeps
the state.

All three quorum strategies share one rule, ProcessHub's:

* **lock on a leave**: a decision in which a previous member is gone and the quorum is
  missing enters partition mode;
* **unlock when the quorum is back**: a decision with the quorum present clears it;
* otherwise the mode is kept: a join that leaves the quorum short does not lock a node that
  was running, nor unlock one that was stopped;
* the **first** decision (``state.is_initial``) never locks, except ``StaticQuorum`` with
  ``startup_confirm=True``.

The strategies, their formulas and defaults:

========================== =============================================================
:class:`Strict` (default)  never partitions on membership. The hub's self-fencing (a node
                           that loses its lease stops its children) is what keeps at most
                           one copy of each child running.
:class:`Availability`      never partitions, and asks the hub to keep children running
                           through an etcd outage. Gives up at-most-one-owner.
:class:`StaticQuorum`      quorum present while ``len(members) >= quorum_size``.
                           ``startup_confirm=False``.
:class:`DynamicQuorum`     ``remaining = 100 - down / (connected + down) * 100`` where
                           ``down`` counts the nodes lost in the last ``threshold_time``
                           seconds and ``connected`` the live members; quorum present
                           unless ``remaining < quorum_size``. ``threshold_time=30.0``.
:class:`MajorityQuorum`    quorum present while ``len(members) >= max_seen // 2 + 1``.
                           ``max_seen`` starts at ``max(initial_cluster_size, members)``
                           and follows growth when ``track_max_size``. Defaults ``1`` and
                           ``True``.
========================== =============================================================

Worked example, ProcessHub's majority-quorum scenario (integration test 13): six nodes, four
more join, then nodes leave down to exactly the remembered quorum::

    >>> nodes = [f"n{i}" for i in range(1, 11)]
    >>> def view(count: int, now: float = 0.0) -> MembershipView:
    ...     return MembershipView(frozenset(nodes[:count]), now=now, self_id="n1")
    >>> majority, state = MajorityQuorum(), QuorumState()
    >>> for count in (6, 10, 9, 7, 6):
    ...     decision = majority.decide(view(count), state)
    ...     state = decision.state
    ...     print(count, decision.partitioned, state.max_seen)
    6 False 6
    10 False 10
    9 False 10
    7 False 10
    6 False 10
    >>> majority.decide(view(5), state).reason
    'majority quorum: 5 live members, quorum 6 (max_seen 10): lost on a leave'

Static quorum of 7 with ``startup_confirm`` (scenario 11): a hub that starts with 6 nodes is
partitioned, 8 clear it, 7 is still enough, 6 again is not::

    >>> static, state = StaticQuorum(7, startup_confirm=True), QuorumState()
    >>> for count in (6, 8, 7, 6):
    ...     decision = static.decide(view(count), state)
    ...     state = decision.state
    ...     print(count, decision.partitioned)
    6 True
    8 False
    7 False
    6 True

Dynamic quorum of 80 % over an hour (scenario 12): 10 nodes lose one node after another;
90 % and 80 % remain healthy, 70 % is a partition. An hour after the losses they are
forgotten and the 7 nodes are the cluster::

    >>> dynamic, state = DynamicQuorum(80, threshold_time=3600), QuorumState()
    >>> for count in (10, 9, 8, 7):
    ...     decision = dynamic.decide(view(count, now=10 - count), state)
    ...     state = decision.state
    ...     print(count, decision.partitioned, len(state.down_log))
    10 False 0
    9 False 1
    8 False 2
    7 True 3
    >>> dynamic.next_expiry(state)  # the first loss (at t=1) stops counting then
    3601.0
    >>> dynamic.decide(view(7, now=3601), state).partitioned  # 7 of 9: still short
    True
    >>> dynamic.decide(view(7, now=3603), state).partitioned  # all three forgotten
    False

Scenario 10 (``Divergence`` upstream, 12 nodes stopped one by one) never partitions with
:class:`Strict` or :class:`Availability`.

Wiring: each strategy has the five members of :class:`~strategies.base.PartitionStrategy`,
which says when the hub calls each. Only ``DynamicQuorum`` has a timer (``next_expiry``),
only ``MajorityQuorum`` a cluster size to reset (the others raise
:class:`~strategies.errors.NoClusterSize`), and only those two ``persists_state``.

Warning:
    * ``StaticQuorum`` counts nodes, so it is unsuitable for autoscaling: a cluster scaled
      below ``quorum_size`` stops everywhere, and one scaled far above it lets a minority
      keep running.
    * ``DynamicQuorum``: losing several nodes within ``threshold_time`` looks like a
      partition. Scale down one node at a time and wait ``threshold_time`` between steps.
      It also forgives: ``threshold_time`` after the losses they no longer count, and the
      next decision clears partition mode even if the nodes never come back.
    * ``MajorityQuorum`` remembers the largest cluster it saw. After an intentional
      downsize, call :meth:`MajorityQuorum.reset_cluster_size` with the new size, or the
      smaller cluster stops once it falls below a majority of the old one.
    * ``max_seen`` and the down log are per node, as upstream: the hub decides whether to
      store one state per node or share one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar

from strategies.base import Guarantee, MembershipView, QuorumDecision, QuorumState
from strategies.errors import NoClusterSize

__all__ = [
    "Availability",
    "DynamicQuorum",
    "MajorityQuorum",
    "MembershipView",
    "QuorumDecision",
    "QuorumState",
    "StaticQuorum",
    "Strict",
]

_FENCED: frozenset[Guarantee] = frozenset({Guarantee.AT_MOST_ONE_OWNER})


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _left(view: MembershipView, state: QuorumState) -> frozenset[str]:
    """The previous members missing from ``view`` (none on the first observation)."""
    return state.previous_members - view.members


def _mode(
    view: MembershipView, state: QuorumState, has_quorum: bool, lock_at_start: bool
) -> tuple[bool, str]:
    """The shared rule: lock on a leave without quorum, unlock once the quorum is back."""
    if has_quorum:
        return False, "quorum present"
    if state.is_initial:
        if lock_at_start:
            return True, "missing at start-up"
        return False, "missing at start-up, not locking before the first leave"
    if _left(view, state):
        return True, "lost on a leave"
    if state.partitioned:
        return True, "still missing"
    return False, "missing, but no member left since the node was running"


def _never_partitioned_state(view: MembershipView, state: QuorumState) -> QuorumState:
    return QuorumState(
        max_seen=max(state.max_seen, len(view.members)),
        down_log=state.down_log,
        previous_members=view.members,
    )


@dataclass(frozen=True, slots=True)
class Strict:
    """Never partition on membership; rely on the hub's self-fencing (the default).

    Membership comes from etcd, so every node that can reach etcd sees the same members, and
    a node that cannot loses its lease and stops its children. That fencing, not a member
    count, keeps at most one copy of each child running, so this strategy never locks.

    Example::

        >>> view = MembershipView(frozenset({"n1"}), now=0.0, self_id="n1")
        >>> Strict().decide(view, QuorumState()).partitioned
        False
    """

    guarantees: ClassVar[frozenset[Guarantee]] = _FENCED
    #: no memory worth keeping across restarts: the quorum gate writes nothing to etcd
    persists_state: ClassVar[bool] = False

    def decide(self, view: MembershipView, state: QuorumState) -> QuorumDecision:
        """Return "not partitioned" and the state updated with ``view``."""
        return QuorumDecision(
            partitioned=False,
            reason="strict: membership never partitions; lease loss fences the node",
            state=_never_partitioned_state(view, state),
        )

    def next_expiry(self, state: QuorumState) -> None:
        """``None``: no timer; only membership changes are decided."""
        return None

    def reset_cluster_size(self, state: QuorumState, size: int) -> QuorumState:
        """Raises :class:`~strategies.errors.NoClusterSize`: there is no quorum to reset."""
        raise NoClusterSize("Strict", "it never partitions on membership")


@dataclass(frozen=True, slots=True)
class Availability:
    """Never partition, and keep children running through an etcd outage.

    A marker for the hub: with this strategy a node that cannot reach etcd keeps its
    children running instead of stopping them when its lease may have expired. Choose it when
    a child briefly running twice is cheaper than every child stopping while etcd is down.

    Warning:
        It does **not** guarantee at most one owner. When the outage outlasts the lease TTL,
        the other nodes see this node leave and start its children again, so two copies run
        until this node reconnects, finds it lost the children, and stops its copies.
        ``AT_MOST_ONE_OWNER`` is absent from ``guarantees``.

    Example::

        >>> Guarantee.AT_MOST_ONE_OWNER in Availability().guarantees
        False
    """

    guarantees: ClassVar[frozenset[Guarantee]] = frozenset({Guarantee.AVAILABLE_DURING_OUTAGE})
    persists_state: ClassVar[bool] = False

    def decide(self, view: MembershipView, state: QuorumState) -> QuorumDecision:
        """Return "not partitioned" and the state updated with ``view``."""
        return QuorumDecision(
            partitioned=False,
            reason="availability: never partitions; children survive an etcd outage",
            state=_never_partitioned_state(view, state),
        )

    def next_expiry(self, state: QuorumState) -> None:
        """``None``: no timer; only membership changes are decided."""
        return None

    def reset_cluster_size(self, state: QuorumState, size: int) -> QuorumState:
        """Raises :class:`~strategies.errors.NoClusterSize`: there is no quorum to reset."""
        raise NoClusterSize("Availability", "it never partitions on membership")


@dataclass(frozen=True, slots=True)
class StaticQuorum:
    """The quorum is present while at least ``quorum_size`` members are live, self included.

    Args:
        quorum_size: the member count needed, an int >= 1.
        startup_confirm: on the first decision, lock at once if the quorum is missing.
            Without it a node starts running and locks only after a leave.

    Raises:
        ValueError: ``quorum_size`` is not an int >= 1 or ``startup_confirm`` not a bool.

    Warning:
        A fixed count does not follow autoscaling; see the module's warnings.
    """

    guarantees: ClassVar[frozenset[Guarantee]] = _FENCED
    #: a fixed count decides; nothing a restart resumes (``max_seen``, the down log) matters
    persists_state: ClassVar[bool] = False

    quorum_size: int
    startup_confirm: bool = False

    def __post_init__(self) -> None:
        if not _is_int(self.quorum_size) or self.quorum_size < 1:
            raise ValueError(f"quorum_size must be an int >= 1, got {self.quorum_size!r}")
        if not isinstance(self.startup_confirm, bool):
            raise ValueError(f"startup_confirm must be a bool, got {self.startup_confirm!r}")

    def decide(self, view: MembershipView, state: QuorumState) -> QuorumDecision:
        """Lock on a leave below ``quorum_size``; unlock at or above it."""
        live = len(view.members)
        has_quorum = live >= self.quorum_size
        partitioned, why = _mode(view, state, has_quorum, self.startup_confirm)
        return QuorumDecision(
            partitioned=partitioned,
            reason=f"static quorum: {live} live members, quorum {self.quorum_size}: {why}",
            state=QuorumState(
                max_seen=max(state.max_seen, live),
                down_log=state.down_log,
                previous_members=view.members,
                partitioned=partitioned,
            ),
            has_quorum=has_quorum,
        )

    def next_expiry(self, state: QuorumState) -> None:
        """``None``: no timer; only membership changes are decided."""
        return None

    def reset_cluster_size(self, state: QuorumState, size: int) -> QuorumState:
        """Raises :class:`~strategies.errors.NoClusterSize`: the quorum is configuration."""
        raise NoClusterSize("StaticQuorum", "quorum_size is configuration; change it there")


@dataclass(frozen=True, slots=True)
class DynamicQuorum:
    """The quorum is the share of the recent cluster still live, in percent.

    A node that leaves goes into the down log with the time it left; entries at least
    ``threshold_time`` old are pruned and a node that rejoins (or is live) leaves the log.
    With ``down`` log entries and ``connected`` live members::

        remaining = 100 - down / (connected + down) * 100

    and the quorum is missing when ``remaining < quorum_size`` (compared exactly, in
    fractions, so 8 of 10 is exactly 80). The first decision never locks, whatever the log.

    Args:
        quorum_size: the percentage that must remain, ``0 < quorum_size <= 100``.
        threshold_time: seconds a lost node counts as down, > 0. Default 30.

    Raises:
        ValueError: ``quorum_size`` or ``threshold_time`` out of range or not a number.

    Warning:
        Scale down one node at a time and wait ``threshold_time`` between steps, or the
        losses add up to a partition. After ``threshold_time`` the losses are forgiven.
    """

    guarantees: ClassVar[frozenset[Guarantee]] = _FENCED
    #: the down log must survive a restart, or a node that restarts forgives every loss
    persists_state: ClassVar[bool] = True

    quorum_size: float
    threshold_time: float = 30.0

    def __post_init__(self) -> None:
        size, threshold = self.quorum_size, self.threshold_time
        if (
            isinstance(size, bool)
            or not isinstance(size, int | float)
            or not math.isfinite(size)
            or not 0 < size <= 100
        ):
            raise ValueError(f"quorum_size must be a percentage in (0, 100], got {size!r}")
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, int | float)
            or not math.isfinite(threshold)
            or threshold <= 0
        ):
            raise ValueError(f"threshold_time must be a number of seconds > 0, got {threshold!r}")

    def decide(self, view: MembershipView, state: QuorumState) -> QuorumDecision:
        """Log the nodes that left, prune the log, and lock if too little remains."""
        horizon = view.now - self.threshold_time
        log = {
            node_id: went_down
            for node_id, went_down in state.down_log
            if went_down > horizon and node_id not in view.members
        }
        for node_id in _left(view, state):
            log[node_id] = view.now
        connected, down = len(view.members), len(log)
        remaining = Fraction(100 * connected, connected + down)
        has_quorum = remaining >= Fraction(self.quorum_size)
        partitioned, why = _mode(view, state, has_quorum, lock_at_start=False)
        return QuorumDecision(
            partitioned=partitioned,
            reason=(
                f"dynamic quorum: {connected} live, {down} down in the last "
                f"{self.threshold_time:g} s, {float(remaining):.4g}% remaining, quorum "
                f"{self.quorum_size:g}%: {why}"
            ),
            state=QuorumState(
                max_seen=max(state.max_seen, connected),
                down_log=tuple(log.items()),
                previous_members=view.members,
                partitioned=partitioned,
            ),
            has_quorum=has_quorum,
        )

    def next_expiry(self, state: QuorumState) -> float | None:
        """Return when the oldest down-log entry stops counting, or None if the log is empty.

        A partitioned hub re-decides then: the decision may clear partition mode.
        """
        if not state.down_log:
            return None
        return min(went_down for _, went_down in state.down_log) + self.threshold_time

    def reset_cluster_size(self, state: QuorumState, size: int) -> QuorumState:
        """Raises :class:`~strategies.errors.NoClusterSize`: losses expire on their own."""
        raise NoClusterSize(
            "DynamicQuorum", "a loss stops counting threshold_time seconds after it"
        )


@dataclass(frozen=True, slots=True)
class MajorityQuorum:
    """The quorum is a majority of the largest cluster seen: ``max_seen // 2 + 1`` members.

    ``max_seen`` starts, on the first decision, at the largest of ``initial_cluster_size``,
    the live member count and any stored ``max_seen``. With ``track_max_size`` it then
    follows the cluster up; it never follows it down except through
    :meth:`reset_cluster_size`. The quorum for 1, 2, 3 and 5 nodes is 1, 2, 2 and 3, so of a
    5-node cluster split 3-2 only the 3 keep running. The first decision never locks; its
    ``has_quorum`` still says whether the quorum is there.

    Args:
        initial_cluster_size: the cluster size to expect before any is seen, an int >= 1.
        track_max_size: let ``max_seen`` grow with the cluster.

    Raises:
        ValueError: ``initial_cluster_size`` is not an int >= 1 or ``track_max_size`` not a
            bool.

    Warning:
        Downsizing needs :meth:`reset_cluster_size`, or the smaller cluster keeps needing a
        majority of the old one.
    """

    guarantees: ClassVar[frozenset[Guarantee]] = _FENCED
    #: ``max_seen`` must survive a restart, or a restarted minority would be a majority
    persists_state: ClassVar[bool] = True

    initial_cluster_size: int = 1
    track_max_size: bool = True

    def __post_init__(self) -> None:
        size = self.initial_cluster_size
        if not _is_int(size) or size < 1:
            raise ValueError(f"initial_cluster_size must be an int >= 1, got {size!r}")
        if not isinstance(self.track_max_size, bool):
            raise ValueError(f"track_max_size must be a bool, got {self.track_max_size!r}")

    @staticmethod
    def quorum(max_seen: int) -> int:
        """Return the members needed for a majority of ``max_seen``: ``max_seen // 2 + 1``."""
        return max_seen // 2 + 1

    def decide(self, view: MembershipView, state: QuorumState) -> QuorumDecision:
        """Update ``max_seen``; lock on a leave below its majority, unlock at or above."""
        live = len(view.members)
        if state.is_initial:
            max_seen = max(state.max_seen, self.initial_cluster_size, live)
        elif self.track_max_size:
            max_seen = max(state.max_seen, live)
        else:
            max_seen = state.max_seen or self.initial_cluster_size
        quorum = self.quorum(max_seen)
        has_quorum = live >= quorum
        partitioned, why = _mode(view, state, has_quorum, lock_at_start=False)
        return QuorumDecision(
            partitioned=partitioned,
            reason=(
                f"majority quorum: {live} live members, quorum {quorum} "
                f"(max_seen {max_seen}): {why}"
            ),
            state=QuorumState(
                max_seen=max_seen,
                down_log=state.down_log,
                previous_members=view.members,
                partitioned=partitioned,
            ),
            has_quorum=has_quorum,
        )

    def next_expiry(self, state: QuorumState) -> None:
        """``None``: no timer; only membership changes are decided."""
        return None

    @staticmethod
    def reset_cluster_size(state: QuorumState, size: int) -> QuorumState:
        """Return ``state`` with ``max_seen`` set to ``size``, for an intentional downsize.

        ProcessHub's ``reset_cluster_size``. The hub stores the result and decides again:
        a node partitioned only because of the old size is then cleared.

        Example::

            >>> before = QuorumState(max_seen=5, previous_members=frozenset({"a", "b"}))
            >>> MajorityQuorum.quorum(before.max_seen)
            3
            >>> MajorityQuorum.quorum(MajorityQuorum.reset_cluster_size(before, 3).max_seen)
            2

        Raises:
            ValueError: ``size`` is not an int >= 1.
        """
        if not _is_int(size) or size < 1:
            raise ValueError(f"size must be an int >= 1, got {size!r}")
        return QuorumState(
            max_seen=size,
            down_log=state.down_log,
            previous_members=state.previous_members,
            partitioned=state.partitioned,
        )
