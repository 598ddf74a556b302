"""An N-node cluster of in-process :class:`~hub.Hub` nodes, for tests.

Every node runs in the calling event loop and shares one etcd prefix, so a test can start
children on one node, look them up on another, and stop, kill or restart nodes in between::

    async with HubCluster(endpoints, prefix="/my-test", nodes=3) as cluster:
        await cluster.node("node-1").start_children(specs, wait=True)
        where = await cluster.wait_for_placement([s.id for s in specs])
        await cluster.kill(where[specs[0].id])
        await cluster.wait_converged()
        cluster.check_at_most_one_instance()

What a node process does differently (separate interpreters, signals) is out of scope: use
``processhub node`` subprocesses for that.

``kill`` is as close to a crash as one process allows: the node stops renewing its lease
and neither drains nor revokes it, so its node record and owner keys stay in etcd until
the lease expires, and its children come back elsewhere about one ``lease_ttl`` later.
It is :meth:`Hub.abort <hub.hub.Hub.abort>`: unlike ``SIGKILL``, its workers are still
cancelled (their ``finally`` blocks run). :meth:`HubCluster.close` revokes the leases
killed nodes left behind, so nothing outlives the cluster.

Every wait checks, on each look, that no child has an active instance on two live nodes
(:meth:`HubCluster.check_at_most_one_instance`), so a test that waits for convergence also
checks guarantee 1 all along the way.

Ownership: the test (or fixture) that built a :class:`HubCluster` owns its nodes and must
close it (``async with``, or :meth:`~HubCluster.close`); ``processhub_cluster`` does that
at teardown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

from hub.errors import StoreError
from hub.etcd.connection import EtcdConfig
from hub.etcd.store import Store
from hub.hub import Hub
from hub.testing._wait import poll, wait_for

__all__ = ["ClusterFactory", "HubCluster"]

log = logging.getLogger("hub.testing")

DEFAULT_LEASE_TTL = 3  # seconds: children of a killed node come back within ~3 s
_SHOWN_IN_ERRORS = 10


# -- what the cluster reads of a Hub beyond its public API (all of it, in one place) ------


def _members(hub: Hub) -> dict[str, int]:
    """The members ``hub`` sees: ``{node_id: incarnation}``."""
    return {node_id: entry.info.incarnation for node_id, entry in hub.registry.nodes.items()}


def _active_here(hub: Hub) -> dict[str, int]:
    """Children whose *active* instance runs on ``hub`` now: ``{child_id: fencing token}``.

    Replicas run with token 0; only the owner instance has the owner key's fence."""
    supervisor = hub.supervisor
    tokens = ((child_id, supervisor.token(child_id)) for child_id in supervisor.child_ids())
    return {child_id: token for child_id, token in tokens if token}


# -----------------------------------------------------------------------------------------


