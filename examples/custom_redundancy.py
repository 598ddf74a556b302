"""A custom redundancy strategy: standbys that grow with the cluster.

Every child runs one active primary, plus one passive standby per ``members_per_standby``
active members, up to ``max_standbys``: none on one or two nodes, one on three to five, two
from six on (with the defaults). ``Replication`` has a fixed factor or one instance per
member; this sits between the two.

A redundancy strategy is three members the hub reads, and a plain class is enough (no base
class, nothing to register): ``count(members)``, the instances per child when the cluster
has that many active members (an int >= 1, for 0 members too); ``mode``; ``guarantees``.
The hub puts the instances on the first ``count`` distinct nodes the distribution strategy
gives for the child, the primary first; a change of count starts or stops standbys.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from strategies import Guarantee


@dataclass(frozen=True)
class GrowingStandbys:
    """A ``strategies.RedundancyStrategy``: ``Hub(..., redundancy=GrowingStandbys())``."""

    #: only the primary is active, so at most one active instance per child
    guarantees: ClassVar[frozenset[Guarantee]] = frozenset({Guarantee.AT_MOST_ONE_OWNER})
    mode: ClassVar[Literal["active_passive"]] = "active_passive"

    members_per_standby: int = 3
    max_standbys: int = 2

    def __post_init__(self) -> None:
        if self.members_per_standby < 1 or self.max_standbys < 0:
            raise ValueError("members_per_standby must be >= 1 and max_standbys >= 0")

    def count(self, members: int) -> int:
        return 1 + min(self.max_standbys, members // self.members_per_standby)
