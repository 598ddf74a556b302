"""Every exception processhub raises, in one tree.

::

    HubError
    ├── StoreError                      etcd could not do what we asked
    │   ├── StoreUnavailable            no etcd endpoint answered (retryable)
    │   ├── StoreTimeout                a call passed its deadline; outcome unknown
    │   ├── StoreAuthError              wrong credentials or certificates
    │   ├── RevisionCompacted           a watch/read asked for a compacted revision
    │   └── RequestTooLarge             etcd rejected the request size
    ├── SessionLost                     this node's lease is gone: stop everything it owns
    ├── StaleFence                      a write guarded by a fencing token lost the race
    ├── CorruptRecord                   a value under the hub prefix could not be decoded
    ├── NotFound                        an operation named something that does not exist
    │   ├── UnknownChild                no spec with that child id
    │   └── UnknownNode                 no member with that node id
    ├── StartError                      a start request was refused as a whole
    │   ├── AlreadyStarted              ``check_existing`` found running children
    │   └── TargetNotAllowed            the start target is outside the allow-list
    ├── WorkerError                     a worker failed
    │   ├── WorkerStartFailed           its target could not be resolved or it raised at once
    │   └── WorkerCrashed               it exited abnormally (``exit_code`` for commands)
    └── PartitionedError                the node is fenced off and refuses starts

Misuse stays outside the tree, so ``except HubError`` never hides a bug:
``InvalidSpec(ValueError)`` (and ``InvalidChildId``), ``ConfigError(ValueError)``,
``HubClosed(RuntimeError)``.
"""

from __future__ import annotations

from collections.abc import Sequence


class HubError(Exception):
    """Base of every runtime error raised by processhub."""


class StoreError(HubError):
    """Raised when etcd could not perform a request."""


class StoreUnavailable(StoreError):
    """Raised when no etcd endpoint answered; safe to retry idempotent calls."""


class StoreTimeout(StoreError):
    """Raised when an etcd call passed its deadline; a write's outcome is unknown."""


class StoreAuthError(StoreError):
    """Raised when etcd rejected our credentials, token or certificates."""


class RequestTooLarge(StoreError):
    """Raised when etcd rejected a request as larger than its limit."""


class RevisionCompacted(StoreError):
    """Raised when a read or watch asked for a revision etcd has compacted away."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revision compacted; oldest available is {compact_revision}")
        self.compact_revision = compact_revision


class SessionLost(HubError):
    """Raised when this node's lease expired or could not be renewed in time."""

    def __init__(self, lease_id: int, reason: str = "") -> None:
        super().__init__(f"lease {lease_id:x} lost" + (f": {reason}" if reason else ""))
        self.lease_id = lease_id
        self.reason = reason


class StaleFence(HubError):
    """Raised when a write guarded by a fencing token found a newer owner."""

    def __init__(self, child_id: str, fence: int) -> None:
        super().__init__(f"child {child_id!r}: fencing token {fence} is stale")
        self.child_id = child_id
        self.fence = fence


class CorruptRecord(HubError):
    """Raised when a value under the hub prefix is not a record we can decode."""

    def __init__(self, key: bytes, reason: str) -> None:
        super().__init__(f"corrupt record at {key!r}: {reason}")
        self.key = key
        self.reason = reason


class NotFound(HubError):
    """Raised when an operation names a child or node that does not exist."""


class UnknownChild(NotFound):
    """Raised when no spec exists for the child id."""

    def __init__(self, child_id: str) -> None:
        super().__init__(f"no child {child_id!r} in this hub")
        self.child_id = child_id


class UnknownNode(NotFound):
    """Raised when no member has the node id."""

    def __init__(self, node_id: str) -> None:
        super().__init__(f"no node {node_id!r} in this hub")
        self.node_id = node_id


class StartError(HubError):
    """Raised when a start request is refused as a whole."""


class AlreadyStarted(StartError):
    """Raised when ``check_existing`` finds children that already exist in the cluster."""

    def __init__(self, child_ids: Sequence[str]) -> None:
        super().__init__(f"already started: {', '.join(map(repr, child_ids))}")
        self.child_ids = tuple(child_ids)


class TargetNotAllowed(StartError):
    """Raised when a start target is not matched by the hub's allow-list."""

    def __init__(self, target: str) -> None:
        super().__init__(f"start target {target!r} is not in the allow-list")
        self.target = target


class PartitionedError(StartError):
    """Raised when the node is fenced off from etcd (no valid lease) and refuses starts."""


class WorkerError(HubError):
    """Base for failures of a worker."""


class WorkerStartFailed(WorkerError):
    """Raised when a worker's target cannot be resolved or it fails while starting."""

    def __init__(self, child_id: str, reason: str) -> None:
        super().__init__(f"child {child_id!r} failed to start: {reason}")
        self.child_id = child_id
        self.reason = reason


class WorkerCrashed(WorkerError):
    """Raised when a worker exits abnormally; ``exit_code`` is set for commands."""

    def __init__(self, child_id: str, reason: str, exit_code: int | None = None) -> None:
        super().__init__(f"child {child_id!r} crashed: {reason}")
        self.child_id = child_id
        self.reason = reason
        self.exit_code = exit_code


class InvalidSpec(ValueError):
    """Raised when a child spec (or a start request) is malformed; nothing was written."""


class InvalidChildId(InvalidSpec):
    """Raised when a child id is empty, too long or not a string."""


class ConfigError(ValueError):
    """Raised when a Hub option is invalid."""


class HubClosed(RuntimeError):
    """Raised when a Hub is used before ``start()`` or after ``stop()``."""
