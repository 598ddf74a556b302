"""Guided distribution: the caller names the nodes of every child.

With :class:`Guided`, each start names the node(s) every child runs on: a *child mapping*
``child id -> [node id, ...]`` with one node per replica, checked by :func:`validate_mapping`
with ProcessHub's errors in ProcessHub's order (:mod:`strategies.errors`). The hub stores each
child's node list with its spec; the :class:`GuidedPlacer` reads it back and answers with the
mapped nodes that are live members, in mapping order.

Unlike ProcessHub, where the children of a dead guided node silently disappear, a child whose
mapped nodes are all down is kept, per ``fallback``:

* ``"wait"`` (default): it stays unplaced (``owner()`` is ``None``) until one of its nodes
  is live again, then starts there. Nothing runs on a node it was not mapped to.
* ``"ring"``: it runs on its consistent-hash owner among the live members (as
  :class:`~strategies.distribution.ConsistentHashing` would place it) until a mapped node is
  back. Replicas missing because mapped nodes are down are topped up from the ring too.

A child with no mapping entry at all is treated the same way (unplaced, or on the ring).

Example::

    >>> from strategies.base import PlacementInput
    >>> mapping = {"billing": ["node-1"], "search": ["node-2"]}
    >>> validate_mapping(["billing", "search"], mapping, replicas=1)
    >>> placer = Guided().placer(PlacementInput({"node-1": 1, "node-2": 1}, pins=mapping))
    >>> placer.owner("billing"), placer.owner("search")
    ('node-1', 'node-2')
    >>> one_node = PlacementInput({"node-1": 1}, pins=mapping)
    >>> print(Guided().placer(one_node).owner("search"))  # waits for node-2
    None
    >>> Guided(fallback="ring").placer(one_node).owner("search")
    'node-1'
    >>> validate_mapping(["billing", "mail"], mapping, replicas=1)
    Traceback (most recent call last):
    ...
    strategies.errors.ChildMappingMismatch: no node mapping for child 'mail'

Defaults: ``fallback="wait"``; ``vnodes_per_weight=512`` for the ring fallback (only built
when ``fallback="ring"``, and reused while the members do not change).

Warning:
    Mapped nodes are not checked against the members: a typo in a node id is a child that
    waits forever under ``"wait"``, or never leaves the ring under ``"ring"``. With
    ``"ring"``, a child whose node died runs elsewhere, so a child bound to a node for a
    reason (local disk, a device) should use ``"wait"``. A mapping decides placement only;
    the migration strategy still decides how a child moves back when its node returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Final, Literal, final

from strategies._ring_cache import reuse_or_build
from strategies.base import Guarantee, PlacementInput
from strategies.errors import (
    ChildMappingMismatch,
    ChildReplicationMismatch,
    InvalidChildMapping,
    MissingChildMapping,
)
from strategies.ring import DEFAULT_VNODES_PER_WEIGHT, HashRing, _check_weight

__all__ = ["Fallback", "Guided", "GuidedPlacer", "validate_mapping"]

#: What a guided child does while none of its mapped nodes is live.
Fallback = Literal["wait", "ring"]
_FALLBACKS: Final = ("wait", "ring")


def _check_entry(child_id: object, node_ids: object) -> None:
    if not isinstance(child_id, str) or not child_id:
        raise InvalidChildMapping(f"child mapping keys must be child ids, got {child_id!r}")
    if not isinstance(node_ids, list | tuple):
        raise InvalidChildMapping(
            f"child {child_id!r} must map to a list of node ids, got {type(node_ids).__name__}"
        )
    for node_id in node_ids:
        if not isinstance(node_id, str) or not node_id:
            raise InvalidChildMapping(f"child {child_id!r}: {node_id!r} is not a node id")
    if len(set(node_ids)) != len(node_ids):
        raise InvalidChildMapping(f"child {child_id!r} names a node twice: {list(node_ids)!r}")


def validate_mapping(child_ids: Sequence[str], mapping: object, replicas: int) -> None:
    """Check a child mapping for a start of ``child_ids`` with ``replicas`` copies each.

    The checks run in ProcessHub's order, the first failure raising:

    1. ``mapping`` is None: :class:`~strategies.errors.MissingChildMapping`;
    2. it is not a mapping (a list of pairs is not), or an entry is not a non-empty child
       id mapped to a list or tuple of distinct node ids:
       :class:`~strategies.errors.InvalidChildMapping`;
    3. children without an entry: :class:`~strategies.errors.ChildMappingMismatch`, naming
       them all;
    4. an entry whose length is not ``replicas``:
       :class:`~strategies.errors.ChildReplicationMismatch`.

    Entries for other children are allowed (and checked by step 2). Whether the nodes are
    members is not checked: a child may be mapped to a node that has not joined yet.

    Raises:
        PlacementError: one of the four subclasses above.
        ValueError: ``replicas`` is not an int >= 1.
    """
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 1:
        raise ValueError(f"replicas must be an int >= 1, got {replicas!r}")
    if mapping is None:
        raise MissingChildMapping()
    if not isinstance(mapping, Mapping):
        raise InvalidChildMapping(
            f"child mapping must be a mapping of child id to node ids, got {type(mapping).__name__}"
        )
    for child_id, node_ids in mapping.items():
        _check_entry(child_id, node_ids)
    missing = [child_id for child_id in child_ids if child_id not in mapping]
    if missing:
        raise ChildMappingMismatch(missing)
    for child_id in child_ids:
        actual = len(mapping[child_id])
        if actual != replicas:
            raise ChildReplicationMismatch(child_id, replicas, actual)


@final
class GuidedPlacer:
    """Places children on their mapped nodes, for one fixed set of members.

    Args:
        members: the live members (node id -> weight; the weights only matter to the ring).
        mapping: child id -> node ids, in preference order. Read on every lookup, not copied,
            so it may be a read-only view over the hub's current specs; ``None`` is empty.
        fallback: ``"wait"`` or ``"ring"``, see the module docs.
        ring: the ring over ``members`` for ``"ring"`` (built when not given); unused by
            ``"wait"``.

    Raises:
        ValueError: a member id or weight is malformed, ``fallback`` is unknown, or ``ring``
            is not over ``members``.
    """

    __slots__ = ("_fallback", "_mapping", "_members", "_ring")

    def __init__(
        self,
        members: Mapping[str, int],
        mapping: Mapping[str, Sequence[str]] | None = None,
        *,
        fallback: Fallback = "wait",
        ring: HashRing | None = None,
    ) -> None:
        if fallback not in _FALLBACKS:
            raise ValueError(f"fallback must be 'wait' or 'ring', got {fallback!r}")
        for node_id, weight in members.items():
            _check_weight(node_id, weight)
        if fallback == "ring":
            if ring is None:
                ring = HashRing(members)
            elif ring.weights != members:
                raise ValueError("ring must be built over the same members")
        self._members = frozenset(members)
        self._mapping: Mapping[str, Sequence[str]] = {} if mapping is None else mapping
        self._fallback = fallback
        self._ring = ring if fallback == "ring" else None

    @property
    def fallback(self) -> Fallback:
        """What a child does while none of its mapped nodes is live."""
        return "ring" if self._ring is not None else "wait"

    def owner(self, child_id: str) -> str | None:
        """Return the first live mapped node, else the ring owner or ``None`` (``"wait"``)."""
        members = self._members
        for node_id in self._mapping.get(child_id, ()):
            if node_id in members:
                return node_id
        return self._ring.owner(child_id) if self._ring is not None else None

    def owners(self, child_id: str, n: int = 1) -> tuple[str, ...]:
        """Return up to ``n`` live mapped nodes in mapping order, the owner first.

        With ``"ring"``, fewer than ``min(n, members)`` live mapped nodes are topped up with
        the next ring nodes; with ``"wait"`` the result may be short, or ``()``.

        Raises:
            ValueError: ``n`` is below 1.
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        members = self._members
        wanted = min(n, len(members))
        found: dict[str, None] = {}  # an ordered set
        for node_id in self._mapping.get(child_id, ()):
            if len(found) == wanted:
                break
            if node_id in members:
                found[node_id] = None
        if self._ring is not None and len(found) < wanted:
            for node_id in self._ring.successors(child_id):
                found.setdefault(node_id, None)
                if len(found) == wanted:
                    break
        return tuple(found)


