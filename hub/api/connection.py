"""The components a Hub and a HubClient both build from their config.

A :class:`Connection` holds the etcd store, the registry fed by an informer over the hub's
keys, the transaction batcher and the node-RPC client: everything the shared cluster API
(:class:`~hub.api.cluster.Cluster`) reads and writes through. It only constructs them: the
owner (Hub or HubClient) starts and stops them in its own order, and says when the API may
be used (:attr:`Connection.alive`).
"""

from __future__ import annotations

from hub.config import HubConfig
from hub.core.registry import Registry
from hub.errors import HubClosed
from hub.etcd.batcher import TxnBatcher
from hub.etcd.informer import Informer
from hub.etcd.keys import KeySpace
from hub.etcd.store import Store
from hub.messaging.rpc import RpcClient, RpcConfig
from hub.worker import AllowList


class Connection:
    """The shared components of one Hub or HubClient (see the module docstring)."""

    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self.keys = KeySpace(config.hub_id, config.prefix)
        self.store = Store(config.etcd)
        self.registry = Registry(self.keys)
        watch_start, watch_end = self.keys.watched_range()
        self.informer = Informer(
            self.store,
            watch_start,
            self.registry,
            end=watch_end,
            # Generous: a busy loop must not look like a partition; the lease deadline,
            # not the informer, is what fences.
            stall_timeout=max(3.0, config.lease_ttl / 2),
        )
        self.batcher = TxnBatcher(self.store)
        self.rpc_client = RpcClient(config.rpc if config.rpc is not None else RpcConfig())
        self.allow = (
            AllowList(config.allowed_targets) if config.allowed_targets is not None else None
        )
        #: True between the owner's successful start and its stop: the API may be used.
        self.alive = False

    def require_alive(self) -> None:
        """Raise :class:`HubClosed` unless the owner is running."""
        if not self.alive:
            raise HubClosed("hub is not running (use 'async with Hub(...)' or await start())")
