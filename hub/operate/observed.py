"""What the operator endpoints read of a node: a Protocol, so they need no Hub import.

:class:`ObservedHub` lists the attributes and methods that the read model
(:mod:`hub.operate.views`), the metrics (:mod:`hub.operate.metrics`), the event feed
(:mod:`hub.operate.feed`) and the HTTP server (:mod:`hub.operate.http`) use. :class:`hub.Hub`
satisfies it; a test may pass anything else that does.
"""

from __future__ import annotations

from typing import Protocol

from hub.core.hooks import Hooks
from hub.core.membership import Membership
from hub.core.quorum import QuorumGate
from hub.core.reconciler import Reconciler
from hub.core.registry import Registry
from hub.core.supervisor import Supervisor
from hub.etcd.batcher import TxnBatcher
from hub.etcd.informer import Informer
from hub.etcd.session import Session
from hub.etcd.store import Store


class ObservedHub(Protocol):
    """The parts of a node that its HTTP endpoints, metrics and event feed read."""

    @property
    def hub_id(self) -> str: ...

    @property
    def node_id(self) -> str: ...

    @property
    def stop_requested(self) -> bool:
        """True once the node announced it stops (``/readyz`` then answers 503)."""
        ...

    @property
    def registry(self) -> Registry: ...

    @property
    def informer(self) -> Informer: ...

    @property
    def session(self) -> Session: ...

    @property
    def membership(self) -> Membership: ...

    @property
    def reconciler(self) -> Reconciler: ...

    @property
    def quorum(self) -> QuorumGate: ...

    @property
    def supervisor(self) -> Supervisor: ...

    @property
    def hooks(self) -> Hooks: ...

    @property
    def batcher(self) -> TxnBatcher: ...

    @property
    def store(self) -> Store: ...

    def is_alive(self) -> bool: ...

    def is_partitioned(self) -> bool: ...
