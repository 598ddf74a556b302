"""Migration strategies: configuration of how a child moves, not a decision procedure.

A migration strategy decides nothing and the hub never calls it: it is four values the hub
reads (:class:`MigrationStrategy`). The hub has one way to move a child, used whenever the
owner of a child with a spec changes on purpose (the distribution strategy places it
elsewhere after a join, its node drains, an explicit ``move``):

1. the old owner stops the worker; with ``handover``, it then asks the stopped instance for
   ``handover_state()``, waiting at most ``state_timeout`` seconds for an async one;
2. it deletes ``owners/{child_id}`` in a transaction guarded by its fencing token; with
   ``handover`` and a state, the same transaction writes ``handover/{child_id}`` under a
   lease of ``handover_ttl`` seconds;
3. the new owner creates ``owners/{child_id}`` in a transaction that also reads the
   handed-over state and the last checkpoint, and starts the worker with the fresher of
   the two as ``ctx.state``.

Step 1 ends before step 2 commits, and step 3 succeeds only after it, so no child ever has
two active instances during a migration (``AT_MOST_ONE_OWNER``); the gap is one stop plus
about two etcd round trips. A crash is not a migration: the next owner starts from the
spec and the last checkpoint.

* :class:`ColdSwap` (default): ``handover=False``. The new owner starts from the spec and
  the last checkpoint (``await ctx.checkpoint(state)``), if the worker writes any.
* :class:`HotSwap`: ``handover=True``, ``state_timeout=3.0``, ``handover_ttl=60``. The
  state travels with the child.

``state_timeout`` also bounds an async ``handover_state()`` when the hub restarts a local
instance as the primary (a promoted replica, or a worker kept through an etcd outage under
``Availability``); with ``ColdSwap``'s ``0.0`` only a synchronous one is read then.

A custom migration object provides the four members of :class:`MigrationStrategy` with
these values, or ``HubConfig`` raises ``ConfigError`` (:mod:`strategies.checks`):
``guarantees`` a frozenset of :class:`~strategies.base.Guarantee`, ``handover`` a bool,
``state_timeout`` a finite number >= 0 (> 0 with handover) and ``handover_ttl`` an int >= 0
(>= 5 with handover). It cannot change the procedure: when or in which order children
move is the distribution strategy's and the hub's business. See
``examples/custom_migration.py``.

Example::

    >>> HotSwap().handover, ColdSwap().handover
    (True, False)
    >>> isinstance(HotSwap(state_timeout=10.0), MigrationStrategy)
    True

and a worker whose state travels (``Hub("rooms", migration=HotSwap())``)::

    class Room:
        def __init__(self) -> None:
            self.members: list[str] = []
        async def run(self, ctx):
            self.members = (ctx.state or {}).get("members", [])
            ...
        def handover_state(self):              # called after run() was cancelled
            return {"members": self.members}   # JSON or bytes

Warning:
    Handed-over state lives in etcd with a short lease (``handover_ttl``): if no node picks
    the child up in that time (say the whole cluster went down), the state is gone and the
    next owner starts from the last checkpoint. A crash (kill -9) gives no chance to hand
    over: write checkpoints for state that must survive crashes. State must fit in an etcd
    request (1.5 MiB by default). Every node must use the same values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

from strategies.base import Guarantee


@runtime_checkable
class MigrationStrategy(Protocol):
    """The settings of the hub's one migration procedure (see the module docstring).

    The hub reads these four attributes, on every migration; nothing is called.
    """

    @property
    def guarantees(self) -> frozenset[Guarantee]:
        """The properties a migration keeps (``AT_MOST_ONE_OWNER`` for both built-ins)."""
        ...

    @property
    def handover(self) -> bool:
        """Collect the stopped instance's state and hand it to the next owner."""
        ...

    @property
    def state_timeout(self) -> float:
        """Seconds ``handover_state()`` may take before the child moves without state."""
        ...

    @property
    def handover_ttl(self) -> int:
        """Seconds handed-over state waits in etcd for the next owner."""
        ...


@dataclass(frozen=True, slots=True)
class ColdSwap:
    """Stop, release, start elsewhere from the spec (and the last checkpoint).

    ``state_timeout`` and ``handover_ttl`` are 0: no state is handed over.
    """

    guarantees: ClassVar[frozenset[Guarantee]] = frozenset({Guarantee.AT_MOST_ONE_OWNER})
    handover: ClassVar[bool] = False
    state_timeout: float = 0.0
    handover_ttl: int = 0


@dataclass(frozen=True, slots=True)
class HotSwap:
    """Stop, hand the state over in the releasing transaction, start elsewhere with it.

    Args:
        state_timeout: how long ``handover_state()`` may take (like ProcessHub's
            ``handover_data_wait``); after it the child moves without state.
        handover_ttl: lease TTL of the handed-over state in etcd (ProcessHub's
            ``retention`` is an upper bound on waiting; here it bounds how long an
            unclaimed state is kept).
    """

    guarantees: ClassVar[frozenset[Guarantee]] = frozenset({Guarantee.AT_MOST_ONE_OWNER})
    handover: ClassVar[bool] = True
    state_timeout: float = 3.0
    handover_ttl: int = 60

    def __post_init__(self) -> None:
        if not self.state_timeout > 0:
            raise ValueError("state_timeout must be > 0")
        if not isinstance(self.handover_ttl, int) or self.handover_ttl < 5:
            raise ValueError("handover_ttl must be an int >= 5 (seconds)")
