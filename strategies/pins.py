"""Pins: children bound to named nodes, honoured around any placer.

A child is *pinned* when its spec names nodes (``processhub move --pin``, ``Hub.pin``, or a
``Guided`` child mapping). :class:`PinnedPlacer` wraps another :class:`~strategies.base.Placer`:
a pinned child belongs on its first pinned node that is a member, its instances on its
pinned members in pin order; with none of them a member it waits (``owner()`` is ``None``,
``owners()`` is ``()``). Unpinned children are placed by the wrapped placer.

Example::

    >>> from strategies.ring import HashRing
    >>> members = {"node-1": 1, "node-2": 1}
    >>> placer = PinnedPlacer(HashRing(members), members, {"billing": ["node-9", "node-2"]})
    >>> placer.owner("billing")  # node-9 is not a member: the next pin
    'node-2'
    >>> print(PinnedPlacer(HashRing(members), members, {"billing": ["node-9"]}).owner("billing"))
    None

Warning:
    Pins are not checked against the members: a pin to a node id that never joins is a
    child that waits forever.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import final

from strategies.base import Placer

__all__ = ["PinnedPlacer"]


@final
class PinnedPlacer:
    """Pinned children on their pinned members, the rest where ``inner`` puts them.

    Args:
        inner: the placer for unpinned children.
        members: the active members (node id -> weight); only the ids matter here.
        pins: child id -> pinned nodes in order of preference; read on every lookup, not
            copied (it may be a live, read-only view of the hub's specs).
    """

    __slots__ = ("_inner", "_members", "_pins")

    def __init__(
        self, inner: Placer, members: Mapping[str, int], pins: Mapping[str, Sequence[str]]
    ) -> None:
        self._inner = inner
        self._members = frozenset(members)
        self._pins = pins

    @property
    def inner(self) -> Placer:
        """The placer of unpinned children."""
        return self._inner

    def owner(self, child_id: str) -> str | None:
        """The first pinned member of a pinned child, else the inner placer's owner."""
        nodes = self._pins.get(child_id)
        if not nodes:
            return self._inner.owner(child_id)
        members = self._members
        return next((node_id for node_id in nodes if node_id in members), None)

    def owners(self, child_id: str, n: int = 1) -> tuple[str, ...]:
        """Up to ``n`` pinned members of a pinned child in pin order, else the inner
        placer's owners.

        Raises:
            ValueError: ``n`` is below 1.
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        nodes = self._pins.get(child_id)
        if not nodes:
            return self._inner.owners(child_id, n)
        members = self._members
        return tuple(node_id for node_id in nodes if node_id in members)[:n]
