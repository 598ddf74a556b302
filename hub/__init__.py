"""processhub: named, long-lived workers across a cluster of Python nodes, on etcd.

The public API lives here; everything else is an implementation module.
"""

import os as _os

from hub._version import __version__

# gRPC's C core logs every failed TLS handshake and reconnect to stderr unless told
# otherwise before it is imported; our own logs already report what matters, once.
_os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from hub.errors import (
    AlreadyStarted,
    ConfigError,
    CorruptRecord,
    HubClosed,
    HubError,
    InvalidChildId,
    InvalidSpec,
    NotFound,
    PartitionedError,
    SessionLost,
    StaleFence,
    StartError,
    StoreError,
    StoreTimeout,
    StoreUnavailable,
    TargetNotAllowed,
    UnknownChild,
    UnknownNode,
    WorkerCrashed,
    WorkerError,
    WorkerStartFailed,
)
from hub.etcd.store import TlsConfig
from hub.hub import Hub
from hub.model import (
    ChildFailure,
    ChildHandle,
    ChildSpec,
    NodeState,
    OwnerState,
    RestartPolicy,
    StartResult,
    StoppedChild,
    StopResult,
)
from hub.worker import Context

__all__ = [
    "AlreadyStarted",
    "ChildFailure",
    "ChildHandle",
    "ChildSpec",
    "ConfigError",
    "Context",
    "CorruptRecord",
    "Hub",
    "HubClosed",
    "HubError",
    "InvalidChildId",
    "InvalidSpec",
    "NodeState",
    "NotFound",
    "OwnerState",
    "PartitionedError",
    "RestartPolicy",
    "SessionLost",
    "StaleFence",
    "StartError",
    "StartResult",
    "StopResult",
    "StoppedChild",
    "StoreError",
    "StoreTimeout",
    "StoreUnavailable",
    "TargetNotAllowed",
    "TlsConfig",
    "UnknownChild",
    "UnknownNode",
    "WorkerCrashed",
    "WorkerError",
    "WorkerStartFailed",
    "__version__",
]
