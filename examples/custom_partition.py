"""A custom partition strategy: run children only while a witness node is a member.

Say the cluster spans two sites and must never run from the standby site alone: make a
node of the primary site the witness. Every node that does not see the witness among the
members stops its children (and refuses starts) until it is back. The witness itself
always sees itself, so it never stops.

A partition strategy is five members the hub reads (``strategies.PartitionStrategy`` says
when it calls each): ``decide(view, state)``, which must be pure; ``persists_state``,
whether the hub must keep ``state`` across a restart of the node; ``next_expiry(state)``,
when to decide again without a membership change; ``reset_cluster_size(state, size)``, for
``Hub.reset_cluster_size``; and ``guarantees``.

Warning: the witness is a single point of failure on purpose: while it is down, or cut off
from etcd, nothing runs anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from strategies import Guarantee, MembershipView, NoClusterSize, QuorumDecision, QuorumState


@dataclass(frozen=True)
class Witness:
    """A ``strategies.PartitionStrategy``: ``Hub(..., partition=Witness("site-a-1"))``."""

    #: the hub's self-fencing stays in force: a node that loses its lease still stops
    guarantees: ClassVar[frozenset[Guarantee]] = frozenset({Guarantee.AT_MOST_ONE_OWNER})
    #: each decision reads the current members only: nothing to keep across a restart
    persists_state: ClassVar[bool] = False

    witness: str

    def decide(self, view: MembershipView, state: QuorumState) -> QuorumDecision:
        present = self.witness in view.members
        return QuorumDecision(
            partitioned=not present,
            reason=f"witness {self.witness!r} is {'' if present else 'not '}a member",
            state=QuorumState(
                max_seen=max(state.max_seen, len(view.members)),
                previous_members=view.members,
                partitioned=not present,
            ),
            has_quorum=present,
        )

    def next_expiry(self, state: QuorumState) -> None:
        return None  # only membership changes matter

    def reset_cluster_size(self, state: QuorumState, size: int) -> QuorumState:
        raise NoClusterSize("Witness", "it counts no members")
