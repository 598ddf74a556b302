"""How a Hub or HubClient runs its components, and how a failing one is reported.

:class:`Lifecycle` runs the owner's components in a task of their own (the *runner*), in a
:class:`~hub._tasks.ComponentGroup`:

* :meth:`Lifecycle.start` runs the owner's ``up(group)``, which starts the components in
  order through readiness handshakes, and returns once it finished (re-raising what made it
  fail: the owner's ``down(group)`` has then already stopped what had started).
* :meth:`Lifecycle.stop` asks the runner to run ``down(group)``, which stops the components
  in the owner's order, and waits for it.
* A component that fails after it started never cancels the caller's task (as it would
  from a plain TaskGroup entered by the caller): the runner stops the node in order at
  once, ``failed`` is set and ``failure`` is a :class:`~hub.errors.HubFailed` naming the
  component, with its exception as the cause. :meth:`stop` raises it (once).
* Inside ``async with`` (:meth:`enter_body`, :meth:`exit_body`) the body is interrupted:
  its task is cancelled, and the exception out of the ``async with`` is the HubFailed, not
  a bare CancelledError. Outside one (``start()``/``stop()``), nothing is cancelled:
  ``failed`` and ``stop()`` report it.

Ownership: the runner task belongs to a TaskGroup entered by :meth:`start` and left by
:meth:`stop`, which may run in another task.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from hub._tasks import ComponentGroup, TaskStatus, start
from hub.errors import HubClosed, HubFailed
from hub.logs import get_logger

log = get_logger("hub.api.lifecycle")

#: Starts (``up``) or stops (``down``) the owner's components, in its order.
Steps = Callable[[ComponentGroup], Awaitable[None]]


class Lifecycle:
    """The runner of one owner's components; see the module docstring.

    Args:
        owner: names the owner in task names and in :class:`HubFailed` messages.
        startup_timeout: seconds ``up`` may take (then :meth:`start` raises TimeoutError).

    Attributes:
        failed: set when a component failed after it started (the owner then stops).
        failure: that failure, or None.
    """

    def __init__(self, owner: str, *, startup_timeout: float) -> None:
        self._owner = owner
        self._startup_timeout = startup_timeout
        self._outer: asyncio.TaskGroup | None = None
        self._wake = asyncio.Event()
        self._body: asyncio.Task[object] | None = None
        self._interrupted = False
        self._reported = False
        self.failed = asyncio.Event()
        self.failure: HubFailed | None = None

    @property
    def is_started(self) -> bool:
        """True from :meth:`start` until :meth:`stop` (and while a failed runner stops)."""
        return self._outer is not None

    async def start(self, up: Steps, down: Steps) -> None:
        """Run ``up``; return once it completed.

        Raises:
            HubClosed: already started.
            TimeoutError: ``up`` took longer than ``startup_timeout``.
            Exception: what made ``up`` fail (after ``down`` ran).
        """
        if self._outer is not None:
            raise HubClosed(f"{self._owner} already started")
        self._wake = asyncio.Event()
        self._interrupted = self._reported = False
        self.failed = asyncio.Event()
        self.failure = None
        outer = asyncio.TaskGroup()
        await outer.__aenter__()
        self._outer = outer

        async def runner(status: TaskStatus[None]) -> None:
            await self._run(up, down, status)

        try:
            await start(outer, runner, name=f"{self._owner}:runner")
        except BaseException:
            self._outer = None
            self._reported = True  # start() raises it
            await outer.__aexit__(None, None, None)
            raise

    async def stop(self) -> None:
        """Run ``down`` (if the runner still runs) and wait for it; idempotent.

        Raises:
            HubFailed: a component failed (reported once, by the first stop after it).
        """
        outer, self._outer = self._outer, None
        if outer is not None:
            self._wake.set()
            await outer.__aexit__(None, None, None)
        if self.failure is not None and not self._reported:
            self._reported = True
            raise self.failure

    def enter_body(self) -> None:
        """The current task runs the ``async with`` body now: interrupt it on failure."""
        self._body = asyncio.current_task()
        if self.failure is not None:
            self._interrupt()

    async def exit_body(
        self, exc: BaseException | None, stop: Callable[[], Awaitable[None]]
    ) -> None:
        """Leave the ``async with`` body (which ended with ``exc``) by calling ``stop``.

        Raises:
            HubFailed: a component failed, and the body ended because of it (or normally).
        """
        body, self._body = self._body, None
        cancelled_by_others = False
        if self._interrupted and body is not None:
            cancelled_by_others = body.uncancel() > 0
        try:
            await stop()
        except HubFailed:
            if self._interrupted and not cancelled_by_others:
                raise  # replaces the CancelledError that interrupted the body
            if exc is None:
                raise
            # The body's own exception (or an outer cancellation) wins; the failure was
            # logged and stays in ``failure``.

    # -- the runner ---------------------------------------------------------------------

    async def _run(self, up: Steps, down: Steps, status: TaskStatus[None]) -> None:
        error: Exception | None = None
        async with asyncio.TaskGroup() as tg:
            group = ComponentGroup(tg, self._owner, on_failure=lambda: self._failed(group))
            try:
                try:
                    async with asyncio.timeout(self._startup_timeout):
                        await up(group)
                    if group.failure is not None:
                        raise group.failure
                except Exception as exc:
                    error = exc  # raised below, not wrapped in an ExceptionGroup
                else:
                    status.started(None)
                    await self._wake.wait()
            finally:
                try:
                    await down(group)
                except Exception as exc:
                    log.exception("%s: stopping failed", self._owner)
                    if error is None and self.failure is None:
                        self._record(HubFailed(self._owner, "shutdown", exc), exc)
                finally:
                    await group.cancel_all()
        if error is not None:
            raise error

    def _failed(self, group: ComponentGroup) -> None:
        if group.failure is not None and self.failure is None:
            self._record(group.failure, group.failure.__cause__)
        self._wake.set()
        if self._body is not None:
            self._interrupt()

    def _record(self, failure: HubFailed, cause: BaseException | None) -> None:
        failure.__cause__ = cause
        self.failure = failure
        self.failed.set()

    def _interrupt(self) -> None:
        if not self._interrupted and self._body is not None:
            self._interrupted = True
            self._body.cancel()
