"""Redundancy: how many instances of each child run, and which one is active.

* :class:`Singularity` (default): one instance per child, at most one at a time.
* :class:`Replication`: ``factor`` instances (or ``"cluster"``: one per active member) on
  the first distinct nodes the distribution strategy picks for the child. The first of
  them is the **primary**: it holds ``owners/{child_id}`` (and its fencing token), exactly
  like a singular child. The others hold ``replicas/{child_id}/{node}`` on their lease.

  * ``mode="active_passive"``: only the primary is active; replicas run with
    ``ctx.role == "passive"``. When the primary is lost or moves, the next node in order
    acquires the owner key under the same at-most-one rule and its instance is restarted as
    active (carrying its own ``handover_state()`` if nothing fresher was handed over).
  * ``mode="active_active"`` (ProcessHub's default): every instance runs with
    ``ctx.role == "active"``; the primary is only the one lookups return first.

Both are :class:`~strategies.base.RedundancyStrategy` values (``guarantees``, ``mode``,
``count``); any object with those members is one too (``examples/custom_redundancy.py``).

Example (``Hub("rooms", redundancy=Replication(factor=2, mode="active_passive"))``)::

    >>> Singularity().count(5), Replication(3).count(5), Replication("cluster").count(5)
    (1, 3, 5)
    >>> Replication("cluster").count(0)  # asked before any member is seen
    1
    >>> Replication(2, mode="active_passive").guarantees == {Guarantee.AT_MOST_ONE_OWNER}
    True
    >>> Replication(2).guarantees  # active/active: every instance is active
    frozenset()

Defaults: ``Replication(factor=2, mode="active_active")`` (ProcessHub's).

**Warning**: active/active gives up at-most-one: several instances of a child are active at
once by design. Roles change by restarting an instance (a passive instance is stopped and
an active one started on the same node), so keep ``handover_state()`` cheap.
``Replication("cluster")`` changes its count with the membership, so it cannot be combined
with ``Guided``, whose child mappings list a fixed number of nodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from strategies.base import Guarantee, RedundancyMode

Mode = RedundancyMode


@dataclass(frozen=True, slots=True)
class Singularity:
    """One instance per child (the default)."""

    guarantees: ClassVar[frozenset[Guarantee]] = frozenset({Guarantee.AT_MOST_ONE_OWNER})
    mode: ClassVar[Mode] = "active_passive"

    def count(self, members: int) -> int:
        """Instances per child with ``members`` active members."""
        return 1


@dataclass(frozen=True, slots=True)
class Replication:
    """``factor`` instances per child; see the module docstring."""

    factor: int | Literal["cluster"] = 2
    mode: Mode = "active_active"

    def __post_init__(self) -> None:
        if self.factor != "cluster" and (not isinstance(self.factor, int) or self.factor < 1):
            raise ValueError("factor must be an int >= 1 or 'cluster'")
        if self.mode not in ("active_passive", "active_active"):
            raise ValueError("mode must be 'active_passive' or 'active_active'")

    @property
    def guarantees(self) -> frozenset[Guarantee]:
        """Active/passive keeps at-most-one *active* instance; active/active does not."""
        if self.mode == "active_passive":
            return frozenset({Guarantee.AT_MOST_ONE_OWNER})
        return frozenset()

    def count(self, members: int) -> int:
        """Instances per child with ``members`` active members (at least 1)."""
        if self.factor == "cluster":
            return max(1, members)
        return self.factor
