"""What this node incarnation holds, per child: the one place that state lives.

The reconciler creates one :class:`Claims` and hands the same object to its executors and
to the owner-record writer; they update its dicts in place (never rebind them), all on the
event loop, so every reader sees the same state. Nothing here does I/O or creates tasks.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Claims:
    """Ownership, released ownership and parked replicas of this node incarnation."""

    #: child id -> fencing token of every child this incarnation owns
    owned: dict[str, int] = field(default_factory=dict)
    #: child id -> token this node released; the cache may lag behind the delete
    released: dict[str, int] = field(default_factory=dict)
    #: child id -> (lease, spec create revision) of a local replica parked by its restart
    #: intensity: not started again while both still hold
    parked: dict[str, tuple[int, int]] = field(default_factory=dict)

    def is_parked(self, child_id: str, lease: int, spec_revision: int | None) -> bool:
        """Whether the local replica was parked under ``lease`` and this spec revision."""
        return spec_revision is not None and self.parked.get(child_id) == (lease, spec_revision)
