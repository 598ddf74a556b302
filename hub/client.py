"""HubClient: the cluster's API without hosting workers.

A :class:`HubClient` watches a hub's keys and can start, stop, call and look up children,
but it is not a member: it holds no lease and runs nothing. Operators' tools, benchmark
drivers and web front ends use it. It exposes the same API as :class:`hub.Hub`
(:class:`~hub.api.facade.ClusterApi`, delegating to the :class:`~hub.api.cluster.Cluster`
it contains, with a :class:`~hub.api.policy.ClientPolicy`).

Lookups (``get_pid``, ``process_list``...) read the watched registry: no network, O(1).
Start order: store connected -> informer synced -> batcher. Every background task belongs
to the client's :class:`~hub.api.lifecycle.Lifecycle`; a component that fails later stops
the client and is reported as :class:`~hub.errors.HubFailed` (see ``failed``).
"""

from __future__ import annotations

from collections.abc import Sequence

from hub._tasks import ComponentGroup
from hub.api.cluster import Cluster
from hub.api.connection import Connection
from hub.api.facade import ClusterApi
from hub.api.lifecycle import Lifecycle
from hub.api.options import config_from_options
from hub.api.policy import ClientPolicy
from hub.config import DEFAULT_MAX_SPEC_BYTES, HubConfig
from hub.etcd.keys import DEFAULT_PREFIX
from hub.etcd.store import DEFAULT_MAX_RESPONSE_BYTES, TlsConfig
from hub.messaging.rpc import RpcConfig
from strategies.base import DistributionStrategy, RedundancyStrategy


class HubClient(ClusterApi):
    """Starts, stops, calls and finds children of the cluster ``hub_id`` without joining it.

    Args:
        hub_id: the cluster's name (see :class:`hub.Hub`).
        endpoints: etcd endpoints, ``"host:port"`` strings (or one comma-separated string).
        tls: etcd transport security (:class:`hub.etcd.store.TlsConfig`); None: plain.
        username: etcd user (with ``password``); None: no authentication.
        password: that user's password.
        request_timeout: seconds every etcd request may take.
        max_response_bytes: the largest etcd response accepted (at least 1 MiB).
        prefix: the etcd key prefix the hub lives under.
        node_id: this client's name (default ``{hostname}-{pid}``); it never joins.
        lease_ttl: the cluster's lease TTL in seconds: how long a silent watch may look
            healthy is derived from it.
        allowed_targets: ``fnmatch`` patterns a start target must match (None: any).
        validate_targets: import each start target before writing its spec.
        distribution: the cluster's placement strategy (default consistent hashing), for
            :meth:`placement` and guided ``child_mapping`` checks.
        redundancy: the cluster's redundancy strategy (default one instance per child).
        rpc: node-RPC settings for calls and casts (its token, TLS, size limits).
        max_spec_bytes: the largest encoded child spec accepted.
        startup_timeout: seconds :meth:`start` may take.

    Raises:
        ConfigError: an option is invalid. TypeError: an unknown option.
    """

    def __init__(
        self,
        hub_id: str,
        *,
        endpoints: Sequence[str] | str = ("127.0.0.1:2379",),
        tls: TlsConfig | None = None,
        username: str | None = None,
        password: str | None = None,
        request_timeout: float = 5.0,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        prefix: str = DEFAULT_PREFIX,
        node_id: str | None = None,
        lease_ttl: int = 10,
        allowed_targets: Sequence[str] | None = None,
        validate_targets: bool = True,
        distribution: DistributionStrategy | None = None,
        redundancy: RedundancyStrategy | None = None,
        rpc: RpcConfig | None = RpcConfig(),  # noqa: B008 - frozen
        max_spec_bytes: int = DEFAULT_MAX_SPEC_BYTES,
        startup_timeout: float = 30.0,
    ) -> None:
        options = dict(locals())  # exactly the parameters above: forwarded, not relisted
        del options["self"], options["hub_id"]
        self._assemble(config_from_options(hub_id, options))

    def _assemble(self, config: HubConfig) -> None:
        connection = Connection(config)
        policy = ClientPolicy(config, connection.registry)
        connection.registry.listener = policy
        lifecycle = Lifecycle(f"client {config.hub_id}", startup_timeout=config.startup_timeout)
        self._attach(Cluster(connection, policy), lifecycle)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.hub_id!r} alive={self.is_alive()}>"

    async def start(self) -> None:
        """Connect and sync the registry.

        Raises:
            StoreError: etcd stays unreachable. TimeoutError: not synced within
            ``startup_timeout``. HubClosed: already started.
        """
        await self._lifecycle.start(self._up, self._down)

    async def stop(self) -> None:
        """Disconnect; idempotent.

        Raises:
            HubFailed: a component had failed (reported once).
        """
        await self._lifecycle.stop()

    async def _up(self, group: ComponentGroup) -> None:
        await self.store.connect()
        await group.start_when_set("informer", self.informer.run, self.informer.synced)
        group.spawn("batcher", self.batcher.run)
        self.cluster.connection.alive = True

    async def _down(self, group: ComponentGroup) -> None:
        self.cluster.connection.alive = False
        await group.cancel_all()
        await self.rpc_client.close()
        await self.store.close()
