"""Pure strategies: no I/O, no asyncio, no hidden state.

One family per concern, each a ``typing.Protocol`` in :mod:`strategies.base` (or
:mod:`strategies.migration`); a strategy is any object with the Protocol's members, and
:mod:`strategies.checks` says what the hub checks of it.

* Distribution: the hub asks a :class:`DistributionStrategy` for a :class:`Placer` built
  from one :class:`PlacementInput` (the active members, their capacities, the pins), and
  places each child on ``placer.owner(child_id)``. :class:`ConsistentHashing` (a weighted
  :class:`HashRing`) is the default; :class:`Guided` (caller-named nodes) and
  :class:`BoundedLoad` (a ring with capacities) need more input, see their modules.
* Redundancy: a :class:`RedundancyStrategy` says how many instances of a child run and
  whether the extra ones are active: :class:`Singularity` (default), :class:`Replication`.
* Migration: a :class:`MigrationStrategy` is configuration of the hub's one migration
  procedure: :class:`ColdSwap` (default), :class:`HotSwap`.
* Partition: a :class:`PartitionStrategy` decides from a :class:`MembershipView` and the
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
    NoClusterSize,
    PlacementError,
)
from strategies.guided import Fallback, Guided, GuidedPlacer, validate_mapping
from strategies.hashing import stable_hash
from strategies.migration import ColdSwap, HotSwap, MigrationStrategy
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
    "ColdSwap",
    "ConsistentHashing",
    "DistributionStrategy",
    "DynamicQuorum",
    "Fallback",
    "Guarantee",
    "Guided",
    "GuidedPlacer",
    "HashRing",
    "HotSwap",
    "InvalidChildMapping",
    "MajorityQuorum",
    "MembershipView",
    "MigrationStrategy",
    "MissingChildMapping",
    "NoClusterSize",
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