class HubCluster:
    """In-process nodes of the hub ``hub_id`` under ``prefix`` (see the module docstring).

    Args:
        endpoints: etcd endpoints, ``"host:port"``.
        prefix: etcd key prefix; give every test its own.
        hub_id: the hub's name.
        lease_ttl: every node's lease TTL (2 s minimum).
        nodes: nodes to start on ``async with`` entry: a count or node ids (None: none;
            :meth:`start` and :meth:`add_node` add more).
        prepare: called with each new :class:`~hub.Hub` (also on restart) before it
            starts: register hooks, metrics...
        **options: other :class:`~hub.Hub` options, for every node (``migration=``...).

    Raises:
        ValueError: ``options`` name a node id (node ids are given to :meth:`start`).
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        prefix: str,
        hub_id: str = "test",
        lease_ttl: int = DEFAULT_LEASE_TTL,
        nodes: int | Sequence[str] | None = None,
        prepare: Callable[[Hub], object] | None = None,
        **options: Any,
    ) -> None:
        if "node_id" in options:
            raise ValueError("give node ids to start() or add_node(), not as an option")
        self.endpoints = list(endpoints)
        self.prefix = prefix
        self.hub_id = hub_id
        self.lease_ttl = lease_ttl
        self.options = options
        self._initial = nodes
        self._prepare = prepare
        self._live: dict[str, Hub] = {}
        self._node_options: dict[str, dict[str, Any]] = {}  # per node, for restart
        self._abandoned: list[int] = []  # leases of killed nodes, revoked on close
        self._etcd_config: EtcdConfig | None = None
        self._keys_root = b""
        self._counter = 0

    def __repr__(self) -> str:
        return f"<HubCluster {self.hub_id!r} prefix={self.prefix!r} live={sorted(self._live)}>"

    # -- nodes ---------------------------------------------------------------------------

    @property
    def nodes(self) -> dict[str, Hub]:
        """The live nodes, by node id (a copy)."""
        return dict(self._live)

    @property
    def node_ids(self) -> list[str]:
        """The live node ids, sorted."""
        return sorted(self._live)

    def node(self, node_id: str) -> Hub:
        """The live node ``node_id``.

        Raises:
            KeyError: no such live node (never started, stopped or killed).
        """
        try:
            return self._live[node_id]
        except KeyError:
            raise KeyError(f"no live node {node_id!r}; live: {self.node_ids}") from None

    def __getitem__(self, node_id: str) -> Hub:
        """``cluster["n1"]``: :meth:`node`."""
        return self.node(node_id)

    async def start(self, nodes: int | Sequence[str] = 3) -> Self:
        """Add ``nodes`` nodes (a count, or their ids); returns once all see each other.

        On failure the nodes already started are stopped before the error propagates.
        """
        node_ids = [None] * nodes if isinstance(nodes, int) else list(nodes)
        try:
            for node_id in node_ids:
                await self.add_node(node_id)
        except BaseException:
            await self.close()
            raise
        return self

    async def add_node(self, node_id: str | None = None, **overrides: Any) -> Hub:
        """Start one more node (id ``node-N`` by default) with the cluster's options
        updated by ``overrides``; returns once every live node sees every other.

        Raises:
            ValueError: ``node_id`` is already live.
        """
        if node_id is None:
            node_id = self._next_node_id()
        if node_id in self._live:
            raise ValueError(f"node {node_id!r} is already live")
        options = {**self.options, "lease_ttl": self.lease_ttl, **overrides}
        self._node_options[node_id] = options
        return await self._start_node(node_id, options)

    async def stop(self, node_id: str, *, drain: bool = True) -> None:
        """Stop a node gracefully: its children move to the others first (``drain``),
        then it revokes its lease. Returns once it has left.

        Raises:
            KeyError: no such live node.
        """
        hub = self._pop(node_id)
        await hub.stop(drain=drain)

    async def kill(self, node_id: str) -> None:
        """Stop a node abruptly: no drain and no lease revoke (see the module docstring).

        Its children restart elsewhere once etcd expires its lease, within ``lease_ttl``.

        Raises:
            KeyError: no such live node.
        """
        hub = self._pop(node_id)
        if hub.incarnation:
            self._abandoned.append(hub.incarnation)
        await hub.abort()

    async def restart(self, node_id: str, *, graceful: bool = False, **overrides: Any) -> Hub:
        """Start ``node_id`` again as a new incarnation (a new lease, same node id).

        A live node is killed first (stopped with drain if ``graceful``). ``overrides``
        update the options it was started with.
        """
        if node_id not in self._node_options:
            raise KeyError(f"node {node_id!r} was never started in this cluster")
        if node_id in self._live:
            await (self.stop(node_id) if graceful else self.kill(node_id))
        self._node_options[node_id] = {**self._node_options[node_id], **overrides}
        return await self._start_node(node_id, self._node_options[node_id])

    async def close(self) -> None:
        """Stop every live node (no drain: nothing needs to move), revoke the leases of
        killed nodes and delete the hub's keys from etcd. Idempotent; errors are raised
        after every node was stopped."""
        hubs, self._live = list(self._live.values()), {}
        errors: list[BaseException] = []

        async def stop(hub: Hub) -> None:
            try:
                await hub.stop(drain=False)
            except Exception as exc:
                errors.append(exc)

        async with asyncio.TaskGroup() as tg:  # concurrently: each stop waits on its RPC grace
            for hub in hubs:
                tg.create_task(stop(hub))
        await self._clean_etcd()
        if errors:
            raise errors[0]

    async def __aenter__(self) -> Self:
        if self._initial is not None:
            await self.start(self._initial)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- what the nodes see --------------------------------------------------------------

    def view(self, node_id: str) -> dict[str, str]:
        """The registry as live node ``node_id`` sees it: ``{child_id: node_id}`` of every
        child with a running active instance."""
        hub = self.node(node_id)
        handles = (hub.get_pid(child_id) for child_id in hub.process_list())
        return {h.child_id: h.node_id for h in handles if h is not None and h.is_running}

    def views(self) -> dict[str, dict[str, str]]:
        """:meth:`view` of every live node, by node id."""
        return {node_id: self.view(node_id) for node_id in self.node_ids}

    def instances(self) -> dict[str, list[str]]:
        """Where active instances run now, as the workers say (not the registry):
        ``{child_id: [node ids]}``."""
        found: dict[str, list[str]] = {}
        for node_id in self.node_ids:
            for child_id in _active_here(self._live[node_id]):
                found.setdefault(child_id, []).append(node_id)
        return found

    def check_at_most_one_instance(self) -> None:
        """Guarantee 1: no child has an active instance on two live nodes at once.

        Raises:
            AssertionError: naming every child that does, and where.
        """
        twice = {c: nodes for c, nodes in self.instances().items() if len(nodes) > 1}
        assert not twice, f"children active on more than one node: {twice}"

    # -- waiting -------------------------------------------------------------------------

    async def wait_for_placement(
        self, child_ids: Iterable[str], timeout: float = 10.0
    ) -> dict[str, str]:
        """Wait until every child runs on a live node, as every live node sees it.

        "Runs" means: its owner is the current incarnation of a live node, in state
        ``running``. A child still owned by a killed node (whose lease has not expired)
        does not count. Returns ``{child_id: node_id}``.

        Raises:
            TimeoutError: not all placed within ``timeout`` s; says which and why.
            AssertionError: a child was active on two nodes at one look.
        """
        ids = list(child_ids)

        def placed() -> dict[str, str] | None:
            self.check_at_most_one_instance()
            return self._placement(ids)

        return await poll(placed, timeout, explain=lambda: self._unplaced(ids))

    async def wait_settled(self, timeout: float = 10.0) -> None:
        """Wait until every live node sees exactly the live nodes (killed ones' leases
        expired, restarted ones' new incarnations) and has no reconcile work pending.

        Raises:
            TimeoutError: not settled within ``timeout`` s.
            AssertionError: a child was active on two nodes at one look.
        """
        calm = 0  # reconcile work comes in bursts: ask for two calm looks in a row

        def settled() -> bool:
            nonlocal calm
            self.check_at_most_one_instance()
            calm = calm + 1 if self._is_settled() else 0
            return calm >= 2

        await wait_for(settled, timeout, interval=0.05, message=f"{self!r} not settled")

    async def wait_converged(self, timeout: float = 10.0) -> dict[str, str]:
        """Wait until the cluster is settled and every live node has the same view, in
        which each child runs on a live node's current incarnation; returns that view.

        Raises:
            TimeoutError: not converged within ``timeout`` s; shows the views.
            AssertionError: a child was active on two nodes at one look.
        """
        calm = 0

        def converged() -> dict[str, str] | None:
            nonlocal calm
            self.check_at_most_one_instance()
            views = self.views().values()
            agreed = self._placement(sorted({c for view in views for c in view}))
            if not self._is_settled() or agreed is None or any(v != agreed for v in views):
                calm = 0
                return None
            calm += 1  # as in wait_settled: two calm looks in a row
            return agreed if calm >= 2 else None

        return await poll(
            converged, timeout, interval=0.05, explain=lambda: f"{self!r} views: {self.views()}"
        )

    # -- internals -----------------------------------------------------------------------

    def _pop(self, node_id: str) -> Hub:
        hub = self._live.pop(node_id, None)
        if hub is None:
            raise KeyError(f"no live node {node_id!r}; live: {self.node_ids}")
        return hub

    def _next_node_id(self) -> str:
        while True:
            self._counter += 1
            candidate = f"node-{self._counter}"
            if candidate not in self._node_options:
                return candidate

    async def _start_node(self, node_id: str, options: Mapping[str, Any]) -> Hub:
        hub = Hub(
            self.hub_id,
            endpoints=self.endpoints,
            prefix=self.prefix,
            node_id=node_id,
            **options,
        )
        self._etcd_config = hub.config.etcd
        self._keys_root = hub.keys.root
        if self._prepare is not None:
            self._prepare(hub)
        await hub.start()
        self._live[node_id] = hub
        await wait_for(
            self._all_see_each_other,
            float(hub.config.startup_timeout),
            message=f"nodes of {self!r} do not all see each other",
        )
        return hub

    def _incarnations(self) -> dict[str, int]:
        return {node_id: hub.incarnation for node_id, hub in self._live.items()}

    def _all_see_each_other(self) -> bool:
        live = self._incarnations().items()
        return all(live <= _members(hub).items() for hub in self._live.values())

    def _is_settled(self) -> bool:
        live = self._incarnations()
        return all(_members(hub) == live and hub.is_settled() for hub in self._live.values())

    def _placement(self, child_ids: list[str]) -> dict[str, str] | None:
        if not self._live:
            return None
        where: dict[str, str] = {}
        for child_id in child_ids:
            node_id = self._runs_on(child_id)
            if node_id is None:
                return None
            where[child_id] = node_id
        return where

    def _runs_on(self, child_id: str) -> str | None:
        """The live node running ``child_id`` if every live node agrees, else None."""
        seen: set[str] = set()
        for hub in self._live.values():
            handle = hub.get_pid(child_id)
            if handle is None or not handle.is_running:
                return None
            owner = self._live.get(handle.node_id)
            if owner is None or owner.incarnation != handle.incarnation:
                return None
            seen.add(handle.node_id)
        return seen.pop() if len(seen) == 1 else None

    def _unplaced(self, child_ids: list[str]) -> str:
        """Why the children are not placed yet, as the first live node sees it."""
        if not self._live:
            return "no live node"
        viewer = next(iter(self._live.values()))
        reasons: list[str] = []
        for child_id in child_ids:
            if self._runs_on(child_id) is not None:
                continue
            handle = viewer.get_pid(child_id)
            if handle is None:
                reasons.append(f"{child_id}: no owner")
            elif handle.node_id not in self._live:
                reasons.append(f"{child_id}: owned by gone node {handle.node_id}")
            elif not handle.is_running:
                reasons.append(f"{child_id}: {handle.state.value} on {handle.node_id}")
            else:
                reasons.append(f"{child_id}: nodes disagree or stale incarnation")
        shown = "; ".join(reasons[:_SHOWN_IN_ERRORS])
        hidden = len(reasons) - _SHOWN_IN_ERRORS
        more = f" and {hidden} more" if hidden > 0 else ""
        return f"{len(reasons)} of {len(child_ids)} children not placed: {shown}{more}"

    async def _clean_etcd(self) -> None:
        """Best effort: revoke what killed nodes left and delete the hub's keys, so nothing
        stays behind in an etcd the suite may share with others."""
        abandoned, self._abandoned = self._abandoned, []
        if self._etcd_config is None:
            return
        try:
            async with Store(self._etcd_config) as store:
                for lease_id in abandoned:  # their TTL would do it a little later
                    await store.lease_revoke(lease_id, timeout=2.0)
                await store.delete(self._keys_root, prefix=True)
        except StoreError as exc:
            log.warning("could not clean up the test cluster's keys: %s", exc)


class ClusterFactory:
    """``await factory(nodes=3, **options)`` starts a :class:`HubCluster`; ``close()``
    stops every cluster it made. What the ``processhub_cluster`` fixture gives a test.

    Clusters get the prefix ``prefix``, then ``prefix-2``, ``prefix-3``...: independent
    unless a call passes ``prefix=`` (or the same ``hub_id`` and prefix) explicitly. They
    use ``endpoints`` unless a call passes ``endpoints=`` (e.g. a
    ``processhub_fresh_etcd``'s); ``endpoints`` may be a function, called the first time
    a cluster needs the default.
    """

    def __init__(self, endpoints: Sequence[str] | Callable[[], Sequence[str]], prefix: str) -> None:
        self._endpoints = endpoints
        self.prefix = prefix
        self.clusters: list[HubCluster] = []

    @property
    def endpoints(self) -> list[str]:
        """The default etcd endpoints."""
        if callable(self._endpoints):
            self._endpoints = list(self._endpoints())
        return list(self._endpoints)

    async def __call__(
        self,
        nodes: int | Sequence[str] = 3,
        *,
        endpoints: Sequence[str] | None = None,
        **options: Any,
    ) -> HubCluster:
        """Start a cluster of ``nodes`` nodes (a count or their ids); see :class:`HubCluster`."""
        if "prefix" not in options:
            n = len(self.clusters)
            options["prefix"] = self.prefix if n == 0 else f"{self.prefix}-{n + 1}"
        cluster = HubCluster(self.endpoints if endpoints is None else endpoints, **options)
        self.clusters.append(cluster)  # closed at teardown even if it fails to start
        return await cluster.start(nodes)

    async def close(self) -> None:
        """Close every cluster, the last made first; raise the first error afterwards."""
        errors: list[BaseException] = []
        for cluster in reversed(self.clusters):
            try:
                await cluster.close()
            except Exception as exc:
                errors.append(exc)
        self.clusters.clear()
        if errors:
            raise errors[0]
