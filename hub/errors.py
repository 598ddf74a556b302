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
    ├── PartitionedError                the node is fenced off and refuses starts
    ├── HubFailed                       a component of a running hub failed: it stopped
    └── CallError                       a call/cast to a child failed (.child_id, .node_id)
        ├── ChildNotFound               no such child in the cluster
        ├── ChildNotRunning             the child has no running instance (yet) there
        ├── ChildMoved                  the node no longer runs it (callers retry elsewhere)
        ├── StaleHandle                 the handle names an older owner than the current one
        ├── NotCallable                 the worker has no handle_call / handle_cast
        ├── HandlerError                the handler raised (.remote_type, .remote_message)
        ├── MailboxFull                 the child's mailbox is full (casts)
        ├── PayloadTooLarge             a message exceeds the size limit (.size, .limit)
        ├── NotSerializable             a message cannot be encoded by the codec
        ├── BadPayload                  a message could not be decoded
        ├── NodeUnreachable             the node running the child did not answer
        │   └── WrongHub                the address now belongs to another hub's node
        ├── NodeInternalError           the node failed on its side; outcome unknown
        ├── RpcAuthError                the node refused our token or certificate
        └── CallTimeout                 no reply within the caller's timeout (a TimeoutError)

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


class HubFailed(HubError):
    """Raised when a component of a running hub failed and the hub stopped because of it.

    ``component`` names it (``"informer"``, ``"reconciler"``...); the component's own
    exception is the ``__cause__``.
    """

    def __init__(self, hub: str, component: str, cause: BaseException) -> None:
        super().__init__(f"{hub}: component {component!r} failed: {cause!r}")
        self.component = component


class CallError(HubError):
    """Base of call/cast failures; ``child_id`` and ``node_id`` say where it failed."""

    def __init__(self, child_id: str, node_id: str | None = None, reason: str = "") -> None:
        where = f" on {node_id!r}" if node_id else ""
        super().__init__(f"child {child_id!r}{where}: {reason or type(self).__name__}")
        self.child_id = child_id
        self.node_id = node_id
        self.reason = reason


class ChildNotFound(CallError):
    """Raised when no child with that id exists in the cluster."""


class ChildNotRunning(CallError):
    """Raised when the child has no running instance to deliver to (yet)."""


class ChildMoved(CallError):
    """Raised when the addressed node no longer owns the child; callers retry elsewhere."""


class StaleHandle(CallError):
    """Raised when a handle's fencing token is not the current owner's: never delivered."""

    def __init__(
        self, child_id: str, node_id: str | None, token: int, current: int | None = None
    ) -> None:
        super().__init__(
            child_id, node_id, f"handle token {token} is stale (current owner: {current})"
        )
        self.token = token
        self.current = current


class NotCallable(CallError):
    """Raised when the worker defines no ``handle_call`` (or ``handle_cast``)."""


class HandlerError(CallError):
    """Raised when the remote handler raised; carries its type and message, not the object."""

    def __init__(
        self, child_id: str, node_id: str | None, remote_type: str, remote_message: str
    ) -> None:
        super().__init__(child_id, node_id, f"{remote_type}: {remote_message}")
        self.remote_type = remote_type
        self.remote_message = remote_message


class MailboxFull(CallError):
    """Raised when a cast finds the child's bounded mailbox full."""


class PayloadTooLarge(CallError):
    """Raised when a message (or reply) exceeds the configured size limit."""

    def __init__(
        self, child_id: str, node_id: str | None = None, size: int = 0, limit: int = 0
    ) -> None:
        super().__init__(child_id, node_id, f"payload of {size} bytes exceeds {limit}")
        self.size = size
        self.limit = limit


class NotSerializable(CallError):
    """Raised when a message or reply cannot be encoded by the payload codec."""


class BadPayload(CallError):
    """Raised when a message or reply cannot be decoded."""


class NodeUnreachable(CallError):
    """Raised when the node running the child does not answer."""


class WrongHub(NodeUnreachable):
    """Raised when the address answered for another hub (a stale address): not delivered."""


class NodeInternalError(CallError):
    """Raised when the node failed while handling the request (a bug there); outcome unknown."""


class RpcAuthError(CallError):
    """Raised when a node refuses our token or TLS identity."""


class CallTimeout(CallError, TimeoutError):
    """Raised when no reply arrived within the caller's timeout."""


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
