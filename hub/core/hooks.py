"""Hooks: typed, isolated callbacks on hub events (ProcessHub's hooks, with types).

Each :class:`HookName` has one frozen payload dataclass, named after the event
(``CHILD_STARTED`` -> :class:`ChildStarted`), whose ``hook`` class attribute names it. A
:class:`HookHandler` pairs an id (unique per hook), a callback (sync or ``async``) and a
priority. The documentation table is generated from this module by
:func:`hook_table_markdown`, so the code and ``docs/hooks.md`` cannot drift apart.

Contract:

* **Per node.** Every :class:`~hub.hub.Hub` has its own :class:`Hooks`; handlers run on the
  node where they were registered and see what *that node* observed, as in ProcessHub. To
  observe every node, register on every node.
* **Where hooks fire.** A hook fires on the node that observes the event. Registry hooks
  (``NODE_JOINED``, ``NODE_LEFT``, ``CHILDREN_REGISTERED``, ``CHILDREN_UNREGISTERED``) fire on
  every node, from its own watch of etcd, once per applied batch. Child lifecycle hooks
  (``CHILD_STARTED``, ``CHILD_RESTARTED``, ``CHILD_STOPPED``, ``CHILD_FAILED``) fire only on
  the node that runs the worker, from the supervisor's events. ``CHILDREN_MIGRATED``,
  ``PARTITION_CHANGED``, ``HUB_STOPPING`` and the alter hook ``CHILD_DATA_ALTER`` fire on the
  node that acts. The "Fires on" column of the table says which.
* **Isolation.** :meth:`Hooks.dispatch` never raises and never waits. A handler that raises is
  logged, counted in :attr:`Hooks.stats` and skipped; the next handler still runs. Hooks are
  dispatched outside any lock, after the state they report is applied, so a handler may call
  back into the hub.
* **Sync handlers** run at once, inside ``dispatch``, in priority order. They share the
  caller's event loop turn: keep them short (one taking longer than
  :data:`SLOW_SYNC_HANDLER` is logged), since nothing can interrupt synchronous code.
* **Async handlers** (a callback that returns an awaitable) are queued on a bounded queue and
  run by :meth:`Hooks.run`, each under ``handler_timeout``: a slow one is cancelled, logged
  and counted. With the default ``concurrency=1`` they run one at a time, in dispatch order
  then priority order. When the queue is full the job is dropped and counted. Jobs queued
  before ``run()`` starts wait for it; jobs still queued when ``run()`` ends are dropped.
* **Ordering.** Higher ``priority`` runs first; ties run in registration order. A
  (de)registration made while a dispatch is in progress applies from the next dispatch.
* **Alter hooks** (:meth:`Hooks.dispatch_alter`) run in the caller's task, one handler after
  another, each bounded by ``handler_timeout``. Each handler gets the payload as altered so
  far and returns a new payload of the same type, or None to keep it. A handler that raises,
  times out, or returns anything else (another type, or a change to a field it may not
  change) is logged and skipped: the payload passes through unchanged.
* **Threads: none.** Call everything from the event loop's thread.
* **Task ownership** (STYLE 9.4): :meth:`Hooks.run` owns one ``asyncio.TaskGroup`` holding
  ``concurrency`` worker tasks; nothing else creates tasks.

Warning: Python cannot kill a coroutine. An async handler that catches ``CancelledError``
and keeps running holds its worker until it ends, and ``run()`` cannot return before it
does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Generic, Self, TypeAlias, TypeVar

from hub.logs import fields, get_logger
from hub.model import ChildHandle, ChildSpec

log = get_logger("hub.core.hooks")

#: Default bound on one async or alter handler's run, in seconds.
DEFAULT_HANDLER_TIMEOUT = 5.0
#: Default number of async handler jobs that may wait for :meth:`Hooks.run`.
DEFAULT_QUEUE_SIZE = 1024
#: A sync handler that takes longer than this (seconds) is logged: it blocked the loop.
SLOW_SYNC_HANDLER = 0.1


class HookName(enum.StrEnum):
    """Every hook a hub dispatches; :attr:`description` says when each one fires."""

    NODE_JOINED = "node_joined"
    NODE_LEFT = "node_left"
    CHILD_STARTED = "child_started"
    CHILD_RESTARTED = "child_restarted"
    CHILD_STOPPED = "child_stopped"
    CHILD_FAILED = "child_failed"
    CHILDREN_REGISTERED = "children_registered"
    CHILDREN_UNREGISTERED = "children_unregistered"
    CHILDREN_MIGRATED = "children_migrated"
    PARTITION_CHANGED = "partition_changed"
    CHILD_DATA_ALTER = "child_data_alter"
    HUB_STOPPING = "hub_stopping"

    @property
    def description(self) -> str:
        """One line: when the hook fires (used for the generated documentation)."""
        return _DESCRIPTIONS[self][1]

    @property
    def fires_on(self) -> str:
        """``"every node"`` for registry hooks, ``"this node"`` for the others."""
        return _DESCRIPTIONS[self][0]

    @property
    def is_alter(self) -> bool:
        """True for alter hooks: handlers return a payload instead of observing it."""
        return issubclass(payload_type(self), AlterPayload)


_EVERY = "every node"
_THIS = "this node"

# (fires on, when it fires): one line each, read by HookName and the doc table.
_DESCRIPTIONS: Mapping[HookName, tuple[str, str]] = {
    HookName.NODE_JOINED: (
        _EVERY,
        "A member record appeared in the registry: a new node, or a new incarnation "
        "(lease) of a node that rejoined; the node also sees itself join.",
    ),
    HookName.NODE_LEFT: (
        _EVERY,
        "A member record disappeared: the node left (graceful) or its lease expired "
        "(crash or partition); lists the children it owned at that moment.",
    ),
    HookName.CHILD_STARTED: (
        _THIS,
        "A worker passed its start window on this node, on its first start or after "
        "a crash restart (`restarts` > 0).",
    ),
    HookName.CHILD_RESTARTED: (
        _THIS,
        "A local worker exited and the supervisor scheduled restart number `restarts` "
        "after a backoff; `child_started` follows once the new instance is up.",
    ),
    HookName.CHILD_STOPPED: (
        _THIS,
        "A local worker ended for good without being parked: the hub stopped it "
        "(released, moved, fenced, node leaving) or its restart policy let it exit.",
    ),
    HookName.CHILD_FAILED: (
        _THIS,
        "A local child was parked as failed: its start failed or it exceeded its restart "
        "intensity; it stays down, its owner (or, for a replica instance, its replica "
        "record; `fencing_token` 0) marked `failed`, until it is stopped and started again "
        "or this node goes away.",
    ),
    HookName.CHILDREN_REGISTERED: (
        _EVERY,
        "The registry saw new owners: children whose active instance now has a new "
        "node or fencing token; once per watch batch.",
    ),
    HookName.CHILDREN_UNREGISTERED: (
        _EVERY,
        "The registry saw owner keys removed (released, expired with their lease, or "
        "deleted with the child); once per watch batch.",
    ),
    HookName.CHILDREN_MIGRATED: (
        _THIS,
        "This node released children so that other nodes run them (rebalance after a "
        "join, or drain); fires after their owner keys were deleted.",
    ),
    HookName.PARTITION_CHANGED: (
        _THIS,
        "This node lost its lease and fenced itself (`partitioned` true), or got a "
        "new lease and rejoined (`partitioned` false).",
    ),
    HookName.CHILD_DATA_ALTER: (
        _THIS,
        "Alter hook, just before a worker starts on this node: handlers may return a "
        "changed spec (for example other args for a migrated child); the hub starts "
        "the result.",
    ),
    HookName.HUB_STOPPING: (
        _THIS,
        "This node began to leave the cluster (`Hub.stop()` or the end of its "
        "`async with` block), before draining or stopping anything.",
    ),
}


# -- payloads ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HookPayload:
    """Base of every payload; ``hook`` names the :class:`HookName` it belongs to."""

    hook: ClassVar[HookName]


@dataclass(frozen=True, slots=True)
class HookEvent(HookPayload):
    """Base of the payloads handlers observe (every hook except the alter hooks)."""


@dataclass(frozen=True, slots=True)
class AlterPayload(HookPayload):
    """Base of the payloads alter handlers may replace."""

    def alteration_error(self, altered: Self) -> str | None:
        """Why ``altered`` may not replace this payload, or None if it may."""
        return None


@dataclass(frozen=True, slots=True)
class NodeJoined(HookEvent):
    """A member appeared; ``incarnation`` is its lease id, ``revision`` the etcd revision."""

    hook: ClassVar[HookName] = HookName.NODE_JOINED
    node_id: str
    incarnation: int
    revision: int


@dataclass(frozen=True, slots=True)
class NodeLeft(HookEvent):
    """A member disappeared.

    ``graceful`` is True when the node announced its leave (its record said draining),
    False when its record vanished while active (its lease expired: crash or partition),
    None when the hub cannot tell (a relist). ``child_ids`` are the children the registry
    showed it owning when it left.
    """

    hook: ClassVar[HookName] = HookName.NODE_LEFT
    node_id: str
    incarnation: int
    graceful: bool | None
    child_ids: tuple[str, ...]
    revision: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "child_ids", tuple(self.child_ids))


@dataclass(frozen=True, slots=True)
class ChildStarted(HookEvent):
    """A worker instance is up on ``node_id`` (this node), fenced by ``fencing_token``."""

    hook: ClassVar[HookName] = HookName.CHILD_STARTED
    child_id: str
    node_id: str
    fencing_token: int
    restarts: int


@dataclass(frozen=True, slots=True)
class ChildRestarted(HookEvent):
    """A local worker exited with ``reason``; restart number ``restarts`` is pending."""

    hook: ClassVar[HookName] = HookName.CHILD_RESTARTED
    child_id: str
    fencing_token: int
    restarts: int
    reason: str


@dataclass(frozen=True, slots=True)
class ChildStopped(HookEvent):
    """A local worker ended for good.

    ``reason`` is ``"normal"`` (it returned and its policy does not restart it),
    ``"crashed: ..."`` (a ``temporary`` child), ``"stopped"`` (its spec was deleted),
    ``"migrated"`` (released so that another node runs it), ``"fenced"`` (this node lost
    its lease or its ownership) or ``"shutdown"`` (the node is leaving).
    """

    hook: ClassVar[HookName] = HookName.CHILD_STOPPED
    child_id: str
    fencing_token: int
    reason: str


@dataclass(frozen=True, slots=True)
class ChildFailed(HookEvent):
    """A local child was parked: its start failed or its restart intensity ran out (a
    replica instance has ``fencing_token`` 0)."""

    hook: ClassVar[HookName] = HookName.CHILD_FAILED
    child_id: str
    fencing_token: int
    reason: str


@dataclass(frozen=True, slots=True)
class ChildrenRegistered(HookEvent):
    """New owners seen in one registry batch (at etcd ``revision``)."""

    hook: ClassVar[HookName] = HookName.CHILDREN_REGISTERED
    handles: tuple[ChildHandle, ...]
    revision: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "handles", tuple(self.handles))


@dataclass(frozen=True, slots=True)
class ChildrenUnregistered(HookEvent):
    """Owners removed in one registry batch: ``(child_id, node_id)`` pairs."""

    hook: ClassVar[HookName] = HookName.CHILDREN_UNREGISTERED
    children: tuple[tuple[str, str], ...]
    revision: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "children", tuple(tuple(pair) for pair in self.children))


@dataclass(frozen=True, slots=True)
class ChildrenMigrated(HookEvent):
    """Children this node handed over: ``targets`` maps child id to the node meant to run it."""

    hook: ClassVar[HookName] = HookName.CHILDREN_MIGRATED
    targets: Mapping[str, str]

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", MappingProxyType(dict(self.targets)))


@dataclass(frozen=True, slots=True)
class PartitionChanged(HookEvent):
    """This node entered (``partitioned``) or left partitioned mode; ``reason`` says why."""

    hook: ClassVar[HookName] = HookName.PARTITION_CHANGED
    partitioned: bool
    reason: str


@dataclass(frozen=True, slots=True)
class ChildStarting(AlterPayload):
    """A worker about to start on ``node_id`` (this node).

    ``migrated``: the child ran on another node before (this start moves it).
    ``handover``: it starts from state its previous owner handed over.
    Handlers may change ``spec`` (args, metadata, start target...) but not its id, nor
    any other field.
    """

    hook: ClassVar[HookName] = HookName.CHILD_DATA_ALTER
    spec: ChildSpec
    node_id: str
    fencing_token: int
    migrated: bool
    handover: bool

    def alteration_error(self, altered: ChildStarting) -> str | None:
        if not isinstance(altered.spec, ChildSpec):
            return f"spec must be a ChildSpec, got {type(altered.spec).__name__}"
        if altered.spec.id != self.spec.id:
            return f"spec id changed from {self.spec.id!r} to {altered.spec.id!r}"
        for name in ("node_id", "fencing_token", "migrated", "handover"):
            if getattr(altered, name) != getattr(self, name):
                return f"{name} may not change"
        return None


@dataclass(frozen=True, slots=True)
class HubStopping(HookEvent):
    """This node (``node_id``) begins to leave; with ``drain`` its children move first."""

    hook: ClassVar[HookName] = HookName.HUB_STOPPING
    node_id: str
    drain: bool


_PAYLOAD_TYPES: Mapping[HookName, type[HookPayload]] = MappingProxyType(
    {
        cls.hook: cls
        for cls in (
            NodeJoined,
            NodeLeft,
            ChildStarted,
            ChildRestarted,
            ChildStopped,
            ChildFailed,
            ChildrenRegistered,
            ChildrenUnregistered,
            ChildrenMigrated,
            PartitionChanged,
            ChildStarting,
            HubStopping,
        )
    }
)


def payload_type(name: HookName) -> type[HookPayload]:
    """The payload class of hook ``name``."""
    return _PAYLOAD_TYPES[name]


# -- handlers ----------------------------------------------------------------------------

P = TypeVar("P", bound=HookPayload)
A = TypeVar("A", bound=AlterPayload)


@dataclass(frozen=True, slots=True)
class HookHandler(Generic[P]):
    """One callback registered under one hook.

    Args:
        id: unique among the handlers of one hook on one node; used to cancel it.
        callback: called with the payload. Plain functions run inside ``dispatch``;
            a callback returning an awaitable (an ``async def``) runs on the hooks'
            task group. Observe handlers return None; alter handlers return a payload of
            the same type, or None to keep the one they got.
        priority: higher runs first; ties run in registration order.

    Raises:
        ValueError: ``id`` is empty.
        TypeError: ``id`` is not a str, ``callback`` is not callable, ``priority`` not an int.
    """

    id: str
    callback: Callable[[P], P | Awaitable[P | None] | None]
    priority: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.id, str):
            raise TypeError(f"handler id must be a str, got {type(self.id).__name__}")
        if not self.id:
            raise ValueError("handler id must not be empty")
        if not callable(self.callback):
            raise TypeError(f"handler {self.id!r}: callback is not callable")
        if not isinstance(self.priority, int) or isinstance(self.priority, bool):
            raise TypeError(f"handler {self.id!r}: priority must be an int")


#: Static registration, as accepted by ``Hub(..., hooks=...)`` and :meth:`Hooks.from_mapping`.
HookSpec: TypeAlias = Mapping[HookName | str, Sequence[HookHandler[Any]]]


class DuplicateHook(ValueError):
    """Raised when a handler id is registered twice under the same hook on one node."""

    def __init__(self, hook: HookName, handler_id: str) -> None:
        super().__init__(f"hook {hook.value!r} already has a handler with id {handler_id!r}")
        self.hook = hook
        self.handler_id = handler_id


def hook_name(name: HookName | str) -> HookName:
    """Resolve a hook name given as a member or its value (``"child_started"``).

    Raises:
        ValueError: no such hook; the message lists the valid names.
    """
    if isinstance(name, HookName):
        return name
    try:
        return HookName(name)
    except ValueError:
        valid = ", ".join(member.value for member in HookName)
        raise ValueError(f"unknown hook {name!r}; valid hooks: {valid}") from None


@dataclass(frozen=True, slots=True)
class HookStats:
    """Counters since the :class:`Hooks` was created.

    ``dispatched`` counts handler invocations accepted (sync calls, queued async jobs,
    alter calls); ``failed`` those that raised (or, for alter handlers, returned an
    unacceptable value); ``timed_out`` those cancelled after ``handler_timeout``;
    ``dropped`` async jobs refused by a full queue or discarded when ``run()`` ended.
    """

    dispatched: int = 0
    failed: int = 0
    timed_out: int = 0
    dropped: int = 0


@dataclass(slots=True)
class _Job:
    handler: HookHandler[Any]
    hook: HookName
    awaitable: Awaitable[object]


class _Failed:
    """Marks a handler invocation that produced no usable result."""


_FAILED = _Failed()


class Hooks:
    """The hook handlers of one node, and the tasks that run the async ones.

    Args:
        handler_timeout: seconds one async or alter handler may run before it is
            cancelled (sync handlers cannot be interrupted).
        queue_size: async handler jobs that may wait to run; more are dropped.
        concurrency: async handler jobs run at once; 1 keeps them in dispatch order.

    Raises:
        ValueError: a limit is not positive.
    """

    def __init__(
        self,
        *,
        handler_timeout: float = DEFAULT_HANDLER_TIMEOUT,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        concurrency: int = 1,
    ) -> None:
        if not handler_timeout > 0:
            raise ValueError(f"handler_timeout must be > 0, got {handler_timeout!r}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size!r}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency!r}")
        self.handler_timeout = handler_timeout
        self.concurrency = concurrency
        # Each hook's handlers in run order, replaced (never mutated) on every change, so
        # a dispatch iterates a snapshot.
        self._handlers: dict[HookName, tuple[HookHandler[Any], ...]] = {}
        self._order: dict[tuple[HookName, str], int] = {}  # registration sequence numbers
        self._sequence = 0
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=queue_size)
        self._running = False
        self._dropping = False  # log a full queue once per episode, not once per job
        self._dispatched = 0
        self._failed = 0
        self._timed_out = 0
        self._dropped = 0

    @classmethod
    def from_mapping(
        cls,
        mapping: HookSpec | None,
        *,
        handler_timeout: float = DEFAULT_HANDLER_TIMEOUT,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        concurrency: int = 1,
    ) -> Hooks:
        """Build hooks from a static ``{hook name: [handlers]}`` mapping (or None).

        Raises:
            ValueError: a name is not a hook (the message lists the valid ones).
            DuplicateHook: two handlers of one hook share an id.
            TypeError: a value is not a sequence of :class:`HookHandler`.
        """
        hooks = cls(handler_timeout=handler_timeout, queue_size=queue_size, concurrency=concurrency)
        for name, handlers in (mapping or {}).items():
            if isinstance(handlers, HookHandler) or not isinstance(handlers, Sequence):
                raise TypeError(f"hooks[{name!r}] must be a sequence of HookHandler")
            hooks.register_many(name, handlers)
        return hooks

    # -- registration --------------------------------------------------------------------

    def register(self, name: HookName | str, handler: HookHandler[Any]) -> None:
        """Add ``handler`` to hook ``name``.

        Raises:
            ValueError: unknown hook name.
            DuplicateHook: the hook already has a handler with this id.
            TypeError: ``handler`` is not a :class:`HookHandler`.
        """
        self.register_many(name, (handler,))

    def register_many(self, name: HookName | str, handlers: Iterable[HookHandler[Any]]) -> None:
        """Add several handlers to hook ``name``: all of them, or none if one is refused.

        Raises:
            ValueError: unknown hook name.
            DuplicateHook: an id is already registered, or repeated in ``handlers``.
            TypeError: an item is not a :class:`HookHandler`.
        """
        hook = hook_name(name)
        new = list(handlers)
        ids = {handler.id for handler in self._handlers.get(hook, ())}
        for handler in new:
            if not isinstance(handler, HookHandler):
                raise TypeError(f"expected a HookHandler, got {type(handler).__name__}")
            if handler.id in ids:
                raise DuplicateHook(hook, handler.id)
            ids.add(handler.id)
        for handler in new:
            self._sequence += 1
            self._order[hook, handler.id] = self._sequence
        self._handlers[hook] = tuple(
            sorted(
                (*self._handlers.get(hook, ()), *new),
                key=lambda h: (-h.priority, self._order[hook, h.id]),
            )
        )

    def cancel(self, name: HookName | str, handler_id: str) -> bool:
        """Remove the handler ``handler_id`` from hook ``name``; False if there was none.

        Raises:
            ValueError: unknown hook name.
        """
        hook = hook_name(name)
        current = self._handlers.get(hook, ())
        kept = tuple(handler for handler in current if handler.id != handler_id)
        if len(kept) == len(current):
            return False
        self._order.pop((hook, handler_id), None)
        if kept:
            self._handlers[hook] = kept
        else:
            del self._handlers[hook]
        return True

    def handlers(self, name: HookName | str) -> tuple[HookHandler[Any], ...]:
        """The handlers of hook ``name``, in the order they run.

        Raises:
            ValueError: unknown hook name.
        """
        return self._handlers.get(hook_name(name), ())

    def has_handlers(self, name: HookName) -> bool:
        """True if hook ``name`` has a handler: lets the hub skip building payloads."""
        return name in self._handlers

    # -- dispatch ------------------------------------------------------------------------

    def dispatch(self, event: HookEvent) -> None:
        """Notify the handlers of ``event.hook``; never raises, never waits.

        Sync handlers run now, in priority order; async ones are queued for :meth:`run`.
        """
        try:
            if isinstance(event, AlterPayload):
                log.error("%s is an alter hook: use dispatch_alter()", event.hook)
                return
            handlers = self._handlers.get(event.hook)
            if not handlers:
                return
            for handler in handlers:
                result = self._call(handler, event.hook, event)
                if inspect.isawaitable(result):
                    self._enqueue(_Job(handler, event.hook, result))
        except Exception:  # dispatch must never raise into hub code
            # The hook name, not the payload: payloads may carry user data (spec args).
            log.exception(
                "dispatching %s failed",
                event.hook,
                extra=fields(child_id=getattr(event, "child_id", None), hook=str(event.hook)),
            )

    async def dispatch_alter(self, payload: A) -> A:
        """Run the alter chain of ``payload.hook``; return the payload the hub should use.

        Each handler (sync or async) gets the result of the previous one and is bounded
        by ``handler_timeout``. A handler that raises, times out or returns an unacceptable
        value is logged and skipped.

        Raises:
            asyncio.CancelledError: only if the caller itself is cancelled.
        """
        hook = payload.hook
        for handler in self._handlers.get(hook, ()):
            result = self._call(handler, hook, payload)
            if inspect.isawaitable(result):
                result = await self._await(handler, hook, result)
            if result is None or result is _FAILED:
                continue
            if type(result) is not type(payload) or not isinstance(result, type(payload)):
                self._reject(handler, hook, f"returned {type(result).__name__}")
                continue
            problem = payload.alteration_error(result)
            if problem is not None:
                self._reject(handler, hook, problem)
                continue
            payload = result
        return payload

    def _call(self, handler: HookHandler[Any], hook: HookName, payload: HookPayload) -> object:
        """Call one callback synchronously, isolated; returns its result or ``_FAILED``."""
        self._dispatched += 1
        started = time.monotonic()
        try:
            result: object = handler.callback(payload)
        except (Exception, asyncio.CancelledError):
            # A sync call cannot be the target of a cancellation: this one is the handler's.
            self._failed += 1
            log.exception(
                "hook %s handler %r raised; skipped",
                hook,
                handler.id,
                extra=fields(
                    child_id=getattr(payload, "child_id", None),
                    hook=str(hook),
                    handler_id=handler.id,
                ),
            )
            return _FAILED
        elapsed = time.monotonic() - started
        if elapsed > SLOW_SYNC_HANDLER:
            log.warning(
                "hook %s handler %r blocked the event loop for %.3fs",
                hook,
                handler.id,
                elapsed,
                extra={"hook": str(hook), "handler_id": handler.id},
            )
        return result

    async def _await(
        self, handler: HookHandler[Any], hook: HookName, awaitable: Awaitable[object]
    ) -> object:
        """Await one handler's awaitable under the timeout, isolated."""
        extra = {"hook": str(hook), "handler_id": handler.id}
        scope = asyncio.timeout(self.handler_timeout)
        try:
            async with scope:
                return await awaitable
        except TimeoutError:
            if scope.expired():
                self._timed_out += 1
                log.warning(
                    "hook %s handler %r timed out after %ss; cancelled",
                    hook,
                    handler.id,
                    self.handler_timeout,
                    extra=extra,
                )
                return _FAILED
            self._failed += 1
            log.exception("hook %s handler %r raised; skipped", hook, handler.id, extra=extra)
            return _FAILED
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # we are being cancelled: never swallow that
            self._failed += 1
            log.exception("hook %s handler %r raised; skipped", hook, handler.id, extra=extra)
            return _FAILED
        except Exception:
            self._failed += 1
            log.exception("hook %s handler %r raised; skipped", hook, handler.id, extra=extra)
            return _FAILED

    def _reject(self, handler: HookHandler[Any], hook: HookName, problem: str) -> None:
        self._failed += 1
        log.error(
            "alter hook %s handler %r %s; its result is ignored",
            hook,
            handler.id,
            problem,
            extra={"hook": str(hook), "handler_id": handler.id},
        )

    def _enqueue(self, job: _Job) -> None:
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self._dropped += 1
            self._forget(job)
            if not self._dropping:
                self._dropping = True
                log.warning(
                    "hook queue full (%d jobs): dropping async hook jobs (%d dropped so far)",
                    self._queue.maxsize,
                    self._dropped,
                )
            return
        self._dropping = False

    def _forget(self, job: _Job) -> None:
        """Un-count a job that never ran, and close its coroutine (no 'never awaited')."""
        self._dispatched -= 1
        awaitable = job.awaitable
        if inspect.iscoroutine(awaitable):
            awaitable.close()

    # -- running async handlers ----------------------------------------------------------

    async def run(self, *, ready: asyncio.Event | None = None) -> None:
        """Run queued async handlers until cancelled; jobs left queued are then dropped.

        Sets ``ready`` once its workers exist. Jobs queued before that wait for it.

        Raises:
            RuntimeError: ``run()`` is already active.
            asyncio.CancelledError: always, in the end; it returns only on cancellation.
        """
        if self._running:
            raise RuntimeError("Hooks.run() is already active")
        self._running = True
        try:
            async with asyncio.TaskGroup() as task_group:
                for number in range(self.concurrency):
                    task_group.create_task(self._work(), name=f"hub.core.hooks:{number}")
                if ready is not None:
                    ready.set()
        finally:
            self._running = False
            self._discard_queued()

    async def _work(self) -> None:
        queue = self._queue
        while True:
            job = await queue.get()
            try:
                await self._await(job.handler, job.hook, job.awaitable)
            finally:
                queue.task_done()

    def _discard_queued(self) -> None:
        discarded = 0
        while True:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                break
            self._forget(job)
            self._queue.task_done()
            discarded += 1
        if discarded:
            self._dropped += discarded
            log.warning("hooks stopped with %d async hook jobs queued; dropped", discarded)

    async def wait_idle(self) -> None:
        """Wait until every queued async handler has run (needs :meth:`run` active)."""
        await self._queue.join()

    @property
    def is_running(self) -> bool:
        """True while :meth:`run` is active."""
        return self._running

    @property
    def pending(self) -> int:
        """Async handler jobs waiting to run."""
        return self._queue.qsize()

    @property
    def stats(self) -> HookStats:
        """A snapshot of the counters."""
        return HookStats(
            dispatched=self._dispatched,
            failed=self._failed,
            timed_out=self._timed_out,
            dropped=self._dropped,
        )


# -- documentation -----------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def hook_table_markdown() -> str:
    """The hook reference table (Markdown), generated from :class:`HookName` and payloads."""
    lines = [
        "| Hook | Fires on | When it fires | Payload |",
        "| --- | --- | --- | --- |",
    ]
    for name in HookName:
        cls = payload_type(name)
        fields = ", ".join(f"`{f.name}: {f.type}`" for f in dataclasses.fields(cls))
        kind = " (alter)" if name.is_alter else ""
        lines.append(
            f"| `{name.value}`{kind} | {name.fires_on} | {_cell(name.description)} "
            f"| `{cls.__name__}`: {_cell(fields)} |"
        )
    return "\n".join(lines) + "\n"
