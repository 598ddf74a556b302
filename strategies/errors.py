"""Errors strategies raise when their input is malformed or a request does not apply to them.

The tree (all are ``ValueError``: a bad argument, caught before anything is written)::

    PlacementError(ValueError)
    ├── MissingChildMapping        Guided: no mapping given
    ├── InvalidChildMapping        Guided: not a mapping, or an entry is not a list of node ids
    ├── ChildMappingMismatch       Guided: a child has no entry (.child_ids)
    └── ChildReplicationMismatch   Guided: an entry's length != replicas
                                   (.child_id, .expected, .actual)
    NoClusterSize(ValueError)      a partition strategy has no cluster size to reset
                                   (.strategy)

The four placement errors mirror ProcessHub's ``:missing_child_mapping``,
``:invalid_child_mapping``, ``:child_mapping_mismatch`` and ``:child_replication_mismatch``,
checked in that order. The hub reports :class:`NoClusterSize` as a
:class:`hub.errors.ConfigError`: asking for it is a mistake of configuration.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ChildMappingMismatch",
    "ChildReplicationMismatch",
    "InvalidChildMapping",
    "MissingChildMapping",
    "NoClusterSize",
    "PlacementError",
]


class PlacementError(ValueError):
    """Raised when the placement input a strategy was given cannot be used."""


class MissingChildMapping(PlacementError):
    """Raised when ``Guided`` placement is asked for without a child mapping."""

    def __init__(self) -> None:
        super().__init__("Guided distribution needs a child mapping (child id -> node ids)")


class InvalidChildMapping(PlacementError):
    """Raised when the child mapping is not a mapping of child id to a list of node ids."""


class ChildMappingMismatch(PlacementError):
    """Raised when children have no entry in the child mapping; ``.child_ids`` lists them."""

    def __init__(self, child_ids: Sequence[str]) -> None:
        self.child_ids = tuple(child_ids)
        shown = ", ".join(repr(child_id) for child_id in self.child_ids[:5])
        more = f" and {len(self.child_ids) - 5} more" if len(self.child_ids) > 5 else ""
        super().__init__(f"no node mapping for child {shown}{more}")


class ChildReplicationMismatch(PlacementError):
    """Raised when a child's node list is not as long as the replication factor."""

    def __init__(self, child_id: str, expected: int, actual: int) -> None:
        self.child_id = child_id
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"child {child_id!r} is mapped to {actual} node(s), but replicas is {expected}"
        )


class NoClusterSize(ValueError):
    """Raised by ``reset_cluster_size`` of a partition strategy that keeps no cluster size;
    ``.strategy`` names it."""

    def __init__(self, strategy: str, hint: str = "") -> None:
        self.strategy = strategy
        detail = f": {hint}" if hint else ""
        super().__init__(f"{strategy} keeps no cluster size to reset{detail}")
