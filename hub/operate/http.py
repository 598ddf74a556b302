"""Node HTTP endpoints: health, readiness, Prometheus metrics and a JSON read model.

:class:`HubMetrics` collects one hub's metrics into its own
:class:`prometheus_client.CollectorRegistry` (never the process-wide default: several hubs
may live in one process). Counters of events come from hooks, durations from observer
callbacks (etcd requests, reconcile rounds, hand-overs); everything else is read from the
hub when scraped.

:class:`HttpServer` is a deliberately tiny HTTP/1.1 server on :func:`asyncio.start_server`:

=================  ==============================================================
``GET /healthz``   200 ``ok`` while the event loop answers.
``GET /readyz``    200 ``ready`` when the hub runs, holds a valid lease, its informer has
                   synced, it is not draining and not partitioned; else 503 and a
                   one-line reason.
``GET /metrics``   Prometheus text format.
``GET /api/nodes``     JSON: members (address, state, load, capacity...).
``GET /api/children``  JSON: children (node, state, token, restarts...).
``GET /``          The live dashboard (``hub/operate/dashboard.html``: one self-contained page).
``GET /api/events``    Server-Sent Events feeding the dashboard (see :class:`EventFeed`).
=================  ==============================================================

Other paths answer 404, other methods 405. Every response closes its connection. Request
heads are bounded (:data:`MAX_REQUEST_HEAD`) and must arrive within ``read_timeout``;
connections beyond ``max_connections`` get 503 at once. Handlers only read memory: nothing
blocks the event loop but the (linear) rendering of the answer.

``/api/events`` is the one long-lived response: ``text/event-stream`` without a length,
ended by the server. On connect it sends a ``snapshot`` event (``nodes`` and ``children``
shaped as ``/api/nodes`` and ``/api/children``, plus the recent ``events``), then a new
``snapshot`` after registry batches (coalesced: at most one per
:data:`SNAPSHOT_INTERVAL`), an ``event`` message per cluster event (children started,
moved, restarted, failed or stopped anywhere, derived from the registry; nodes joined or
left; this node's partition changes), and a comment line every :data:`HEARTBEAT_INTERVAL`
seconds. Each client has a bounded queue: a client
that cannot keep up is dropped, the node never waits for it.

Tasks: :func:`asyncio.start_server` runs one task per connection; the server tracks them and
cancels and awaits every one in :meth:`HttpServer.stop` (event streams are first told to
end, and get a moment to do so).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.resources
import itertools
import json
import time
import weakref
from collections import Counter as Tally
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Self
from urllib.parse import urlsplit

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hub.core.hooks import (
    ChildFailed,
    ChildrenMigrated,
    ChildRestarted,
    ChildStarted,
    ChildStopped,
    HookEvent,
    HookHandler,
    HookName,
    PartitionChanged,
)
from hub.core.registry import OwnerChange
from hub.errors import ConfigError
from hub.logs import fields, get_logger
from hub.model import NodeState, OwnerState
from hub.operate.events import ChildEvent, ChildEvents

if TYPE_CHECKING:
    from hub.hub import Hub

__all__ = [
    "CHILD_STATES",
    "HANDOVER_BUCKETS",
    "HEARTBEAT_INTERVAL",
    "MAX_REQUEST_HEAD",
    "SNAPSHOT_INTERVAL",
    "EventFeed",
    "HttpServer",
    "HubMetrics",
    "child_event_record",
    "children_view",
    "event_record",
    "nodes_view",
    "readiness",
]

log = get_logger("hub.operate.http")

#: Largest accepted request line plus headers, in bytes (larger: 431).
MAX_REQUEST_HEAD = 8192
#: Label values of ``processhub_*_children{state=...}``: the owner states, ``pending`` (a
#: spec nobody owns yet) and ``unknown`` (an owner record that could not be decoded).
CHILD_STATES: tuple[str, ...] = (*(s.value for s in OwnerState), "pending", "unknown")
#: ``processhub_child_stops_total{reason=...}`` label values; other reasons count as "other".
_STOP_REASONS = frozenset({"normal", "crashed", "stopped", "migrated", "fenced", "shutdown"})
_HOOK_ID = "processhub.metrics"
#: Seconds between two ``snapshot`` events of ``/api/events`` (registry batches coalesce).
SNAPSHOT_INTERVAL = 0.2
#: Seconds between two keep-alive comments on an idle ``/api/events`` stream.
HEARTBEAT_INTERVAL = 15.0
#: ``processhub_handover_duration_seconds`` buckets: a cold move commits in milliseconds; a
#: hot swap waits for the worker to stop and hand its state over (bounded by timeouts).
HANDOVER_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


# -- read model ----------------------------------------------------------------------------


def readiness(hub: Hub) -> str | None:
    """Why ``hub`` is not ready to serve, or None when it is."""
    if not hub.is_alive():
        return "hub is not running"
    if not hub.informer.synced.is_set():
        return "informer has not synced"
    if not hub.session.is_valid():
        return "no valid lease"
    if hub.stop_requested:
        return "node is stopping"
    if hub.membership.state is NodeState.DRAINING or hub.reconciler.draining:
        return "node is draining"
    if hub.quorum.partitioned:
        return f"partitioned: {hub.quorum.reason}"
    return None


def nodes_view(hub: Hub) -> dict[str, Any]:
    """The members as the registry sees them (the body of ``GET /api/nodes``)."""
    registry = hub.registry
    nodes = [
        {
            "node_id": node_id,
            "address": entry.info.address,
            "state": entry.info.state.value,
            "load": entry.info.load,
            "capacity": entry.info.capacity,
            "weight": entry.info.weight,
            "labels": dict(entry.info.labels),
            "incarnation": entry.info.incarnation,
            "version": entry.info.version,
            "started_at": entry.info.started_at,
        }
        for node_id, entry in sorted(registry.nodes.items())
    ]
    return {"hub_id": hub.hub_id, "revision": registry.revision, "nodes": nodes}


def _child_state(hub: Hub, child_id: str) -> str:
    owner = hub.registry.owners.get(child_id)
    if owner is None:
        return "pending"
    if owner.record is None:
        return "unknown"
    return owner.record.state.value


def children_view(hub: Hub) -> dict[str, Any]:
    """Every child the registry knows (the body of ``GET /api/children``).

    A child with a spec but no owner has state ``pending`` and node None; an undecodable
    owner record gives state ``unknown``.
    """
    registry = hub.registry
    children = []
    for child_id in sorted(registry.specs.keys() | registry.owners.keys()):
        handle = registry.handles.get(child_id)
        replicas = registry.replicas.get(child_id, {})
        children.append(
            {
                "child_id": child_id,
                "node": handle.node_id if handle is not None else None,
                "state": _child_state(hub, child_id),
                "token": handle.fencing_token if handle is not None else 0,
                "restarts": handle.restarts if handle is not None else 0,
                "incarnation": handle.incarnation if handle is not None else 0,
                "started_at": handle.started_at if handle is not None else 0.0,
                "last_exit": handle.last_exit if handle is not None else "",
                "has_spec": child_id in registry.specs,
                "replicas": [
                    {"node": node_id, "role": entry.handle.role}
                    for node_id, entry in sorted(replicas.items())
                ],
            }
        )
    return {"hub_id": hub.hub_id, "revision": registry.revision, "children": children}


# -- metrics -------------------------------------------------------------------------------


class _HubCollector(Collector):
    """Values read from the hub at scrape time that a ``Gauge.set_function`` cannot
    express: per-state child counts (one pass over the registry) and the hub's own
    monotonic counters."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    def describe(self) -> list[Metric]:
        return []  # collected lazily; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        hub = self._hub
        registry = hub.registry
        me = hub.node_id
        cluster: Tally[str] = Tally()
        local: Tally[str] = Tally()
        for child_id in registry.specs.keys() | registry.owners.keys():
            state = _child_state(hub, child_id)
            cluster[state] += 1
            handle = registry.handles.get(child_id)
            if handle is not None and handle.node_id == me:
                local[state] += 1
        node = GaugeMetricFamily(
            "processhub_node_children",
            "Children the registry shows owned by this node, by owner state.",
            labels=["state"],
        )
        total = GaugeMetricFamily(
            "processhub_registry_children",
            "Children in the registry (specs and owners), by owner state.",
            labels=["state"],
        )
        for state in CHILD_STATES:
            if state != "pending":
                node.add_metric([state], local[state])
            total.add_metric([state], cluster[state])
        yield node
        yield total
        stats = hub.hooks.stats
        counters: tuple[tuple[str, str, int], ...] = (
            ("processhub_informer_reconnects", "Watch reconnects.", hub.informer.reconnects),
            ("processhub_informer_relists", "Full relists of the prefix.", hub.informer.relists),
            ("processhub_registry_corrupt_records", "Undecodable records.", registry.corrupt),
            ("processhub_batcher_batches", "Transactions the batcher sent.", hub.batcher.batches),
            ("processhub_batcher_ops", "Operations the batcher sent.", hub.batcher.ops),
            ("processhub_reconcile_rounds", "Reconcile rounds run.", hub.reconciler.rounds),
            ("processhub_lease_incarnations", "Leases granted.", hub.session.incarnations),
            ("processhub_hook_dispatches", "Hook handler invocations.", stats.dispatched),
            ("processhub_hook_failures", "Hook handlers that failed.", stats.failed),
            ("processhub_hook_timeouts", "Hook handlers cancelled on timeout.", stats.timed_out),
            ("processhub_hook_drops", "Async hook jobs dropped.", stats.dropped),
        )
        for name, documentation, value in counters:
            yield CounterMetricFamily(name, documentation, value=value)


