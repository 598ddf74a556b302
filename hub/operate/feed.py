"""The live event feed of ``/api/events``: registry snapshots and cluster events.

:class:`EventFeed` observes one node (hooks and registry observers) and streams to each
client a ``snapshot`` on connect (``nodes`` and ``children`` shaped as ``/api/nodes`` and
``/api/children``, plus the recent ``events``), a new ``snapshot`` after registry batches
(coalesced: at most one per :data:`SNAPSHOT_INTERVAL`) and an ``event`` message per cluster
event. Each client has a bounded queue: a client that cannot keep up is dropped, the node
never waits for it. The HTTP side (headers, heartbeats) is :mod:`hub.operate.http`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hub.core.hooks import HookEvent, HookHandler, HookName
from hub.core.registry import OwnerChange
from hub.logs import fields, get_logger
from hub.operate.events import ChildEvent, ChildEvents
from hub.operate.observed import ObservedHub
from hub.operate.views import children_view, nodes_view

__all__ = ["SNAPSHOT_INTERVAL", "EventFeed", "child_event_record", "event_record"]

log = get_logger("hub.operate.http")

#: Seconds between two ``snapshot`` events of ``/api/events`` (registry batches coalesce).
SNAPSHOT_INTERVAL = 0.2

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


def event_record(hub: ObservedHub, event: HookEvent) -> dict[str, Any]:
    """``event`` as one JSON-ready ``event`` message: ``kind`` (the hook), ``node`` (the
    node it concerns), ``observer`` (this node), ``at`` (epoch seconds) and its fields."""
    record: dict[str, Any] = {"kind": event.hook.value}
    for field in dataclasses.fields(event):
        record[field.name] = _jsonable(getattr(event, field.name))
    record["node"] = record.pop("node_id", hub.node_id)
    record["observer"] = hub.node_id
    record["at"] = time.time()
    return record


def child_event_record(hub: ObservedHub, event: ChildEvent) -> dict[str, Any]:
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
        hub: ObservedHub,
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
