"""The planner: the next action for one child, decided from one immutable view. Pure.

:func:`plan` (one instance per child) and :func:`plan_replicated` (replication > 1) take a
:class:`ChildView`: everything this node knows about the child at one registry revision
(spec, owner key, where the child belongs, what this incarnation holds and runs). They do
no I/O, keep no state and never look at the event that caused the call (level-triggered):
the same view always gives the same :class:`Action`. The reconciler builds the views and
executes the actions (:mod:`hub.core.executor`, :mod:`hub.core.replicas`).

Safety rules the planner guarantees (DESIGN.md "Guarantees"):

* ``ACQUIRE`` only over an absent owner key, on the node the child is placed on, with a
  lease to bind the key to, never while draining and never next to a local worker, but
  for a local replica being promoted and, in availability mode, a worker kept through an
  outage: both are restarted under the new token.
* An owner key of a previous incarnation of this node is foreign (left to expire); a key
  this node released is never adopted again from a cache that has not caught up.
* Once the cache has seen this node's acquire and no longer shows it, the answer is
  ``STOP_LOCAL``: never a write under a dead token.
* An undecodable owner key is cleared only when no lease holds it, by the node it is
  placed on.
* With one instance per child, a leftover ``replicas/{id}/{me}`` key (the cluster shrank
  below two members under ``Replication("cluster")``) never stays: the replica is
  promoted (``ACQUIRE``, whose txn deletes the key) if the child is placed here and
  nobody owns it, else stopped and its key withdrawn (``REPLICA_DOWN``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from hub.core.registry import OwnerEntry, SpecEntry


class Action(enum.Enum):
    """What the planner asks the executor to do for one child."""

    NOOP = "noop"
    ACQUIRE = "acquire"  # create owners/{id} on our lease, then start the worker
    ADOPT = "adopt"  # the cache shows we own it but we did not know: take it over
    RELEASE = "release"  # stop the local worker, then delete owners/{id} (fenced)
    STOP_LOCAL = "stop_local"  # a local worker without ownership: stop it, forget it
    CLEAR_FOREIGN = "clear_foreign"  # an undecodable owner key with no lease: delete it
    #: write replicas/{id}/{me} and start a non-primary instance; a parked replica's key is
    #: marked failed instead, and nothing starts
    REPLICA_UP = "replica_up"
    REPLICA_DOWN = "replica_down"  # stop the local replica, delete its key


@dataclass(frozen=True, slots=True)
class Self:
    """What the planner needs to know about this node."""

    node_id: str
    lease: int  # 0 while no valid lease is held
    draining: bool  # leaving, or partitioned: owns nothing, acquires nothing


class ChildView(NamedTuple):
    """Everything the planner sees of one child, at one registry revision. Immutable.

    A NamedTuple rather than a frozen dataclass: one is built per child per round, and a
    frozen dataclass costs about five times as much to construct.
    """

    me: Self
    #: ``specs/{id}`` as cached, or None
    spec: SpecEntry | None
    #: ``owners/{id}`` as cached, or None
    owner: OwnerEntry | None
    #: the fencing token if this node believes it owns the child
    owned_token: int | None = None
    #: whether the local supervisor has an instance of it (primary or replica)
    running: bool = False
    #: the revision the cache reflects
    cache_revision: int = 0
    #: the token of an ownership this node already gave up for the child (the cache may
    #: still show it until the watch catches up): never adopted again
    released_token: int | None = None
    #: :func:`plan`: the node the child is placed on (None: no eligible node)
    desired: str | None = None
    #: :func:`plan_replicated`: where its instances belong, primary first
    replica_set: tuple[str, ...] = ()
    #: whether the cache shows this node's ``replicas/{id}/{node}`` key
    my_replica: bool = False
    #: the local replica ran out of restart intensity (under this lease and spec)
    parked: bool = False
    #: the cache shows this node's replica key as ``failed``
    recorded_failed: bool = False
    #: availability mode: a worker kept running through a lease loss may be re-acquired
    #: (and restarted with a new token) if nobody owns the child
    adopt_running: bool = False


def _ownership(
    me: Self,
    owner: OwnerEntry | None,
    owned_token: int | None,
    cache_revision: int,
    released_token: int | None,
) -> bool | None:
    """Whether this node owns the child; None when it believed so but the cache, having
    seen its acquire, no longer shows it (ownership lost: stop the local instance)."""
    record = owner.record if owner is not None else None
    cache_says_mine = (
        me.lease != 0
        and owner is not None
        and record is not None
        and record.node_id == me.node_id
        and record.incarnation == me.lease
        and owner.create_revision != released_token
    )
    if owned_token is None:
        return cache_says_mine
    if cache_revision >= owned_token and not (
        cache_says_mine and owner is not None and owner.create_revision == owned_token
    ):
        return None
    return True


def plan(view: ChildView) -> Action:
    """Decide the next action for a child with one instance. Pure.

    Reads ``desired`` (not ``replica_set``); ``my_replica`` only to promote or withdraw
    a leftover replica.
    """
    # One unpacking: a NamedTuple's fields are slower to read one by one.
    me, spec, owner, owned_token, running, revision, released = view[:7]
    desired, my_replica = view.desired, view.my_replica
    mine = _ownership(me, owner, owned_token, revision, released)
    if mine is None:
        return Action.STOP_LOCAL
    if not mine and my_replica:
        # A replica of a time with more instances per child (Replication("cluster") at
        # one member): promoted as plan_replicated would, its key withdrawn by the acquire
        # txn; otherwise stopped and withdrawn.
        if (
            spec is not None
            and owner is None
            and desired == me.node_id
            and me.lease != 0
            and not me.draining
        ):
            return Action.ACQUIRE
        return Action.REPLICA_DOWN
    if spec is None:
        if mine:
            return Action.RELEASE
        return Action.STOP_LOCAL if running else Action.NOOP
    if mine:
        if owned_token is None:
            return Action.ADOPT
        if me.draining or (desired is not None and desired != me.node_id):
            # Placed elsewhere, or this node hands everything back (draining, no quorum).
            return Action.RELEASE
        return Action.NOOP
    if running:
        if (
            view.adopt_running
            and owner is None
            and desired == me.node_id
            and me.lease != 0
            and not me.draining
        ):
            return Action.ACQUIRE
        return Action.STOP_LOCAL
    if owner is None:
        if desired == me.node_id and me.lease != 0 and not me.draining:
            return Action.ACQUIRE
        return Action.NOOP
    if owner.record is None and owner.lease == 0 and desired == me.node_id and me.lease != 0:
        return Action.CLEAR_FOREIGN
    return Action.NOOP


def plan_replicated(view: ChildView) -> Action:
    """:func:`plan` for replication > 1. Pure.

    ``replica_set`` is where the child's instances belong, in order; its first node is the
    primary, which holds ``owners/{id}`` exactly like a singular child. ``running`` is
    whether a local instance exists (primary or replica); ``my_replica`` whether the cache
    shows this node's ``replicas/{id}/{node}`` key. A ``parked`` replica (out of restart
    intensity under this lease and spec) stays down, as a parked owner does, and its key
    says so (``recorded_failed`` once the cache shows that).
    """
    me, spec, owner, owned_token, running, revision, released = view[:7]
    replica_set, my_replica = view.replica_set, view.my_replica
    mine = _ownership(me, owner, owned_token, revision, released)
    if mine is None:
        return Action.STOP_LOCAL
    down = running or my_replica
    if spec is None:
        if mine:
            return Action.RELEASE
        return Action.REPLICA_DOWN if down else Action.NOOP
    primary = bool(replica_set) and replica_set[0] == me.node_id and not me.draining
    member = me.node_id in replica_set and not me.draining
    if mine:
        if owned_token is None:
            return Action.ADOPT
        return Action.NOOP if primary else Action.RELEASE
    if primary:
        # A local replica instance is promoted by the acquire (stopped, restarted active).
        return Action.ACQUIRE if owner is None and me.lease != 0 else Action.NOOP
    if member:
        if view.parked:  # stays down; REPLICA_UP only marks its key failed
            if my_replica and not view.recorded_failed:
                return Action.REPLICA_UP
            return Action.NOOP
        if not running and me.lease != 0:
            return Action.REPLICA_UP
        return Action.NOOP
    return Action.REPLICA_DOWN if down else Action.NOOP
