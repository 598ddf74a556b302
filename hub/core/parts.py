"""The node components the reconciler's parts share, as one value.

The executors, the replica actions and the owner-record writer all act on the same node:
its id, key space, registry, lease session, batcher, supervisor and hooks. The reconciler
builds one :class:`NodeParts` and hands it to each. The components belong to the Hub,
which starts and stops them; nothing here owns a task.
"""

from __future__ import annotations

from dataclasses import dataclass

from hub.core.hooks import Hooks
from hub.core.registry import Registry
from hub.core.supervisor import Supervisor
from hub.etcd.batcher import TxnBatcher
from hub.etcd.keys import KeySpace
from hub.etcd.session import Session

__all__ = ["NodeParts"]


@dataclass(frozen=True, slots=True)
class NodeParts:
    """One node's shared components (owned by the Hub)."""

    node_id: str
    keys: KeySpace
    registry: Registry
    session: Session
    batcher: TxnBatcher
    supervisor: Supervisor
    hooks: Hooks
