"""Pure placement strategies: no I/O, no asyncio, no hidden state.

The hub asks a :class:`DistributionStrategy` for a :class:`Placer` built from the active
members, and places each child on ``placer.owner(child_id)``. :class:`ConsistentHashing`
(a weighted :class:`HashRing`) is the default.
"""

from strategies.base import DistributionStrategy, Guarantee, Placer
from strategies.distribution import ConsistentHashing
from strategies.hashing import stable_hash
from strategies.ring import DEFAULT_VNODES_PER_WEIGHT, HashRing

__all__ = [
    "DEFAULT_VNODES_PER_WEIGHT",
    "ConsistentHashing",
    "DistributionStrategy",
    "Guarantee",
    "HashRing",
    "Placer",
    "stable_hash",
]
