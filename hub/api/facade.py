"""The public cluster API that :class:`hub.Hub` and :class:`hub.HubClient` both expose.

:class:`ClusterApi` holds no state and no logic: each method delegates to the owner's
:class:`~hub.api.cluster.Cluster` (``self.cluster``), so a Hub and a HubClient have the same
methods with the same signatures and docs, and behave the same wherever they may (a node
delivers calls to its own children without the network, and refuses starts while fenced:
the cluster's :class:`~hub.api.policy.Policy`). Annotate with ``ClusterApi`` code that
accepts either.

It also carries what both owners share about their lifecycle: ``async with`` (see
:class:`~hub.api.lifecycle.Lifecycle` for how a failing component is reported),
:meth:`is_alive`, :attr:`failed` and :attr:`failure`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, overload

from hub.api.cluster import Cluster
from hub.api.lifecycle import Lifecycle
from hub.config import HubConfig
from hub.core.registry import Registry
from hub.errors import HubFailed
from hub.etcd.batcher import TxnBatcher
from hub.etcd.informer import Informer
from hub.etcd.keys import KeySpace
from hub.etcd.store import Store
from hub.messaging.rpc import RpcClient
from hub.model import ChildHandle, ChildSpec, StartResult, StopResult
from hub.worker import AllowList

Scope = Literal["global", "local"]


class ClusterApi:
    """Start, stop, call and find children of the cluster (see the module docstring)."""

    cluster: Cluster
    _lifecycle: Lifecycle
    #: The validated configuration.
    config: HubConfig
    keys: KeySpace
    store: Store
    registry: Registry
    informer: Informer
    batcher: TxnBatcher
    rpc_client: RpcClient
    allow: AllowList | None

    def _attach(self, cluster: Cluster, lifecycle: Lifecycle) -> None:
        """Called by the owner's ``__init__``: expose the cluster and its components."""
        self.cluster = cluster
        self._lifecycle = lifecycle
        conn = cluster.connection
        self.config = conn.config
        self.keys = conn.keys
        self.store = conn.store
        self.registry = conn.registry
        self.informer = conn.informer
        self.batcher = conn.batcher
        self.rpc_client = conn.rpc_client
        self.allow = conn.allow

    if TYPE_CHECKING:  # each owner defines them: a Hub joins and leaves, a client connects

        def _assemble(self, config: HubConfig) -> None: ...

        async def start(self) -> None: ...

        async def stop(self) -> None: ...

    @classmethod
    def from_config(cls, config: HubConfig) -> Self:
        """Build from a ready :class:`HubConfig` (a client does not use its node-only
        options)."""
        owner = cls.__new__(cls)
        owner._assemble(config)
        return owner

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        self._lifecycle.enter_body()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop; if a component failed while the body ran, raise :class:`HubFailed`
        (the body was interrupted by it) instead of the CancelledError that interrupted it."""
        await self._lifecycle.exit_body(exc, self.stop)

    @property
    def hub_id(self) -> str:
        """The cluster's name."""
        return self.config.hub_id

    @property
    def node_id(self) -> str:
        """This process's node id (a client's is only a name)."""
        return self.config.node_id

    @property
    def revision(self) -> int:
        """The etcd revision the local registry reflects."""
        return self.registry.revision

    @property
    def failed(self) -> asyncio.Event:
        """Set when a component failed while running; then :attr:`failure` says which.

        The hub stopped itself in order (no drain) when it was set; ``await
        hub.failed.wait()`` to notice it beside other work.
        """
        return self._lifecycle.failed

    @property
    def failure(self) -> HubFailed | None:
        """The :class:`HubFailed` that stopped this hub (component and cause), or None."""
        return self._lifecycle.failure

    def is_alive(self) -> bool:
        """True between a successful start and stop (or a component failure)."""
        return self.cluster.connection.alive

    def placement(self, child_id: str) -> str | None:
        """The node ``child_id`` belongs on right now: its pin, or the distribution
        strategy's choice at the current membership (None: no eligible node)."""
        return self.cluster.policy.placement(child_id)

    # -- starting and stopping children ------------------------------------------------

    async def start_child(
        self,
        spec: ChildSpec,
        *,
        wait: bool = False,
        timeout: float = 10.0,
        check_existing: bool = True,
        on_failure: Literal["continue", "rollback"] = "continue",
        metadata: dict[str, Any] | None = None,
    ) -> StartResult:
        """Start one child; see :meth:`start_children`."""
        return await self.cluster.children.start_children(
            [spec],
            wait=wait,
            timeout=timeout,
            check_existing=check_existing,
            on_failure=on_failure,
            metadata=metadata,
            child_mapping=None,
        )

    async def start_children(
        self,
        specs: Sequence[ChildSpec],
        *,
        wait: bool = False,
        timeout: float = 10.0,
        check_existing: bool = True,
        on_failure: Literal["continue", "rollback"] = "continue",
        metadata: dict[str, Any] | None = None,
        child_mapping: Mapping[str, Sequence[str]] | None = None,
    ) -> StartResult:
        """Start children somewhere in the cluster.

        The specs are written durably (create-if-absent, batched) before this returns;
        the ring owner of each child then acquires it and starts its worker.

        Args:
            specs: the children. Ids must be unique in the cluster.
            wait: wait until every child runs (or failed) and report handles.
            timeout: how long to wait, seconds.
            check_existing: refuse the whole request with :class:`AlreadyStarted` if any
                id already exists **anywhere in the cluster** (checked in etcd). With False,
                existing ids become ``already_started`` error entries and the rest start.
            on_failure: ``"rollback"`` stops every child of this request if any failed
                (implies waiting).
            metadata: merged into every spec's metadata (``"tag"`` feeds ``tag_query``).
            child_mapping: ``{child_id: [node, ...]}`` pins children to nodes (guided
                placement); required for every child with ``distribution=Guided()``, where
                it is validated with ProcessHub's errors (``MissingChildMapping``,
                ``InvalidChildMapping``, ``ChildMappingMismatch``,
                ``ChildReplicationMismatch``; all ``ValueError``).

        Returns:
            StartResult: ``pending`` ids when not waiting; ``started`` handles and
            ``errors`` (child id, node, reason) when waiting.

        Raises:
            InvalidSpec: empty request, a non-spec item, bad ``on_failure``/``metadata``.
            AlreadyStarted: ``check_existing`` found existing children (nothing started).
            PartitionedError: this node has no valid lease (it is fenced off from etcd).
            HubClosed: the hub is not running.
        """
        return await self.cluster.children.start_children(
            specs,
            wait=wait,
            timeout=timeout,
            check_existing=check_existing,
            on_failure=on_failure,
            metadata=metadata,
            child_mapping=child_mapping,
        )

    async def stop_child(
        self, child_id: str, *, wait: bool = False, timeout: float = 10.0
    ) -> StopResult:
        """Stop one child; see :meth:`stop_children`."""
        return await self.cluster.children.stop_children([child_id], wait=wait, timeout=timeout)

    async def stop_children(
        self, child_ids: Sequence[str], *, wait: bool = False, timeout: float = 10.0
    ) -> StopResult:
        """Stop children cluster-wide: their specs are deleted, their owners stop them.

        An awaited stop waits only for the nodes that ran the children.

        Returns:
            StopResult: ``stopped`` children with the node they ran on (when waiting),
            ``errors`` with reason ``"not_found"`` for unknown ids or ``"timeout"``.

        Raises:
            InvalidSpec: empty request; InvalidChildId: malformed id.
        """
        return await self.cluster.children.stop_children(child_ids, wait=wait, timeout=timeout)

    # -- talking to children -------------------------------------------------------------

    async def call(
        self,
        target: str | ChildHandle,
        message: Any,
        *,
        timeout: float = 5.0,
        idempotency_key: str = "",
        all_replicas: bool = False,
    ) -> Any:
        """Send ``message`` to a child's ``handle_call`` and return its reply.

        With ``all_replicas`` (replication), every running instance gets the call and the
        result is ``{node_id: reply or the CallError it raised}``.

        ``target`` is a child id (whoever runs it now; under replication, the active
        replica) or a :class:`ChildHandle` (that incarnation only: a call to a stale handle
        fails with :class:`StaleHandle` and never reaches the new instance). A call in
        flight during a migration or failover follows the child: a node that no longer runs
        it answers "moved" (the message was not delivered) and the call is retried against
        the new owner within ``timeout``. Delivery is **at most once**: a message is never
        handled twice by this library; pass ``idempotency_key`` for your own dedupe when
        you retry after a timeout.

        Raises:
            ChildNotFound, StaleHandle, NotCallable, HandlerError, MailboxFull,
            PayloadTooLarge, NotSerializable, RpcAuthError, CallTimeout (no reply in time).
        """
        return await self.cluster.calls.call(
            target,
            message,
            timeout=timeout,
            idempotency_key=idempotency_key,
            all_replicas=all_replicas,
        )

    async def cast(self, target: str | ChildHandle, message: Any, *, timeout: float = 5.0) -> None:
        """Queue ``message`` for a child's ``handle_cast``; returns once it is enqueued.

        Raises the same errors as :meth:`call` (``MailboxFull`` when the mailbox is full).
        """
        await self.cluster.calls.cast(target, message, timeout=timeout)

    # -- operator moves -------------------------------------------------------------------

    async def pin(self, child_id: str, nodes: Sequence[str]) -> None:
        """Pin a child to ``nodes`` (in order of preference); ``[]`` unpins it.

        A pinned child runs on its first pinned node that is an active member; if none is,
        it waits (it is not dropped). The spec is updated with a compare-and-set, so
        concurrent pins never lose an update silently.

        Raises:
            UnknownChild: no such child. InvalidSpec: a malformed node id.
        """
        await self.cluster.moves.pin(child_id, nodes)

    async def unpin(self, child_id: str) -> None:
        """Let the distribution strategy place the child again (it may move)."""
        await self.cluster.moves.pin(child_id, ())

    async def move(
        self, child_id: str, node_id: str, *, wait: bool = True, timeout: float = 10.0
    ) -> ChildHandle | None:
        """Move a child to ``node_id`` and pin it there (with the hub's migration strategy:
        hot swap hands its state over). Returns the new handle when waiting.

        Raises:
            UnknownChild, UnknownNode: no such child or active member.
            TimeoutError: waited longer than ``timeout``.
        """
        return await self.cluster.moves.move(child_id, node_id, wait=wait, timeout=timeout)

    async def drain(self, node_id: str, *, wait: bool = True, timeout: float = 60.0) -> None:
        """Ask a node to hand all its children over and leave the cluster.

        The request names the node's current incarnation, so a node restarted later under
        the same id is not affected. ``processhub node`` exits 0 once drained; an embedded
        :class:`hub.Hub` sets ``hub.left``. With ``wait``, returns when the node owns no
        child any more, then withdraws the request.

        Raises:
            UnknownNode: no such member. TimeoutError: not drained within ``timeout``.
        """
        await self.cluster.moves.drain(node_id, wait=wait, timeout=timeout)

    # -- lookups: local, no network ------------------------------------------------------

    @overload
    def process_list(self, scope: Literal["global"] = ...) -> dict[str, dict[str, ChildHandle]]: ...

    @overload
    def process_list(self, scope: Literal["local"]) -> dict[str, ChildHandle]: ...

    def process_list(self, scope: Scope = "global") -> Any:
        """Running children: ``{child_id: {node_id: handle}}`` or, for ``"local"``,
        ``{child_id: handle}`` of the children this node incarnation runs (always empty
        for a client).

        Only running instances are listed: one starting, in restart backoff or parked as
        failed (owner state or replica role ``failed``) is not; :meth:`get_pids` and
        :meth:`child_lookup` show every instance.

        Raises:
            InvalidSpec: ``scope`` is neither ``"global"`` nor ``"local"``.
        """
        return self.cluster.process_list(scope)

    def get_pid(self, child_id: str) -> ChildHandle | None:
        """Where a child's active instance runs (None if unknown). O(1), local."""
        # The hottest lookup: one dict read, no delegation (the registry mutates its
        # handles in place, so this is what Cluster.get_pid reads too).
        return self.registry.handles.get(child_id)

    def get_pids(self, child_id: str) -> list[ChildHandle]:
        """Every instance of a child, the primary (active) first; ``[]`` if unknown."""
        return self.cluster.get_pids(child_id)

    def active_replica(self, child_id: str) -> ChildHandle | None:
        """The instance that is active under active/passive replication (the primary:
        it holds the owner key and the fencing token); same as :meth:`get_pid`."""
        return self.cluster.get_pid(child_id)

    def child_lookup(self, child_id: str, *, with_metadata: bool = False) -> tuple[Any, ...] | None:
        """``(spec, {node: handle})`` or with metadata ``(spec, {node: handle}, metadata)``;
        None if the child does not exist."""
        return self.cluster.child_lookup(child_id, with_metadata=with_metadata)

    def tag_query(self, tag: str) -> dict[str, dict[str, ChildHandle]]:
        """Children whose ``metadata["tag"]`` equals ``tag``: ``{child_id: {node: handle}}``."""
        return self.cluster.tag_query(tag)

    def registry_dump(self) -> dict[str, tuple[ChildSpec, dict[str, ChildHandle], dict[str, Any]]]:
        """Every child: ``{child_id: (spec, {node: handle}, metadata)}``."""
        return self.cluster.registry_dump()

    def nodes(self, *, include_local: bool = False) -> list[str]:
        """Member node ids (draining ones included); this node only with ``include_local``."""
        return self.cluster.nodes(include_local=include_local)
