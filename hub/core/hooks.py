"""Hooks: typed, isolated callbacks on hub events (ProcessHub's hooks, with types).

:class:`Hooks` holds one node's handlers and dispatches payloads to them. Names and payloads
live in :mod:`hub.core.hook_events`, :class:`HookHandler` in :mod:`hub.core.hook_handler`, the
generated doc table in :mod:`hub.core.hook_table`; all are re-exported here (``__all__``), so
``from hub.core.hooks import ...`` stays the one import for users.

Contract:

* **Per node.** Every :class:`~hub.hub.Hub` has its own :class:`Hooks`; handlers run on the
  node where they were registered and see what *that node* observed, as in ProcessHub. To
  observe every node, register on every node. Which node a hook fires on is part of its
  name's contract: :attr:`HookName.fires_on`.
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
import inspect
import time
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from hub.core.hook_events import (
    AlterPayload,
    ChildFailed,
    ChildrenMigrated,
    ChildrenRegistered,
    ChildrenUnregistered,
    ChildRestarted,
    ChildStarted,
    ChildStarting,
    ChildStopped,
    HookEvent,
    HookName,
    HookPayload,
    HubStopping,
    NodeJoined,
    NodeLeft,
    PartitionChanged,
    hook_name,
    payload_type,
)
from hub.core.hook_handler import DuplicateHook, HookHandler, HookSpec
from hub.core.hook_table import hook_table_markdown
from hub.logs import fields, get_logger

__all__ = [
    "DEFAULT_HANDLER_TIMEOUT",
    "DEFAULT_QUEUE_SIZE",
    "SLOW_SYNC_HANDLER",
    "AlterPayload",
    "ChildFailed",
    "ChildRestarted",
    "ChildStarted",
    "ChildStarting",
    "ChildStopped",
    "ChildrenMigrated",
    "ChildrenRegistered",
    "ChildrenUnregistered",
    "DuplicateHook",
    "HookEvent",
    "HookHandler",
    "HookName",
    "HookPayload",
    "HookSpec",
    "HookStats",
    "Hooks",
    "HubStopping",
    "NodeJoined",
    "NodeLeft",
    "PartitionChanged",
    "hook_name",
    "hook_table_markdown",
    "payload_type",
]

log = get_logger("hub.core.hooks")

#: Default bound on one async or alter handler's run, in seconds.
DEFAULT_HANDLER_TIMEOUT = 5.0
#: Default number of async handler jobs that may wait for :meth:`Hooks.run`.
DEFAULT_QUEUE_SIZE = 1024
#: A sync handler that takes longer than this (seconds) is logged: it blocked the loop.
SLOW_SYNC_HANDLER = 0.1

A = TypeVar("A", bound=AlterPayload)


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
