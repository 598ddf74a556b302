"""Pure strategies: no I/O, no asyncio, no hidden state.

The hub asks a :class:`DistributionStrategy` for a :class:`Placer` built from the active
members, and places each child on ``placer.owner(child_id)``. :class:`ConsistentHashing`
(a weighted :class:`HashRing`) is the default; :class:`Guided` (caller-named nodes) and
:class:`BoundedLoad` (a ring with capacities) need more input, see their modules.

A :class:`PartitionStrategy` decides from a :class:`MembershipView` and the
:class:`QuorumState` it returned last time whether the node must stop its children.
:class:`Strict` is the default; :class:`Availability`, :class:`StaticQuorum`,
:class:`DynamicQuorum` and :class:`MajorityQuorum` are the alternatives.
"""

from strategies.base import (
    NO_PINS,
    ChildSetAware,
    DistributionStrategy,
    Guarantee,
    MembershipView,
    PartitionStrategy,
    PlacementInput,
    Placer,
    QuorumDecision,
    QuorumState,
    RedundancyMode,
    RedundancyStrategy,
    RequiresChildMapping,
)
from strategies.bounded_load import BoundedLoad, BoundedLoadPlacer
from strategies.distribution import ConsistentHashing
from strategies.errors import (
    ChildMappingMismatch,
    ChildReplicationMismatch,
    InvalidChildMapping,
    MissingChildMapping,
    PlacementError,
)
from strategies.guided import Fallback, Guided, GuidedPlacer, validate_mapping
from strategies.hashing import stable_hash
from strategies.partition import (
    Availability,
    DynamicQuorum,
    MajorityQuorum,
    StaticQuorum,
    Strict,
)
from strategies.pins import PinnedPlacer
from strategies.redundancy import Replication, Singularity
from strategies.ring import DEFAULT_VNODES_PER_WEIGHT, HashRing

__all__ = [
    "DEFAULT_VNODES_PER_WEIGHT",
    "NO_PINS",
    "Availability",
    "BoundedLoad",
    "BoundedLoadPlacer",
    "ChildMappingMismatch",
    "ChildReplicationMismatch",
    "ChildSetAware",
    "ConsistentHashing",
    "DistributionStrategy",
    "DynamicQuorum",
    "Fallback",
    "Guarantee",
    "Guided",
    "GuidedPlacer",
    "HashRing",
    "InvalidChildMapping",
    "MajorityQuorum",
    "MembershipView",
    "MissingChildMapping",
    "PartitionStrategy",
    "PinnedPlacer",
    "PlacementError",
    "PlacementInput",
    "Placer",
    "QuorumDecision",
    "QuorumState",
    "RedundancyMode",
    "RedundancyStrategy",
    "Replication",
    "RequiresChildMapping",
    "Singularity",
    "StaticQuorum",
    "Strict",
    "stable_hash",
    "validate_mapping",
]