class HubMetrics:
    """Prometheus metrics of one hub, in :attr:`registry` (a per-hub registry).

    Registers sync hook handlers (id ``"processhub.metrics"``), a registry observer, the
    store's request observer and the reconciler's round and hand-over observers on ``hub``;
    :meth:`close` removes them. One per hub: :meth:`of` finds it.

    Raises:
        hub.hooks.DuplicateHook: ``hub`` already has a :class:`HubMetrics`.
    """

    _by_hub: ClassVar[weakref.WeakKeyDictionary[Hub, HubMetrics]] = weakref.WeakKeyDictionary()

    def __init__(self, hub: Hub, registry: CollectorRegistry | None = None) -> None:
        self.hub = hub
        self.registry = registry if registry is not None else CollectorRegistry()
        reg = self.registry
        labels = {"hub_id": hub.hub_id, "node_id": hub.node_id}
        info = Gauge("processhub_node_info", "This node (always 1).", list(labels), registry=reg)
        info.labels(**labels).set(1)

        self.starts = Counter(
            "processhub_child_starts",
            "Worker starts on this node (restarts included).",
            registry=reg,
        )
        self.restarts = Counter(
            "processhub_child_restarts",
            "Worker crashes on this node that led to a restart.",
            registry=reg,
        )
        self.failures = Counter(
            "processhub_child_failures", "Children parked as failed on this node.", registry=reg
        )
        self.stops = Counter(
            "processhub_child_stops",
            "Workers that ended for good on this node, by reason.",
            ["reason"],
            registry=reg,
        )
        self.migrations = Counter(
            "processhub_children_migrated",
            "Children this node handed over to other nodes.",
            registry=reg,
        )
        self.partition_changes = Counter(
            "processhub_partition_changes",
            "Entries into and exits from partitioned mode.",
            registry=reg,
        )
        self.registry_updates = Counter(
            "processhub_registry_updates",
            "Registry updates applied: watch batches (kind=batch) and listings (kind=full).",
            ["kind"],
            registry=reg,
        )
        self.registry_children_touched = Counter(
            "processhub_registry_children_touched",
            "Child ids touched by registry updates.",
            registry=reg,
        )
        self.etcd_seconds = Histogram(
            "processhub_etcd_request_seconds",
            "Latency of etcd requests by method.",
            ["method"],
            registry=reg,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self.etcd_errors = Counter(
            "processhub_etcd_request_errors",
            "Failed etcd requests by method and error.",
            ["method", "error"],
            registry=reg,
        )
        self.reconcile_seconds = Histogram(
            "processhub_reconcile_round_seconds",
            "Duration of reconcile rounds (acquire, release, start, stop of a batch).",
            registry=reg,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.without_owner = Histogram(
            "processhub_child_without_owner_seconds",
            "Per migration or failover as this node's registry saw it: from the old owner "
            "key's deletion to the new owner running.",
            registry=reg,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
        )
        self.handover = Histogram(
            "processhub_handover_duration_seconds",
            "Per child this node handed to another node (rebalance, move, drain): from the "
            "decision to release it to the commit of the release (a hot swap includes "
            "stopping the worker and collecting its state), by migration kind.",
            ["migration"],
            registry=reg,
            buckets=HANDOVER_BUCKETS,
        )
        self.handover.labels(migration="hot" if hub.reconciler.migration.handover else "cold")
        self._gone_at: dict[str, float] = {}
        for kind in ("batch", "full"):
            self.registry_updates.labels(kind=kind)
        for reason in (*sorted(_STOP_REASONS), "other"):
            self.stops.labels(reason=reason)

        session, registry_, informer = hub.session, hub.registry, hub.informer
        gauges: tuple[tuple[str, str, Callable[[], float]], ...] = (
            (
                "processhub_lease_time_left_seconds",
                "Seconds until the lease's local deadline.",
                session.time_left,
            ),
            (
                "processhub_lease_valid",
                "1 while this node holds a valid lease.",
                lambda: float(session.is_valid()),
            ),
            (
                "processhub_partitioned",
                "1 while this node is partitioned (fenced or no quorum).",
                lambda: float(hub.is_partitioned()),
            ),
            (
                "processhub_ready",
                "1 while /readyz answers 200.",
                lambda: float(readiness(hub) is None),
            ),
            (
                "processhub_draining",
                "1 while this node drains.",
                lambda: float(hub.reconciler.draining),
            ),
            (
                "processhub_informer_synced",
                "1 once the first listing was applied.",
                lambda: float(informer.synced.is_set()),
            ),
            (
                "processhub_watch_lag_revisions",
                "Revisions etcd has that the watch has not seen.",
                lambda: float(informer.lag),
            ),
            (
                "processhub_registry_revision",
                "etcd revision the registry reflects.",
                lambda: float(registry_.revision),
            ),
            (
                "processhub_registry_nodes",
                "Members in the registry.",
                lambda: float(len(registry_.nodes)),
            ),
            (
                "processhub_registry_specs",
                "Child specs in the registry.",
                lambda: float(len(registry_.specs)),
            ),
            (
                "processhub_registry_owners",
                "Owner keys in the registry.",
                lambda: float(len(registry_.owners)),
            ),
            (
                "processhub_registry_replicas",
                "Replica instances in the registry.",
                lambda: float(sum(len(r) for r in registry_.replicas.values())),
            ),
            (
                "processhub_owned_children",
                "Children this node's reconciler owns.",
                lambda: float(len(hub.reconciler.owned)),
            ),
            (
                "processhub_unreadable_states",
                "Children parked as failed since start: saved state too large to read.",
                lambda: float(hub.reconciler.unreadable_states),
            ),
            (
                "processhub_supervised_workers",
                "Worker tasks alive on this node.",
                lambda: float(len(hub.supervisor)),
            ),
            (
                "processhub_batcher_pending",
                "Operations waiting in the batcher.",
                lambda: float(hub.batcher.pending()),
            ),
            (
                "processhub_hook_queue_pending",
                "Async hook jobs waiting to run.",
                lambda: float(hub.hooks.pending),
            ),
        )
        for name, documentation, function in gauges:
            Gauge(name, documentation, registry=reg).set_function(function)
        reg.register(_HubCollector(hub))

        self._handlers: tuple[tuple[HookName, Callable[[Any], None]], ...] = (
            (HookName.CHILD_STARTED, self._on_started),
            (HookName.CHILD_RESTARTED, self._on_restarted),
            (HookName.CHILD_FAILED, self._on_failed),
            (HookName.CHILD_STOPPED, self._on_stopped),
            (HookName.CHILDREN_MIGRATED, self._on_migrated),
            (HookName.PARTITION_CHANGED, self._on_partition),
        )
        registered: list[HookName] = []
        try:
            for hook, callback in self._handlers:
                hub.hooks.register(hook, HookHandler(_HOOK_ID, callback))
                registered.append(hook)
        except BaseException:
            for hook in registered:
                hub.hooks.cancel(hook, _HOOK_ID)
            raise
        hub.registry.observers.append(self._observe)
        hub.store.observer = self._on_etcd
        hub.reconciler.round_observer = self._on_round
        hub.reconciler.handover_observer = self._on_handover
        self._closed = False
        HubMetrics._by_hub[hub] = self

    @classmethod
    def of(cls, hub: Hub) -> HubMetrics:
        """The :class:`HubMetrics` of ``hub``, created if it has none."""
        existing = cls._by_hub.get(hub)
        return existing if existing is not None else cls(hub)

    def close(self) -> None:
        """Detach from the hub (hook handlers, registry observer); idempotent."""
        if self._closed:
            return
        self._closed = True
        for hook, _ in self._handlers:
            self.hub.hooks.cancel(hook, _HOOK_ID)
        with contextlib.suppress(ValueError):
            self.hub.registry.observers.remove(self._observe)
        if self.hub.store.observer == self._on_etcd:
            self.hub.store.observer = None
        if self.hub.reconciler.round_observer == self._on_round:
            self.hub.reconciler.round_observer = None
        if self.hub.reconciler.handover_observer == self._on_handover:
            self.hub.reconciler.handover_observer = None
        if HubMetrics._by_hub.get(self.hub) is self:
            del HubMetrics._by_hub[self.hub]

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)

    # -- hook handlers (sync: they only count) ---------------------------------------------

    def _on_started(self, event: ChildStarted) -> None:
        self.starts.inc()

    def _on_restarted(self, event: ChildRestarted) -> None:
        self.restarts.inc()

    def _on_failed(self, event: ChildFailed) -> None:
        self.failures.inc()

    def _on_stopped(self, event: ChildStopped) -> None:
        reason = event.reason.split(":", 1)[0].strip()
        self.stops.labels(reason=reason if reason in _STOP_REASONS else "other").inc()

    def _on_migrated(self, event: ChildrenMigrated) -> None:
        self.migrations.inc(len(event.targets))

    def _on_partition(self, event: PartitionChanged) -> None:
        self.partition_changes.inc()

    def _on_etcd(self, method: str, seconds: float, error: str | None) -> None:
        self.etcd_seconds.labels(method=method).observe(seconds)
        if error is not None:
            self.etcd_errors.labels(method=method, error=error).inc()

    def _on_round(self, seconds: float, actions: int) -> None:
        self.reconcile_seconds.observe(seconds)

    def _on_handover(self, migration: str, seconds: float) -> None:
        self.handover.labels(migration=migration).observe(seconds)

    def _observe(self, child_ids: set[str], nodes_changed: bool, full: bool) -> None:
        self.registry_updates.labels(kind="full" if full else "batch").inc()
        self.registry_children_touched.inc(len(child_ids))
        if full:
            self._gone_at.clear()
            return
        registry = self.hub.registry
        now = time.monotonic()
        gone_at = self._gone_at
        for child_id in child_ids:
            handle = registry.handles.get(child_id)
            if handle is None:
                if child_id in registry.specs:
                    gone_at.setdefault(child_id, now)  # still wanted: it is between owners
                else:
                    gone_at.pop(child_id, None)  # stopped for good
            elif handle.is_running and child_id in gone_at:
                self.without_owner.observe(now - gone_at.pop(child_id))


# -- live event feed (/api/events) ---------------------------------------------------------

#: Hooks the dashboard shows as events. Node hooks fire on every node (from the registry);
#: child events come from the registry too (:mod:`hub.operate.events`), so that every node
#: shows the whole cluster and no child event is reported twice.
_FEED_HOOKS: tuple[HookName, ...] = (
    HookName.NODE_JOINED,
    HookName.NODE_LEFT,
    HookName.PARTITION_CHANGED,
)
_feed_ids = itertools.count(1)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def event_record(hub: Hub, event: HookEvent) -> dict[str, Any]:
    """``event`` as one JSON-ready ``event`` message: ``kind`` (the hook), ``node`` (the
    node it concerns), ``observer`` (this node), ``at`` (epoch seconds) and its fields."""
    record: dict[str, Any] = {"kind": event.hook.value}
    for field in dataclasses.fields(event):
        record[field.name] = _jsonable(getattr(event, field.name))
    record["node"] = record.pop("node_id", hub.node_id)
    record["observer"] = hub.node_id
    record["at"] = time.time()
    return record


def child_event_record(hub: Hub, event: ChildEvent) -> dict[str, Any]:
    """A derived child event as one ``event`` message, shaped like :func:`event_record`:
    ``kind``, ``child_id``, ``node`` (where it happened), ``token``, ``restarts``,
    ``reason``, ``from_node`` (``child_moved`` only), ``observer`` and ``at``."""
    record: dict[str, Any] = {
        "kind": event.kind,
        "child_id": event.child_id,
        "node": event.node,
        "token": event.token,
        "restarts": event.restarts,
        "reason": event.reason,
    }
    if event.from_node is not None:
        record["from_node"] = event.from_node
    record["observer"] = hub.node_id
    record["at"] = time.time()
    return record


class _Client:
    """One ``/api/events`` connection: a bounded queue of encoded messages; None ends it."""

    __slots__ = ("dropped", "queue")

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(size)
        self.dropped = False

    def offer(self, message: bytes) -> bool:
        """Queue ``message``; False (and the client ends) when its queue is full."""
        if self.dropped:
            return False
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.end()
            return False
        return True

    def end(self) -> None:
        """Discard what is queued and make the stream end at once."""
        self.dropped = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


def _sse(event: str, document: Any) -> bytes:
    data = json.dumps(document, separators=(",", ":"))
    return f"event: {event}\ndata: {data}\n\n".encode()


class EventFeed:
    """What ``/api/events`` streams: snapshots of the registry and the cluster's events.

    Events are cluster-wide: child events are derived from owner-record transitions that
    every node's registry sees (:class:`~hub.operate.events.ChildEvents`: started, moved,
    restarted, failed, stopped), node events come from the registry's ``node_joined`` and
    ``node_left`` hooks, plus this node's own ``partition_changed``.

    :meth:`open` registers sync hook handlers (unique ids ``processhub.dashboard.<n>``) and
    registry observers on ``hub``; :meth:`close` removes them and ends every stream. Events
    go to a ring buffer of ``history`` entries (sent with each snapshot) and to every
    client's queue; a client whose queue (``queue_size`` messages) is full is dropped.

    Registry batches schedule one snapshot at most every ``snapshot_interval`` seconds;
    the snapshot is rendered once and shared by every client.
    """

    def __init__(
        self,
        hub: Hub,
        *,
        history: int = 200,
        queue_size: int = 256,
        snapshot_interval: float = SNAPSHOT_INTERVAL,
    ) -> None:
        self.hub = hub
        self.events: deque[dict[str, Any]] = deque(maxlen=history)
        self.child_events = ChildEvents(hub.registry)
        self.queue_size = queue_size
        self.snapshot_interval = snapshot_interval
        self.clients: set[_Client] = set()
        #: Clients dropped because their queue was full.
        self.drops = 0
        self._hook_id = f"processhub.dashboard.{next(_feed_ids)}"
        self._open = False
        self._timer: asyncio.TimerHandle | None = None
        self._last_snapshot = 0.0

    def open(self) -> None:
        """Start observing the hub; idempotent."""
        if self._open:
            return
        registered: list[HookName] = []
        try:
            for hook in _FEED_HOOKS:
                self.hub.hooks.register(hook, HookHandler(self._hook_id, self._on_event))
                registered.append(hook)
        except BaseException:
            for hook in registered:
                self.hub.hooks.cancel(hook, self._hook_id)
            raise
        self.hub.registry.owner_observers.append(self._on_owner_changes)
        self.hub.registry.observers.append(self._observe)
        self._open = True

    def close(self) -> None:
        """Stop observing and end every stream; idempotent."""
        if not self._open:
            return
        self._open = False
        for hook in _FEED_HOOKS:
            self.hub.hooks.cancel(hook, self._hook_id)
        with contextlib.suppress(ValueError):
            self.hub.registry.owner_observers.remove(self._on_owner_changes)
        with contextlib.suppress(ValueError):
            self.hub.registry.observers.remove(self._observe)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for client in list(self.clients):
            client.end()

    def snapshot(self) -> dict[str, Any]:
        """The ``snapshot`` document: ``nodes``, ``children``, recent ``events``."""
        return {
            "node_id": self.hub.node_id,
            "at": time.time(),
            "nodes": nodes_view(self.hub),
            "children": children_view(self.hub),
            "events": list(self.events),
        }

    def subscribe(self) -> _Client:
        """A new client whose queue starts with a snapshot."""
        client = _Client(self.queue_size)
        client.offer(_sse("snapshot", self.snapshot()))
        if not self._open:
            client.end()
        self.clients.add(client)
        return client

    def unsubscribe(self, client: _Client) -> None:
        self.clients.discard(client)

    def publish(self, record: dict[str, Any]) -> None:
        """Keep ``record`` in the recent events and send it to every client."""
        self.events.append(record)
        if self.clients:
            self._broadcast(_sse("event", record))

    def _broadcast(self, message: bytes) -> None:
        for client in list(self.clients):
            if not client.offer(message):
                self.clients.discard(client)
                self.drops += 1
                log.warning(
                    "dropped a slow /api/events client", extra=fields(node_id=self.hub.node_id)
                )

    def _on_event(self, event: HookEvent) -> None:
        self.publish(event_record(self.hub, event))

    def _publish_children(self, events: Iterable[ChildEvent]) -> None:
        for event in events:
            self.publish(child_event_record(self.hub, event))

    def _on_owner_changes(self, changes: Sequence[OwnerChange]) -> None:
        self._publish_children(self.child_events.owner_changes(changes))

    def _observe(self, child_ids: set[str], nodes_changed: bool, full: bool) -> None:
        self._publish_children(self.child_events.children_changed(child_ids, full))
        if not self.clients or self._timer is not None:
            return  # nobody listens, or a snapshot is already scheduled
        loop = asyncio.get_running_loop()
        delay = max(0.0, self._last_snapshot + self.snapshot_interval - loop.time())
        self._timer = loop.call_later(delay, self._send_snapshot)

    def _send_snapshot(self) -> None:
        self._timer = None
        self._last_snapshot = asyncio.get_running_loop().time()
        if self.clients:
            try:
                message = _sse("snapshot", self.snapshot())
            except Exception:
                log.exception(
                    "rendering a dashboard snapshot failed", extra=fields(node_id=self.hub.node_id)
                )
                return
            self._broadcast(message)


# -- HTTP server ---------------------------------------------------------------------------

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"
_HTML = "text/html; charset=utf-8"
_Response = tuple[int, str, bytes]
#: Returned by the ``/api/events`` route: stream instead of answering (compared by identity).
_STREAM: _Response = (200, "text/event-stream", b"")
#: Seconds event streams get to end on their own in :meth:`HttpServer.stop`.
_STREAM_GRACE = 1.0


def parse_bind(bind: str) -> tuple[str, int]:
    """``"host:port"`` (``"[v6]:port"``) -> ``(host, port)``.

    Raises:
        ConfigError: not of that form.
    """
    host, sep, port_text = bind.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"http bind address must be host:port, got {bind!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port_text)


class HttpServer:
    """A node's HTTP endpoints (see the module docstring).

    Args:
        hub: the node.
        bind: ``"host:port"``; port 0 picks a free one (:meth:`start` returns it).
        metrics: the hub's metrics; default :meth:`HubMetrics.of` ``(hub)``.
        read_timeout: seconds a client has to send its request head.
        write_timeout: seconds a client has to take the response.
        max_connections: connections served at once (event streams included); more get 503.
        heartbeat: seconds between keep-alive comments on an idle event stream.

    Raises:
        ConfigError: ``bind`` is not ``host:port``.
    """

    def __init__(
        self,
        hub: Hub,
        bind: str = "127.0.0.1:0",
        *,
        metrics: HubMetrics | None = None,
        read_timeout: float = 5.0,
        write_timeout: float = 10.0,
        max_connections: int = 64,
        heartbeat: float = HEARTBEAT_INTERVAL,
    ) -> None:
        self.hub = hub
        self.host, self.port = parse_bind(bind)
        self.metrics = metrics if metrics is not None else HubMetrics.of(hub)
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.max_connections = max_connections
        self.heartbeat = heartbeat
        #: The ``/api/events`` feed; observes the hub while the server runs.
        self.feed = EventFeed(hub)
        self.address = ""
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._routes: dict[str, Callable[[], _Response]] = {
            "/healthz": lambda: (200, _TEXT, b"ok\n"),
            "/readyz": self._readyz,
            "/metrics": lambda: (200, CONTENT_TYPE_LATEST, self.metrics.render()),
            "/api/nodes": lambda: _json(nodes_view(self.hub)),
            "/api/children": lambda: _json(children_view(self.hub)),
            "/": lambda: (200, _HTML, dashboard_html()),
            "/api/events": lambda: _STREAM,
        }

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> str:
        """Listen; returns the bound ``"host:port"``.

        Raises:
            RuntimeError: already started.
            OSError: the address cannot be bound.
        """
        if self._server is not None:
            raise RuntimeError("HttpServer already started")
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=MAX_REQUEST_HEAD
        )
        self.feed.open()
        host, port = self._server.sockets[0].getsockname()[:2]
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        log.info(
            "http endpoints listening",
            extra=fields(node_id=self.hub.node_id, address=self.address),
        )
        return self.address

    async def stop(self) -> None:
        """Stop listening and end every open connection; idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        self.feed.close()  # event streams end on their own...
        if self.feed.clients:
            await asyncio.wait(set(self._connections), timeout=_STREAM_GRACE)
        connections = set(self._connections)  # ...what remains is cancelled
        for task in connections:
            task.cancel()
        if connections:
            await asyncio.wait(connections)
        await server.wait_closed()

    # -- connections -------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            if len(self._connections) > self.max_connections:
                response: _Response = (503, _TEXT, b"too many connections\n")
            else:
                response = await self._read_and_route(reader)
            if response is _STREAM:
                await self._stream(writer)
            else:
                await self._respond(writer, response)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away or stopped reading: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                # Bounded: a client that never reads cannot hold the connection open.
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()
            if task is not None:
                self._connections.discard(task)

    async def _read_and_route(self, reader: asyncio.StreamReader) -> _Response:
        try:
            async with asyncio.timeout(self.read_timeout):
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            return 408, _TEXT, b"request timeout\n"
        except asyncio.LimitOverrunError:
            return 431, _TEXT, b"request head too large\n"
        except asyncio.IncompleteReadError as exc:
            if len(exc.partial) >= MAX_REQUEST_HEAD:
                return 431, _TEXT, b"request head too large\n"
            raise
        request_line = head.split(b"\r\n", 1)[0]
        try:
            method, target, version = request_line.decode("ascii").split(" ")
        except (UnicodeDecodeError, ValueError):
            return 400, _TEXT, b"malformed request line\n"
        if not version.startswith("HTTP/1."):
            return 400, _TEXT, b"unsupported protocol version\n"
        route = self._routes.get(urlsplit(target).path)
        if route is None:
            return 404, _TEXT, b"not found\n"
        if method != "GET":
            return 405, _TEXT, b"method not allowed\n"
        try:
            return route()
        except Exception:
            log.exception(
                "http %s %s failed", method, target, extra=fields(node_id=self.hub.node_id)
            )
            return 500, _TEXT, b"internal error\n"

    async def _respond(self, writer: asyncio.StreamWriter, response: _Response) -> None:
        status, content_type, body = response
        head = (
            f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Cache-Control: no-store\r\n"
            "Connection: close\r\n"
        )
        if status == 405:
            head += "Allow: GET\r\n"
        writer.write(head.encode("ascii") + b"\r\n" + body)
        async with asyncio.timeout(self.write_timeout):
            await writer.drain()

    async def _stream(self, writer: asyncio.StreamWriter) -> None:
        """Serve ``/api/events`` until the feed ends it, the client goes, or it lags."""
        client = self.feed.subscribe()
        try:
            writer.write(
                b"HTTP/1.1 200 OK\r\n"
                b"Content-Type: text/event-stream; charset=utf-8\r\n"
                b"Cache-Control: no-store\r\n"
                b"X-Accel-Buffering: no\r\n"
                b"Connection: close\r\n\r\n"
                b"retry: 2000\n\n"
            )
            while True:
                try:
                    async with asyncio.timeout(self.heartbeat):
                        message = await client.queue.get()
                except TimeoutError:
                    message = b": keep-alive\n\n"
                if message is None:
                    return
                writer.write(message)
                async with asyncio.timeout(self.write_timeout):
                    await writer.drain()
        finally:
            self.feed.unsubscribe(client)

    # -- routes ------------------------------------------------------------------------

    def _readyz(self) -> _Response:
        reason = readiness(self.hub)
        if reason is None:
            return 200, _TEXT, b"ready\n"
        return 503, _TEXT, reason.encode("utf-8", "replace") + b"\n"


_dashboard: bytes | None = None


def dashboard_html() -> bytes:
    """The dashboard page (``hub/operate/dashboard.html``, package data), read once."""
    global _dashboard
    if _dashboard is None:
        _dashboard = (
            importlib.resources.files("hub.operate").joinpath("dashboard.html").read_bytes()
        )
    return _dashboard


def _json(document: dict[str, Any]) -> _Response:
    return 200, _JSON, json.dumps(document, separators=(",", ":")).encode("utf-8") + b"\n"
