"""The Hub: one node's membership in a named cluster of workers.

``async with Hub("my_hub", endpoints=[...]) as hub:`` joins the cluster: it grants the
node's lease, lists and watches the hub's keys, registers the node, and starts the
reconciler, which runs this node's share of the children. Leaving the block drains the node
(its children move to other nodes) and revokes its lease. The start/stop/lookup API is
inherited from :class:`hub.client.HubClient`.

Start order (each step waits for the previous one to be ready): store -> lease -> informer
synced -> batcher, supervisor, reconciler -> membership registered (and seen in the
registry) -> static children. Every background task belongs to the Hub's TaskGroup;
``start``/``stop`` (or the ``async with`` block) must run in one task.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hub.client import HubClient
from hub.core.hooks import ChildRestarted, ChildStarted, Hooks, HubStopping, PartitionChanged
from hub.core.membership import Membership
from hub.core.quorum import QuorumGate
from hub.core.reconciler import Reconciler
from hub.core.supervisor import Supervisor, WorkerExit
from hub.errors import (
    CallTimeout,
    ChildMoved,
    ChildNotRunning,
    ConfigError,
    HubClosed,
    PartitionedError,
    StaleHandle,
    StoreError,
)
from hub.etcd.session import Session
from hub.logs import bind, fields, get_logger
from hub.messaging.payload import decode_payload, encode_payload
from hub.messaging.rpc import (
    CallReplyData,
    CallRequestData,
    CastRequestData,
    ReplyStatus,
    RpcServer,
)
from hub.model import ChildHandle, NodeState
from hub.operate.http import HttpServer, HubMetrics
from strategies.base import Guarantee

log = get_logger("hub")


class Hub(HubClient):
    """A node of the cluster ``hub_id``.

    Args:
        hub_id: the cluster's name; nodes with the same id (and etcd prefix) form one
            cluster, different ids are independent.
        endpoints: etcd endpoints, ``"host:port"`` strings (or one comma-separated string).
        node_id: this node's name; default ``{hostname}-{pid}``.
        lease_ttl: seconds after which a silent node is considered dead; its children
            are restarted elsewhere about this long after a crash.
        tls, username, password: etcd transport security (see :class:`hub.etcd.store.TlsConfig`).
        child_specs: static children, started (if absent) when the hub boots.
        allowed_targets: ``fnmatch`` patterns of start targets this node accepts.
        distribution: placement strategy (default consistent hashing).
        **options: the remaining :class:`hub.config.HubConfig` fields.

    Raises:
        ConfigError: an option is invalid.
    """

    def __init__(self, hub_id: str, **options: Any) -> None:
        super().__init__(hub_id, **options)
        cfg = self.config
        try:
            self.hooks = Hooks.from_mapping(cfg.hooks, handler_timeout=cfg.hook_timeout)
        except ValueError as exc:
            raise ConfigError(f"hooks: {exc}") from None
        self.registry.hooks = self.hooks
        self.rpc_server = (
            RpcServer(cfg.rpc, self, cfg.hub_id, node_id=cfg.node_id) if cfg.rpc else None
        )
        self.quorum = QuorumGate(
            store=self.store,
            keys=self.keys,
            registry=self.registry,
            node_id=cfg.node_id,
            strategy=cfg.partition,
            on_change=self._partition_changed,
        )
        self.session = Session(
            self.store, cfg.lease_ttl, on_lost=self._on_lease_lost, on_granted=self._on_lease
        )
        self.supervisor = Supervisor(
            hub_id=cfg.hub_id,
            node_id=cfg.node_id,
            events=self,
            allow=self.allow,
            stop_timeout=cfg.worker_stop_timeout,
            checkpointer=self._checkpoint,
            mailbox_capacity=cfg.mailbox_capacity,
        )
        self.membership = Membership(
            self.store,
            self.session,
            self.keys,
            cfg.node_id,
            address=cfg.address,
            labels=cfg.labels,
            weight=cfg.weight,
            capacity=cfg.capacity,
        )
        self.reconciler = Reconciler(
            node_id=cfg.node_id,
            keys=self.keys,
            registry=self.registry,
            session=self.session,
            batcher=self.batcher,
            supervisor=self.supervisor,
            distribution=cfg.distribution,
            migration=cfg.migration,
            hooks=self.hooks,
            redundancy=cfg.redundancy,
            resync_interval=cfg.resync_interval,
        )
        # Availability mode keeps workers through a lease loss (see strategies.partition).
        self.reconciler.keep_running = Guarantee.AVAILABLE_DURING_OUTAGE in cfg.partition.guarantees
        self._stopping = False
        #: Set by :meth:`stop_serving`: /readyz answers 503 from then on.
        self.stop_requested = False
        self._leave_requested = asyncio.Event()
        #: Set once this node drained and left because an operator asked (HubClient.drain).
        #: Embedders should then leave their ``async with Hub(...)`` block.
        self.left = asyncio.Event()
        # Last: the metrics read every component above.
        self.http_server: HttpServer | None = None
        if cfg.http:
            self.metrics = HubMetrics(self)
            self.http_server = HttpServer(self, cfg.http, metrics=self.metrics)

    @property
    def incarnation(self) -> int:
        """This node's current lease id (0 while fenced)."""
        return self.session.lease_id

    def __repr__(self) -> str:
        return f"<Hub {self.hub_id!r} node={self.node_id!r} alive={self._alive}>"

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Hub:
        await self.start()
        return self

    async def start(self) -> None:
        """Join the cluster; returns once this node is registered and static children run.

        Raises:
            StoreError: etcd could not be reached within ``startup_timeout``.
        """
        if self._tg is not None:
            raise HubClosed("hub already started")
        # Every task started here inherits node_id in its log context (hub.logs).
        with bind(node_id=self.config.node_id):
            await self._start()

    async def _start(self) -> None:
        cfg = self.config
        tg = asyncio.TaskGroup()
        await tg.__aenter__()
        self._tg = tg
        try:
            async with asyncio.timeout(cfg.startup_timeout):
                hooks_ready = asyncio.Event()
                self._spawn("hooks", self.hooks.run(ready=hooks_ready))
                await hooks_ready.wait()
                if self.http_server is not None:  # /readyz answers 503 while starting
                    await self.http_server.start()
                await self.store.connect()
                if self.rpc_server is not None:
                    # advertised in the node record: where peers dial for call/cast
                    self.membership.address = await self.rpc_server.start()
                await self._first_lease()
                self._spawn("session", self.session.run())
                self._spawn("informer", self.informer.run())
                await self.informer.synced.wait()
                self._spawn("batcher", self.batcher.run())
                supervisor_ready = asyncio.Event()
                self._spawn("supervisor", self.supervisor.run(ready=supervisor_ready))
                await supervisor_ready.wait()
                self._spawn("reconciler", self.reconciler.run())
                self._spawn("membership", self.membership.run())
                self._spawn("leave", self._obey_leave_request())
                self._spawn("quorum", self.quorum.run())
                self._spawn("load", self._publish_load())
                revision = await self.membership.register()
                await self.registry.wait_revision(revision)
            self._alive = True
            log.info("node joined", extra=fields(node_id=cfg.node_id, hub_id=cfg.hub_id))
            if cfg.child_specs:
                await self._start_static_children()
        except BaseException:
            await self._shutdown(drain=False)
            raise

    async def _first_lease(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self.session.grant()
                return
            except StoreError as exc:
                log.warning("waiting for etcd: %s", exc, extra=fields(node_id=self.node_id))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

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

    async def stop(self, *, drain: bool = True) -> None:
        """Leave the cluster. With ``drain`` (default) children move to other nodes first.

        Bounded by ``drain_timeout`` plus the worker stop timeout.
        """
        if self._tg is None:
            return
        await self._shutdown(drain=drain)

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
        if self._tg is None:
            return
        with bind(node_id=self.node_id):
            await self._leave(drain=False, crash=True)

    async def _shutdown(self, *, drain: bool) -> None:
        with bind(node_id=self.node_id):
            await self._leave(drain=drain)

    async def _leave(self, *, drain: bool, crash: bool = False) -> None:
        tg, self._tg = self._tg, None
        if tg is None:
            return
        self._stopping = True
        self.stop_requested = True
        if not crash:
            self.hooks.dispatch(HubStopping(self.node_id, drain))
        try:
            if drain and self._alive and self.session.is_valid():
                await self._drain()
        finally:
            self._alive = False
            # Order matters: no worker may outlive the owner keys that its lease holds.
            for name in ("load", "quorum", "leave", "reconciler", "membership"):
                await self._cancel(name)
            await self.supervisor.stop_all()
            await self._cancel("supervisor")
            if not crash:
                await self.quorum.forget()  # leaving on purpose: nothing to resume
            await self._cancel("session")
            if crash:
                self.session.abandon()
            else:
                await self.session.revoke()
            for name in ("batcher", "informer"):
                await self._cancel(name)
            try:  # let hooks dispatched while leaving run, within their own timeout
                async with asyncio.timeout(self.config.hook_timeout):
                    await self.hooks.wait_idle()
            except TimeoutError:
                pass
            await self._cancel("hooks")
            if self.rpc_server is not None:
                await self.rpc_server.stop(grace=0.5)
            if self.http_server is not None:
                await self.http_server.stop()
            await tg.__aexit__(None, None, None)
            self._tasks.clear()
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

    async def _obey_leave_request(self) -> None:
        """Drain when an operator asks this incarnation to leave; then set ``left``."""
        await self._leave_requested.wait()
        log.warning(
            "operator asked this node to drain and leave", extra=fields(node_id=self.node_id)
        )
        self.hooks.dispatch(HubStopping(self.node_id, True))
        await self._drain()
        self.left.set()

    async def _drain(self) -> None:
        """Mark this node draining and wait until its children run elsewhere."""
        try:
            async with asyncio.timeout(self.config.drain_timeout):
                await self.membership.set_state(NodeState.DRAINING)
                self.reconciler.set_draining(True)
                while self.reconciler.owned:
                    others = set(self.registry.active_members()) - {self.node_id}
                    if not others:
                        break  # nowhere to go: stop here, specs stay durable
                    await asyncio.sleep(0.01)
                    await self.reconciler.wait_idle()
        except TimeoutError:
            log.warning(
                "drain timed out with %d children still local",
                len(self.reconciler.owned),
                extra=fields(node_id=self.node_id),
            )

    async def _checkpoint(self, child_id: str, token: int, state: Any) -> None:
        await self.reconciler.checkpoint(child_id, token, state)

    # -- messages: local delivery and the RPC dispatcher ------------------------------------

    async def _deliver(
        self,
        kind: str,
        handle: ChildHandle,
        payload: bytes,
        codec: str,
        token: int,
        key: str,
        timeout: float,
        replica: bool = False,
    ) -> CallReplyData:
        if handle.node_id != self.node_id or handle.incarnation != self.session.lease_id:
            return await super()._deliver(
                kind, handle, payload, codec, token, key, timeout, replica
            )
        # Local child: no network, same semantics (and the same codec round trip).
        return await self._local(
            kind,
            handle.child_id,
            token or handle.fencing_token,
            payload,
            codec,
            timeout,
            replica,
        )

    async def _local(
        self,
        kind: str,
        child_id: str,
        token: int,
        payload: bytes,
        codec: str,
        timeout: float,
        replica: bool = False,
    ) -> CallReplyData:
        owned = self.reconciler.owned.get(child_id)
        if replica and owned is None:
            owned = 0  # a replica instance (all_replicas): no owner token to check
            if not self.supervisor.is_running(child_id):
                raise ChildNotRunning(child_id, self.node_id)
        elif owned is None:
            raise ChildMoved(child_id, self.node_id, "this node does not own the child")
        if token and owned and token != owned:
            raise StaleHandle(child_id, self.node_id, token, owned)
        mailbox = self.supervisor.mailbox(child_id, owned or None)
        message = decode_payload(payload, codec, child_id=child_id)
        if kind == "cast":
            mailbox.cast(message)
            return CallReplyData(status=ReplyStatus.OK, node_id=self.node_id, fencing_token=owned)
        try:
            result = await mailbox.call(message, timeout)
        except TimeoutError:
            raise CallTimeout(child_id, self.node_id, f"no reply within {timeout}s") from None
        data, reply_codec = encode_payload(result, child_id=child_id)
        return CallReplyData(
            status=ReplyStatus.OK,
            payload=data,
            codec=reply_codec,
            node_id=self.node_id,
            fencing_token=owned,
        )

    async def dispatch_call(self, request: CallRequestData) -> CallReplyData:
        """RPC server side of :meth:`call`: deliver to the local instance."""
        timeout = self.config.rpc.call_timeout if self.config.rpc else 5.0
        return await self._local(
            "call",
            request.child_id,
            request.fencing_token,
            request.payload,
            request.codec,
            timeout,
            request.all_replicas,
        )

    async def dispatch_cast(self, request: CastRequestData) -> CallReplyData:
        """RPC server side of :meth:`cast`."""
        return await self._local(
            "cast", request.child_id, request.fencing_token, request.payload, request.codec, 0
        )

    # -- lease and registry callbacks ----------------------------------------------------

    async def _on_lease_lost(self, lease_id: int) -> None:
        """Self-fencing: stop every local worker before etcd can expire our keys (in
        availability mode: keep them running and reconcile when etcd is back)."""
        await self.reconciler.lease_lost()
        self.hooks.dispatch(PartitionChanged(True, f"lease {lease_id:x} lost"))

    async def _on_lease(self, lease_id: int) -> None:
        """A new incarnation: publish membership again and reconcile everything."""
        self.membership.request()
        self.reconciler.lease_granted()
        self.hooks.dispatch(PartitionChanged(False, f"rejoined with lease {lease_id:x}"))

    def _partition_changed(self, partitioned: bool, reason: str) -> None:
        self.reconciler.set_partitioned(partitioned)
        self.hooks.dispatch(PartitionChanged(partitioned, reason))

    def registry_changed(self, child_ids: set[str], nodes_changed: bool, full: bool) -> None:
        if not hasattr(self, "reconciler"):
            return  # still constructing
        self.reconciler.registry_changed(child_ids, nodes_changed, full)
        if nodes_changed or full:
            self.quorum.membership_changed()
        if nodes_changed:
            lease = self.session.lease_id
            if lease and self.registry.leave_requests.get(self.node_id) == lease:
                self._leave_requested.set()
        if nodes_changed and not self._stopping and self.session.is_valid():
            entry = self.registry.nodes.get(self.node_id)
            if entry is None or entry.info.incarnation != self.session.lease_id:
                if self.membership.registered_lease == self.session.lease_id:
                    self.membership.request()  # our record vanished: write it again

    # -- supervisor events -> reconciler --------------------------------------------------

    def worker_started(self, child_id: str, fencing_token: int, restarts: int) -> None:
        self.reconciler.worker_started(child_id, fencing_token, restarts)
        self.hooks.dispatch(ChildStarted(child_id, self.node_id, fencing_token, restarts))

    def worker_restarting(
        self, child_id: str, fencing_token: int, restarts: int, reason: str
    ) -> None:
        self.reconciler.worker_restarting(child_id, fencing_token, restarts, reason)
        self.hooks.dispatch(ChildRestarted(child_id, fencing_token, restarts, reason))

    def worker_exited(self, child_id: str, fencing_token: int, exit: WorkerExit) -> None:
        self.reconciler.worker_exited(child_id, fencing_token, exit)

    # -- starting and stopping children ---------------------------------------------------

    def is_partitioned(self) -> bool:
        """True while this node runs nothing because it holds no valid lease (it fenced
        itself) or because the partition strategy says the cluster lost its quorum."""
        return self._alive and (not self.session.is_valid() or self.quorum.partitioned)

    def reset_cluster_size(self, size: int) -> None:
        """After an intentional downsizing under ``MajorityQuorum``: take ``size`` as the
        largest cluster seen, so the smaller cluster has its quorum again (ProcessHub's
        ``reset_cluster_size``). Call it on every remaining node.

        Raises:
            ValueError: the partition strategy is not ``MajorityQuorum``, or ``size < 1``.
        """
        self.quorum.reset_cluster_size(size)

    def placement(self, child_id: str) -> str | None:
        """The node the distribution strategy assigns ``child_id`` to right now."""
        return self.reconciler.placement(child_id)

    def _check_can_start(self) -> None:
        if not self.session.is_valid():
            raise PartitionedError("this node is fenced off from etcd; refusing to start")
        if self.quorum.partitioned:
            raise PartitionedError(f"the cluster lost its quorum ({self.quorum.reason})")

    def nodes(self, *, include_local: bool = False) -> list[str]:
        """Member node ids (draining ones included); this node only with ``include_local``."""
        return sorted(
            node_id for node_id in self.registry.nodes if include_local or node_id != self.node_id
        )

    def process_list(self, scope: Any = "global") -> Any:
        """Running children: ``{child_id: {node_id: handle}}``, or for ``"local"``
        ``{child_id: handle}`` of this node incarnation's children."""
        if scope == "local":
            me, lease = self.node_id, self.session.lease_id
            return {
                cid: h
                for cid, h in self.registry.handles.items()
                if h.node_id == me and h.incarnation == lease
            }
        return super().process_list(scope)

    def is_settled(self) -> bool:
        """True when this node has no reconcile work pending (test and benchmark helper)."""
        return self.reconciler.is_idle() and self.batcher.pending() == 0

    @property
    def state(self) -> NodeState:
        """This node's membership state."""
        return self.membership.state
