"""Prometheus metrics of one node, in a registry of its own.

:class:`HubMetrics` collects one hub's metrics into its own
:class:`prometheus_client.CollectorRegistry` (never the process-wide default: several hubs
may live in one process). Counters of events come from hooks, durations from observer
callbacks (etcd requests, reconcile rounds, hand-overs); everything else is read from the
hub when scraped. ``GET /metrics`` renders it (:mod:`hub.operate.http`).
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hub.core.hooks import (
    ChildFailed,
    ChildrenMigrated,
    ChildRestarted,
    ChildStarted,
    ChildStopped,
    HookHandler,
    HookName,
    PartitionChanged,
)
from hub.operate.observed import ObservedHub
from hub.operate.views import CHILD_STATES, child_state, readiness

__all__ = ["HANDOVER_BUCKETS", "HubMetrics"]

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


class _HubCollector(Collector):
    """Values read from the hub at scrape time that a ``Gauge.set_function`` cannot
    express: per-state child counts (one pass over the registry) and the hub's own
    monotonic counters."""

    def __init__(self, hub: ObservedHub) -> None:
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
            state = child_state(hub, child_id)
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

    _by_hub: ClassVar[weakref.WeakKeyDictionary[ObservedHub, HubMetrics]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, hub: ObservedHub, registry: CollectorRegistry | None = None) -> None:
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
    def of(cls, hub: ObservedHub) -> HubMetrics:
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
