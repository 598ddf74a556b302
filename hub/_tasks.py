"""Readiness handshakes and named components in a TaskGroup (anyio's ``TaskGroup.start``).

:func:`start` runs ``fn(status)`` as a task of an :class:`asyncio.TaskGroup` and returns once
``fn`` calls ``status.started(value)``, with that value. If ``fn`` raises before that, the
exception comes out of :func:`start` (the task group is not aborted by it); if it returns
without signalling, :func:`start` raises RuntimeError. After the handshake the task belongs
to the group like any other. If the caller of :func:`start` is cancelled while it waits, the
task is cancelled too.

:class:`ComponentGroup` names the long-running components of one owner (a Hub, a HubClient)
in one task group. A component that fails *after* it signalled readiness does not abort the
group, which would cancel its siblings all at once and then the group's parent task: the
failure is recorded as :class:`~hub.errors.HubFailed` and ``failed`` is set, and the owner
stops the others in its own order (:meth:`ComponentGroup.cancel`).

Ownership: the tasks belong to the task group the caller passes; nothing here creates a task
any other way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

from hub.errors import HubFailed
from hub.logs import get_logger

log = get_logger("hub.tasks")

T = TypeVar("T")

#: What :func:`start` runs: a coroutine function that takes the readiness status.
Startable = Callable[["TaskStatus[T]"], Coroutine[Any, Any, None]]


class TaskStatus(Generic[T]):
    """Handed to a component by :func:`start`: call :meth:`started` once it is ready."""

    __slots__ = ("_ready",)

    def __init__(self, ready: asyncio.Future[T]) -> None:
        self._ready = ready

    def started(self, value: T) -> None:
        """Signal readiness; ``value`` is what :func:`start` returns. Later calls are
        ignored, and so is a call after the waiting caller went away."""
        if not self._ready.done():
            self._ready.set_result(value)

    @property
    def is_started(self) -> bool:
        """True once :meth:`started` was called (or the handshake ended otherwise)."""
        return self._ready.done()


async def start(tg: asyncio.TaskGroup, fn: Startable[T], *, name: str) -> T:
    """Run ``fn(status)`` in ``tg``; return the value it passes to ``status.started``.

    Raises:
        BaseException: whatever ``fn`` raised before it signalled readiness.
        RuntimeError: ``fn`` returned without signalling readiness.
    """
    task, ready = _launch(tg, fn, name)
    return await _wait_ready(task, ready)


def _launch(
    tg: asyncio.TaskGroup, fn: Startable[T], name: str
) -> tuple[asyncio.Task[None], asyncio.Future[T]]:
    ready: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    status = TaskStatus(ready)

    async def run() -> None:
        try:
            await fn(status)
        except asyncio.CancelledError:
            if not ready.done():
                ready.cancel()
            raise
        except BaseException as exc:
            if ready.done():
                raise  # after the handshake: the group's business
            ready.set_exception(exc)  # before it: the caller's, not the group's
            return
        if not ready.done():
            ready.set_exception(RuntimeError(f"{name} returned without signalling readiness"))

    return tg.create_task(run(), name=name), ready


async def _wait_ready(task: asyncio.Task[None], ready: asyncio.Future[T]) -> T:
    try:
        return await asyncio.shield(ready)
    except asyncio.CancelledError:
        if not ready.done() or ready.cancelled():
            task.cancel()  # the caller stopped waiting: the component goes with it
            await asyncio.wait([task])
        raise


class ComponentGroup:
    """The named components of ``owner`` in ``tg``; see the module docstring.

    Attributes:
        failed: set when a component failed after it started.
        failure: that failure (the first one), naming the component; its cause chained.
    """

    def __init__(
        self, tg: asyncio.TaskGroup, owner: str, *, on_failure: Callable[[], None] | None = None
    ) -> None:
        self._tg = tg
        self._owner = owner
        self._on_failure = on_failure
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.failed = asyncio.Event()
        self.failure: HubFailed | None = None

    def __contains__(self, name: str) -> bool:
        return name in self._tasks

    async def start(self, name: str, fn: Startable[T]) -> T:
        """Start component ``name`` through the readiness handshake (see :func:`start`)."""

        async def guarded(status: TaskStatus[T]) -> None:
            try:
                await fn(status)
            except Exception as exc:
                if not status.is_started:
                    raise
                self._fail(name, exc)

        task, ready = _launch(self._tg, guarded, self._task_name(name))
        self._tasks[name] = task
        return await _wait_ready(task, ready)

    async def start_when_set(
        self, name: str, run: Callable[[], Awaitable[None]], ready: asyncio.Event
    ) -> None:
        """Start component ``name``, ready once ``ready`` is set."""

        async def component(status: TaskStatus[None]) -> None:
            async def signal() -> None:
                await ready.wait()
                status.started(None)

            error: Exception | None = None
            async with asyncio.TaskGroup() as inner:
                signalling = inner.create_task(signal(), name=f"{self._task_name(name)}:ready")
                try:
                    await run()
                except Exception as exc:
                    error = exc  # raised below, not wrapped in an ExceptionGroup
                finally:
                    signalling.cancel()
            if error is not None:
                raise error

        await self.start(name, component)

    def spawn(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Start component ``name``, ready at once."""

        async def guarded() -> None:
            try:
                await run()
            except Exception as exc:
                self._fail(name, exc)

        self._tasks[name] = self._tg.create_task(guarded(), name=self._task_name(name))

    async def cancel(self, name: str) -> None:
        """Stop component ``name`` and wait for it; a failure while stopping is logged."""
        task = self._tasks.pop(name, None)
        if task is None or task.done():
            return
        task.cancel()
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None:
            log.warning("component %s failed while stopping: %r", name, task.exception())

    async def cancel_all(self) -> None:
        """Stop every component left, newest first."""
        for name in reversed(list(self._tasks)):
            await self.cancel(name)

    # -- internals ---------------------------------------------------------------------

    def _task_name(self, name: str) -> str:
        return f"{self._owner}:{name}"

    def _fail(self, name: str, exc: Exception) -> None:
        log.error("component %s of %s failed: %r", name, self._owner, exc, exc_info=exc)
        if self.failure is None:
            failure = HubFailed(self._owner, name, exc)
            failure.__cause__ = exc
            self.failure = failure
        self.failed.set()
        if self._on_failure is not None:
            self._on_failure()
