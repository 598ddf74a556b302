"""Migration strategies: what happens to a child's state when its owner changes.

A child moves when the ring gives it to another node (a node joined), when its node drains
(graceful stop), and on an explicit move. The hub executes the plan; a strategy only says
whether state travels with the child.

* :class:`ColdSwap` (default): the old owner stops the child and releases ownership; the
  new owner starts it from its spec (and from its last checkpoint, if the worker writes
  checkpoints).
* :class:`HotSwap`: the old owner stops the child, asks the stopped instance for its state
  (``handover_state()`` on the worker), and releases ownership and publishes the state in
  **one** transaction; the new owner reads the state in the same transaction that acquires
  ownership and starts the new instance with it (``ctx.state``). There is never a moment
  with two active instances, and the gap is one stop plus about two etcd round trips.

Example::

    Hub("rooms", migration=HotSwap(state_timeout=2.0))

    class Room:
        def __init__(self) -> None:
            self.members: list[str] = []
        async def run(self, ctx):
            self.members = (ctx.state or {}).get("members", [])
            ...
        def handover_state(self):              # called after run() was cancelled
            return {"members": self.members}   # JSON or bytes

**Warning**: handed-over state lives in etcd with a short lease (``handover_ttl``): if no
node picks the child up in that time (say the whole cluster went down), the state is gone
and the next owner starts from the last checkpoint. A crash (kill -9) gives no chance to
hand over: write checkpoints (``await ctx.checkpoint(state)``) for state that must survive
crashes. State must fit in an etcd request (1.5 MiB by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

from strategies.base import Guarantee


@runtime_checkable
class MigrationStrategy(Protocol):
    """How children move; the hub reads these attributes, strategies do no I/O."""

    @property
    def guarantees(self) -> frozenset[Guarantee]: ...

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
    """Stop, release, start elsewhere from the spec (and the last checkpoint)."""

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
