"""The Hub: one node's membership in a named cluster of workers (the composition root).

``async with Hub("my_hub", endpoints=[...]) as hub:`` joins the cluster: it grants the
node's lease, lists and watches the hub's keys, registers the node, and starts the
reconciler, which runs this node's share of the children. Leaving the block drains the node
(its children move to other nodes) and revokes its lease.

A Hub *has* the shared cluster API: it exposes :class:`~hub.api.facade.ClusterApi` (the
same methods as :class:`hub.HubClient`) by delegation to a :class:`~hub.api.cluster.Cluster`
built with the node's :class:`~hub.node.policy.NodePolicy`. What its components report goes
to internal objects (:class:`~hub.node.events.NodeEvents`,
:class:`~hub.node.delivery.LocalDelivery`), never to methods of this class.

Start order (each step waits for the previous one's readiness, :mod:`hub._tasks`): hooks ->
HTTP -> store -> RPC server -> lease granted -> informer synced -> batcher, supervisor
ready, reconciler, leave requests, quorum state loaded, load -> membership registered
(and seen in the registry) -> static children. Stop order: drain -> reconciler and membership ->
workers -> lease revoked -> batcher, informer -> hooks -> servers -> store. A component
that fails while the node runs stops it in that order (no drain) and is reported as
:class:`~hub.errors.HubFailed` (``hub.failed``; out of ``async with``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from functools import partial

from hub._tasks import ComponentGroup, TaskStatus
from hub.api.cluster import Cluster
from hub.api.connection import Connection
from hub.api.facade import ClusterApi
from hub.api.lifecycle import Lifecycle
from hub.api.options import config_from_options
from hub.config import DEFAULT_MAX_SPEC_BYTES, HubConfig
from hub.core.hooks import Hooks, HookSpec, HubStopping
from hub.core.membership import Membership
from hub.core.quorum import QuorumGate
from hub.core.reconciler import Reconciler
from hub.core.supervisor import Supervisor
from hub.errors import ConfigError, StoreError
from hub.etcd.keys import DEFAULT_PREFIX
from hub.etcd.session import Session
from hub.etcd.store import DEFAULT_MAX_RESPONSE_BYTES, TlsConfig
from hub.logs import bind, fields, get_logger
from hub.messaging.rpc import RpcConfig, RpcServer
from hub.model import ChildSpec, NodeState
from hub.node.delivery import LocalDelivery
from hub.node.departure import Departure
from hub.node.events import NodeEvents
from hub.node.policy import NodePolicy
from hub.operate.http import HttpServer, HubMetrics
from strategies.base import DistributionStrategy, Guarantee, PartitionStrategy, RedundancyStrategy
from strategies.migration import MigrationStrategy

log = get_logger("hub")


class Hub(ClusterApi):
    """A node of the cluster ``hub_id``.

    Args:
        hub_id: the cluster's name; nodes with the same id (and etcd prefix) form one
            cluster, different ids are independent.
        endpoints: etcd endpoints, ``"host:port"`` strings (or one comma-separated string).
        tls: etcd transport security (:class:`hub.etcd.store.TlsConfig`); None: plain.
        username: etcd user (with ``password``); None: no authentication.
        password: that user's password.
        request_timeout: seconds every etcd request may take.
        max_response_bytes: the largest etcd response accepted (at least 1 MiB).
        prefix: the etcd key prefix the hub lives under.
        node_id: this node's name; default ``{hostname}-{pid}``.
        lease_ttl: seconds after which a silent node is considered dead; its children
            are restarted elsewhere about this long after a crash.
        child_specs: static children, started (if absent) when the hub boots.
        allowed_targets: ``fnmatch`` patterns of start targets this node accepts
            (None: any).
        validate_targets: import each start target before writing its spec.
        distribution: placement strategy (default
            :class:`~strategies.distribution.ConsistentHashing`).
        migration: how children move (default :class:`~strategies.migration.ColdSwap`).
        partition: what a node does without etcd or quorum (default
            :class:`~strategies.partition.Strict`: it fences itself).
        redundancy: instances per child (default :class:`~strategies.redundancy.Singularity`).
        hooks: ``{hook name: [HookHandler, ...]}`` registered at start (:mod:`hub.core.hooks`).
        hook_timeout: seconds a hook handler may take.
        weight: this node's share of children relative to the others (>= 1).
        capacity: most children this node runs (0: no limit).
        load_interval: seconds between checks whether to publish this node's load.
        rpc: node-RPC settings (bind, advertise, token, TLS); None: no node RPC, so no
            calls or casts to children of this node from elsewhere.
        http: ``"host:port"`` for ``/healthz``, ``/readyz``, ``/metrics``, ``/api``
            and the dashboard (None: off).
        mailbox_capacity: messages a child's mailbox holds.
        labels: free-form labels published in the node record.
        address: the published address when node RPC is off.
        drain_timeout: seconds a graceful stop waits for children to move away.
        worker_stop_timeout: seconds a worker may take to stop.
        max_spec_bytes: the largest encoded child spec accepted.
        startup_timeout: seconds :meth:`start` may take.
        resync_interval: seconds between full reconciles (a safety net).

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
        child_specs: Sequence[ChildSpec] = (),
        allowed_targets: Sequence[str] | None = None,
        validate_targets: bool = True,
        distribution: DistributionStrategy | None = None,
        migration: MigrationStrategy | None = None,
        partition: PartitionStrategy | None = None,
        redundancy: RedundancyStrategy | None = None,
        hooks: HookSpec | None = None,
        hook_timeout: float = 5.0,
        weight: int = 1,
        capacity: int = 0,
        load_interval: float = 5.0,
        rpc: RpcConfig | None = RpcConfig(),  # noqa: B008 - frozen
        http: str | None = None,
        mailbox_capacity: int = 1000,
        labels: Mapping[str, str] | None = None,
        address: str = "",
        drain_timeout: float = 30.0,
        worker_stop_timeout: float = 10.0,
        max_spec_bytes: int = DEFAULT_MAX_SPEC_BYTES,
        startup_timeout: float = 30.0,
        resync_interval: float = 30.0,
    ) -> None:
        options = dict(locals())  # exactly the parameters above: forwarded, not relisted
        del options["self"], options["hub_id"]
        self._assemble(config_from_options(hub_id, options))

    def _assemble(self, cfg: HubConfig) -> None:
        connection = Connection(cfg)
        try:
            self.hooks = Hooks.from_mapping(cfg.hooks, handler_timeout=cfg.hook_timeout)
        except ValueError as exc:
            raise ConfigError(f"hooks: {exc}") from None
        connection.registry.hooks = self.hooks
        events = NodeEvents(cfg.node_id, self.hooks)
        store, registry = connection.store, connection.registry
        self.quorum = QuorumGate(
            store=store,
            keys=connection.keys,
            registry=registry,
            node_id=cfg.node_id,
            strategy=cfg.partition,
            on_change=events.partition_changed,
        )
        self.session = Session(
            store, cfg.lease_ttl, on_lost=events.lease_lost, on_granted=events.lease_granted
        )
        self.supervisor = Supervisor(
            hub_id=cfg.hub_id,
            node_id=cfg.node_id,
            events=events,
            allow=connection.allow,
            stop_timeout=cfg.worker_stop_timeout,
            checkpointer=events.checkpoint,
            mailbox_capacity=cfg.mailbox_capacity,
        )
        self.membership = Membership(
            store,
            self.session,
            connection.keys,
            cfg.node_id,
            address=cfg.address,
            labels=cfg.labels,
            weight=cfg.weight,
            capacity=cfg.capacity,
        )
        self.reconciler = Reconciler(
            node_id=cfg.node_id,
            keys=connection.keys,
            registry=registry,
            session=self.session,
            batcher=connection.batcher,
            supervisor=self.supervisor,
            distribution=cfg.distribution,
            migration=cfg.migration,
            hooks=self.hooks,
            redundancy=cfg.redundancy,
            resync_interval=cfg.resync_interval,
        )
        # Availability mode keeps workers through a lease loss (see strategies.partition).
        self.reconciler.keep_running = Guarantee.AVAILABLE_DURING_OUTAGE in cfg.partition.guarantees
        events.wire(
            reconciler=self.reconciler,
            quorum=self.quorum,
            session=self.session,
            membership=self.membership,
            registry=registry,
        )
        registry.listener = events
        self._events = events
        delivery = LocalDelivery(cfg.node_id, self.reconciler, self.supervisor, cfg.rpc)
        self.rpc_server = (
            RpcServer(cfg.rpc, delivery, cfg.hub_id, node_id=cfg.node_id) if cfg.rpc else None
        )
        policy = NodePolicy(
            cfg.node_id,
            session=self.session,
            quorum=self.quorum,
            reconciler=self.reconciler,
            delivery=delivery,
        )
        self._departure = Departure(
            cfg.node_id,
            membership=self.membership,
            reconciler=self.reconciler,
            registry=registry,
            hooks=self.hooks,
            drain_timeout=cfg.drain_timeout,
            leave_requested=events.leave_requested,
        )
        lifecycle = Lifecycle(f"node {cfg.node_id}", startup_timeout=cfg.startup_timeout)
        self._attach(Cluster(connection, policy), lifecycle)
        #: Set by :meth:`stop_serving`: /readyz answers 503 from then on.
        self.stop_requested = False
        #: Set once this node drained and left because an operator asked (HubClient.drain).
        #: Embedders should then leave their ``async with Hub(...)`` block.
        self.left = self._departure.left
        self._drain_on_stop = True
        self._crash = False
        # Last: the metrics read every component above.
        self.http_server: HttpServer | None = None
        if cfg.http:
            self.metrics = HubMetrics(self)
            self.http_server = HttpServer(self, cfg.http, metrics=self.metrics)

    @property
    def incarnation(self) -> int:
        """This node's current lease id (0 while fenced)."""
        return self.session.lease_id

    @property
    def state(self) -> NodeState:
        """This node's membership state."""
        return self.membership.state

    def __repr__(self) -> str:
        return f"<Hub {self.hub_id!r} node={self.node_id!r} alive={self.is_alive()}>"

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Join the cluster; returns once this node is registered and static children run.

        Raises:
            StoreError: etcd could not be reached. TimeoutError: not joined within
            ``startup_timeout``. HubClosed: already started.
        """
        self._drain_on_stop, self._crash = True, False
        # Every task started here inherits node_id in its log context (hub.logs).
        with bind(node_id=self.node_id):
            await self._lifecycle.start(self._up, self._down)

    async def stop(self, *, drain: bool = True) -> None:
        """Leave the cluster. With ``drain`` (default) children move to other nodes first.

        Bounded by ``drain_timeout`` plus the worker stop timeout; idempotent.

        Raises:
            HubFailed: a component had failed and stopped the node (reported once).
        """
        self._drain_on_stop = drain
        with bind(node_id=self.node_id):
            await self._lifecycle.stop()

    def stop_serving(self) -> None:
        """Announce that this node is about to stop: ``/readyz`` answers 503 from now on.

        Call it first when shutting down, before stopping anything the application serves
        beside the node, so load balancers stop routing to it while it still answers.
        :meth:`stop` implies it.
        """
        self.stop_requested = True

    async def abort(self) -> None:
        """Stop as if the process had died: no drain, no ``HUB_STOPPING`` hook, and the lease
        is left to expire, so other nodes take the children over about one TTL later.

        For fault drills and tests (``hub.testing``'s ``kill``). Unlike a real crash the
        workers are cancelled, so their ``finally`` blocks run.
        """
        self._crash = True
        await self.stop(drain=False)

    async def _up(self, group: ComponentGroup) -> None:
        cfg = self.config
        hooks_ready = asyncio.Event()
        await group.start_when_set("hooks", partial(self.hooks.run, ready=hooks_ready), hooks_ready)
        if self.http_server is not None:  # /readyz answers 503 while starting
            await self.http_server.start()
        await self.store.connect()
        if self.rpc_server is not None:
            # advertised in the node record: where peers dial for call/cast
            self.membership.address = await self.rpc_server.start()
        await group.start("session", self._run_session)
        await group.start_when_set("informer", self.informer.run, self.informer.synced)
        group.spawn("batcher", self.batcher.run)
        supervisor_ready = asyncio.Event()
        await group.start_when_set(
            "supervisor", partial(self.supervisor.run, ready=supervisor_ready), supervisor_ready
        )
        group.spawn("reconciler", self.reconciler.run)
        group.spawn("leave", self._departure.obey_leave_requests)
        await group.start("quorum", self._run_quorum)
        group.spawn("load", self._publish_load)
        await group.start("membership", self._run_membership)
        self.cluster.connection.alive = True
        log.info("node joined", extra=fields(node_id=cfg.node_id, hub_id=cfg.hub_id))
        if cfg.child_specs:
            await self._start_static_children()

    async def _run_session(self, status: TaskStatus[int]) -> None:
        """The lease: granted (ready), then kept alive."""
        backoff = 0.1
        while True:
            try:
                lease_id = await self.session.grant()
                break
            except StoreError as exc:
                log.warning("waiting for etcd: %s", exc, extra=fields(node_id=self.node_id))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
        status.started(lease_id)
        await self.session.run()

    async def _run_quorum(self, status: TaskStatus[None]) -> None:
        """The quorum gate: its stored state loaded (ready: a restart resumes it), then
        deciding on every membership change."""
        try:
            await self.quorum.load()
        except StoreError as exc:  # run() tries again
            log.warning("quorum state not loaded: %s", exc, extra=fields(node_id=self.node_id))
        status.started(None)
        await self.quorum.run()

    async def _run_membership(self, status: TaskStatus[int]) -> None:
        """The node record: registered and seen in the registry (ready), then kept."""
        revision = await self.membership.register()
        await self.registry.wait_revision(revision)
        status.started(revision)
        await self.membership.run()

    async def _start_static_children(self) -> None:
        result = await self.start_children(
            self.config.child_specs,
            check_existing=False,
            wait=True,
            timeout=self.config.startup_timeout,
        )
        for error in result.errors:
            if error.reason != "already_started":
                log.warning(
                    "static child %r: %s",
                    error.child_id,
                    error.reason,
                    extra=fields(node_id=self.node_id, child_id=error.child_id),
                )

    async def _down(self, group: ComponentGroup) -> None:
        """Leave in order (the module docstring); drain only on a graceful stop."""
        crash = self._crash
        drain = self._drain_on_stop and not self.failed.is_set()
        self._events.stopping = True
        self.stop_requested = True
        if not crash:
            self.hooks.dispatch(HubStopping(self.node_id, drain))
        try:
            if drain and self.is_alive() and self.session.is_valid():
                await self._departure.drain()
        finally:
            self.cluster.connection.alive = False
            # Order matters: no worker may outlive the owner keys that its lease holds.
            for name in ("load", "quorum", "leave", "reconciler", "membership"):
                await group.cancel(name)
            await self.supervisor.stop_all()
            await group.cancel("supervisor")
            if not crash:
                await self.quorum.forget()  # leaving on purpose: nothing to resume
            await group.cancel("session")
            if crash:
                self.session.abandon()
            else:
                await self.session.revoke()
            for name in ("batcher", "informer"):
                await group.cancel(name)
            try:  # let hooks dispatched while leaving run, within their own timeout
                async with asyncio.timeout(self.config.hook_timeout):
                    await self.hooks.wait_idle()
            except TimeoutError:
                pass
            await group.cancel("hooks")
            if self.rpc_server is not None:
                await self.rpc_server.stop(grace=0.5)
            if self.http_server is not None:
                await self.http_server.stop()
            await self.rpc_client.close()
            await self.store.close()
            log.info("node left", extra=fields(node_id=self.node_id, hub_id=self.hub_id))

    async def _publish_load(self) -> None:
        """Publish how many children this node runs, when it changed noticeably."""
        while True:
            await asyncio.sleep(self.config.load_interval)
            load = len(self.supervisor)
            published = self.membership.load
            if abs(load - published) >= max(1, published // 20):  # 5 %
                self.membership.load = load
                self.membership.request()

    # -- node-only API ------------------------------------------------------------------

    def is_partitioned(self) -> bool:
        """True while this node runs nothing because it holds no valid lease (it fenced
        itself) or because the partition strategy says the cluster lost its quorum."""
        return self.is_alive() and (not self.session.is_valid() or self.quorum.partitioned)

    def reset_cluster_size(self, size: int) -> None:
        """After an intentional downsizing under ``MajorityQuorum``: take ``size`` as the
        largest cluster seen, so the smaller cluster has its quorum again (ProcessHub's
        ``reset_cluster_size``). Call it on every remaining node.

        Raises:
            ValueError: the partition strategy is not ``MajorityQuorum``, or ``size < 1``.
        """
        self.quorum.reset_cluster_size(size)

    def is_settled(self) -> bool:
        """True when this node has no reconcile work pending (test and benchmark helper)."""
        return self.reconciler.is_idle() and self.batcher.pending() == 0