@dataclass(frozen=True, slots=True)
class Guided:
    """Place each child on the nodes its child mapping names.

    Args:
        fallback: ``"wait"`` (default) or ``"ring"``: what a child does while none of its
            mapped nodes is live.
        vnodes_per_weight: ring points per unit of weight, for ``"ring"``.

    Raises:
        ValueError: ``fallback`` is unknown or ``vnodes_per_weight`` is not an int >= 1.
    """

    guarantees: ClassVar[frozenset[Guarantee]] = frozenset(
        {Guarantee.AT_MOST_ONE_OWNER, Guarantee.MINIMAL_MOVEMENT, Guarantee.DETERMINISTIC}
    )

    fallback: Fallback = "wait"
    vnodes_per_weight: int = DEFAULT_VNODES_PER_WEIGHT
    # A cache, not part of the value: the ring for the members of the last call.
    _last_ring: HashRing | None = field(
        default=None, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        if self.fallback not in _FALLBACKS:
            raise ValueError(f"fallback must be 'wait' or 'ring', got {self.fallback!r}")
        value = self.vnodes_per_weight
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"vnodes_per_weight must be an int >= 1, got {value!r}")

    def placer(self, placement: PlacementInput) -> GuidedPlacer:
        """Return a :class:`GuidedPlacer` for the members and the children's pins.

        ``placement.pins`` is the child mapping (what each spec stores); read lazily, not
        copied.

        Raises:
            ValueError: a node id is not a non-empty str or a weight is not an int >= 1.
        """
        members = placement.members
        ring = None
        if self.fallback == "ring":
            ring = reuse_or_build(self._last_ring, members, self.vnodes_per_weight)
            object.__setattr__(self, "_last_ring", ring)
        return GuidedPlacer(members, placement.pins, fallback=self.fallback, ring=ring)

    def validate_child_mapping(
        self, child_ids: Sequence[str], mapping: object, replicas: int
    ) -> None:
        """:func:`validate_mapping`: every start must map each child to ``replicas`` nodes
        (this makes Guided a :class:`~strategies.base.RequiresChildMapping` strategy)."""
        validate_mapping(child_ids, mapping, replicas)

    @staticmethod
    def validate(child_ids: Sequence[str], mapping: object, replicas: int) -> None:
        """:func:`validate_mapping`, for callers holding only the strategy."""
        validate_mapping(child_ids, mapping, replicas)
