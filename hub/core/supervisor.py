"""Local worker lifecycle: start, supervise, restart with backoff, stop.

The :class:`Supervisor` runs the workers of one node. The hub calls :meth:`Supervisor.start`
once it owns a child and :meth:`Supervisor.stop` (or ``stop_many``, ``stop_all``) when it must
let go; the supervisor reports back through :class:`SupervisorEvents`.

Lifecycle of one child::

    start() ─> resolve target, build, run ──(raised within the start window)──> START_FAILED
                    │
                 worker_started
                    │
               exit (return or raise) ──policy says no restart──> worker_exited(NORMAL|CRASHED)
                    │
       intensity left? ──no──> worker_exited(CRASHED, "restart intensity exceeded ...")
                    │ yes
            worker_restarting, backoff ──> resolve, build, run again ──> worker_started ...

Guarantees:

* Task ownership (STYLE 9.4): :meth:`Supervisor.run` owns one ``asyncio.TaskGroup`` holding
  one supervising task per child; each supervising task runs the current worker instance in
  its own small task group. Nothing else creates tasks.
* A child id is never run twice at once on this node: :meth:`Supervisor.start` refuses an id
  that still has a live task, including one in restart backoff or ignoring cancellation.
* Isolation: a worker's exception is caught in its supervising task; it never reaches the
  task group, other workers or :meth:`Supervisor.run`. Event callbacks that raise are logged
  and ignored. ``KeyboardInterrupt`` and ``SystemExit`` are not caught: they end the process.
* A requested stop emits no event. Every other end of a child emits exactly one final
  ``worker_exited``; every exit except ``START_FAILED`` follows a ``worker_started``.
* Restart policy (``spec.restart``): ``permanent`` restarts after any exit, ``transient`` only
  after a crash, ``temporary`` never. More than ``spec.max_restarts`` restarts within
  ``spec.max_seconds`` ends the child with a final ``CRASHED`` exit, so a crash loop is parked
  on its node instead of ping-ponging across the cluster. Restart ``k`` (counting from 0 since
  the last reset) waits :func:`backoff_delay`; the count resets once an instance ran for
  ``max_seconds``.

Start window: an instance counts as started when its task was scheduled and has not finished
with an exception after the loop gave it two iterations. An exception inside that window is a
final ``START_FAILED`` (on the first start and on restarts alike), so a worker that cannot even
start is not retried. A normal return inside the window is a normal exit.

Warning: Python cannot kill a coroutine. A worker that catches ``CancelledError`` and keeps
running is only *waited for*: :meth:`Supervisor.stop` (and ``stop_many``, ``stop_all``) give up
after ``stop_timeout`` and log an error, the child keeps its id (``is_running`` stays true)
until the task really ends, and :meth:`Supervisor.run` cannot return before it ends.

Layout: this module is the public namespace and holds :class:`Supervisor` (the table of
children, starting and stopping them, their mailboxes). The life of one child lives in the
private ``_child_lifecycle`` (:class:`ChildLifecycle`, :class:`SupervisorEvents`), the exit
model and backoff arithmetic in ``_restart`` (:class:`ExitKind`, :class:`WorkerExit`,
:func:`backoff_delay`). All of them log as ``hub.core.supervisor``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from hub.core._child_lifecycle import (
    START_WINDOW_ITERATIONS,
    ChildLifecycle,
    SupervisorEvents,
    _Child,
)
from hub.core._restart import BACKOFF_JITTER, ExitKind, WorkerExit, backoff_delay
from hub.errors import ChildNotRunning, ConfigError, HubClosed, NotCallable, StaleHandle
from hub.logs import fields, get_logger
from hub.messaging.mailbox import DEFAULT_CAPACITY as DEFAULT_MAILBOX_CAPACITY
from hub.messaging.mailbox import Mailbox
from hub.model import ChildSpec
from hub.worker import AllowList, describe_exception

__all__ = [
    "BACKOFF_JITTER",
    "START_WINDOW_ITERATIONS",
    "ExitKind",
    "Supervisor",
    "SupervisorEvents",
    "WorkerExit",
    "backoff_delay",
]

logger = get_logger("hub.core.supervisor")


async def _await(value: Awaitable[Any]) -> Any:
    return await value


class Supervisor:
    """Runs this node's workers under restart policies.

    Args:
        hub_id: put in every :class:`~hub.worker.Context`.
        node_id: put in every :class:`~hub.worker.Context`.
        events: receives lifecycle notifications (see :class:`SupervisorEvents`).
        allow: targets this node may import; ``None`` allows all.
        stop_timeout: how long a stop waits for a cancelled worker, in seconds.
        backoff_initial: the first restart delay, in seconds.
        backoff_max: the cap on restart delays, in seconds.
        clock: monotonic seconds, for restart intensity and backoff reset; injectable.

    Raises:
        ConfigError: a timeout or delay is negative, or ``backoff_max < backoff_initial``.
    """

    def __init__(
        self,
        *,
        hub_id: str,
        node_id: str,
        events: SupervisorEvents,
        allow: AllowList | None = None,
        stop_timeout: float = 5.0,
        backoff_initial: float = 0.05,
        backoff_max: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        checkpointer: Callable[[str, int, Any], Awaitable[None]] | None = None,
        mailbox_capacity: int = DEFAULT_MAILBOX_CAPACITY,
    ) -> None:
        if not stop_timeout > 0:
            raise ConfigError(f"stop_timeout must be > 0, got {stop_timeout!r}")
        if not backoff_initial >= 0:
            raise ConfigError(f"backoff_initial must be >= 0, got {backoff_initial!r}")
        if not backoff_max >= backoff_initial:
            raise ConfigError(
                f"backoff_max ({backoff_max!r}) must be >= backoff_initial ({backoff_initial!r})"
            )
        self._node_id = node_id
        self._stop_timeout = stop_timeout
        self._children: dict[str, _Child] = {}
        self._task_group: asyncio.TaskGroup | None = None
        self._active = False
        self._checkpointer = checkpointer
        self._lifecycle = ChildLifecycle(
            hub_id=hub_id,
            node_id=node_id,
            events=events,
            allow=allow,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            clock=clock,
            checkpoint=self._checkpoint if checkpointer is not None else None,
            mailbox_capacity=mailbox_capacity,
            release=self._forget,
        )

    # -- running -------------------------------------------------------------------------

    async def run(self, *, ready: asyncio.Event | None = None) -> None:
        """Own the workers' task group until cancelled.

        Sets ``ready`` once :meth:`start` is accepted. On cancellation it refuses new starts,
        stops every worker (as :meth:`stop_all`, bounded by ``stop_timeout``) and re-raises.

        Raises:
            RuntimeError: ``run()`` is already active on this supervisor.
            asyncio.CancelledError: always, in the end; it returns only on cancellation.
        """
        if self._active:
            raise RuntimeError("Supervisor.run() is already active")
        self._active = True
        try:
            async with asyncio.TaskGroup() as task_group:
                self._task_group = task_group
                if ready is not None:
                    ready.set()
                try:
                    await asyncio.Event().wait()  # until cancelled
                finally:
                    self._task_group = None
                    await self.stop_all()
        finally:
            self._task_group = None
            self._active = False

    def start(
        self,
        spec: ChildSpec,
        *,
        fencing_token: int,
        incarnation: int,
        state: Any = None,
        state_source: str | None = None,
        role: str = "active",
    ) -> None:
        """Start supervising ``spec`` without waiting; outcomes arrive as events.

        Args:
            spec: what to run.
            fencing_token: the owner key's create revision, handed to the worker.
            incarnation: this node's lease id, handed to the worker.

        Raises:
            HubClosed: :meth:`run` is not active.
            ValueError: ``spec.id`` still has a live task on this node.
        """
        task_group = self._task_group
        if task_group is None:
            raise HubClosed("the supervisor is not running")
        if spec.id in self._children:
            raise ValueError(f"child {spec.id!r} is already running on this node")
        child = _Child(spec=spec, fencing_token=fencing_token, incarnation=incarnation)
        child.state, child.state_source = state, state_source
        child.role = role
        self._children[spec.id] = child
        child.task = task_group.create_task(
            self._lifecycle.supervise(child), name=f"hub.core.supervisor:{spec.id}"
        )

    async def stop(self, child_id: str) -> None:
        """Stop one child: set ``ctx.stopping``, cancel it, wait for it to end.

        Waits at most ``stop_timeout``; a worker still running then is logged and left to
        finish on its own (its id stays taken). Emits no event. An unknown id is a no-op.
        """
        child = self._children.get(child_id)
        if child is None:
            return
        self._request_stop(child)
        _, pending = await asyncio.wait({child.task}, timeout=self._stop_timeout)
        if pending:
            self._log_ignored_cancellation(child)

    async def stop_many(
        self, child_ids: Iterable[str], *, collect_state: bool = False, state_timeout: float = 3.0
    ) -> dict[str, Any]:
        """Stop several children concurrently, bounded by one ``stop_timeout`` in total.

        Like :meth:`stop` for each id, but with one pass of cancels and one wait, and no
        task per id. Unknown ids are skipped. Emits no events.

        With ``collect_state``, each stopped instance that defines ``handover_state()``
        (sync or async) is asked for its state, all within ``state_timeout``; returns
        ``{child_id: state}`` for those that answered (None answers are left out). A
        worker whose ``handover_state`` raises or is too slow moves without state.
        """
        children = [self._children[c] for c in dict.fromkeys(child_ids) if c in self._children]
        await self._stop_children(children)
        if not collect_state:
            return {}
        return await self._collect_states(children, state_timeout)

    async def _collect_states(self, children: list[_Child], timeout: float) -> dict[str, Any]:
        states: dict[str, Any] = {}
        pending: list[tuple[_Child, Awaitable[Any]]] = []
        for child in children:
            if child.instance is None:
                # Stopped before an instance took the state it was handed: pass it on as is.
                if child.state is not None and child.state_source == "handover":
                    states[child.spec.id] = child.state
                continue
            getter = getattr(child.instance, "handover_state", None)
            if getter is None or not callable(getter):
                continue
            try:
                value = getter()
            except Exception as exc:
                logger.warning(
                    "handover_state of %r raised: %s",
                    child.spec.id,
                    describe_exception(exc),
                    extra=self._lifecycle.extra(child),
                )
                continue
            if inspect.isawaitable(value):
                pending.append((child, value))
            elif value is not None:
                states[child.spec.id] = value
        if pending:
            try:
                async with asyncio.timeout(timeout):
                    results = await asyncio.gather(
                        *(_await(value) for _, value in pending), return_exceptions=True
                    )
            except TimeoutError:
                logger.warning(
                    "handover_state timed out for %d child(ren)",
                    len(pending),
                    extra=fields(node_id=self._node_id),
                )
                results = []
            for (child, _), result in zip(pending, results, strict=False):
                if isinstance(result, BaseException):
                    logger.warning(
                        "handover_state of %r raised: %s",
                        child.spec.id,
                        describe_exception(result),
                        extra=self._lifecycle.extra(child),
                    )
                elif result is not None:
                    states[child.spec.id] = result
        return states

    async def _checkpoint(self, child_id: str, token: int, state: Any) -> None:
        """Write a checkpoint through the hub; remember it for local restarts."""
        if self._checkpointer is None:
            raise RuntimeError("no checkpoint store configured")
        await self._checkpointer(child_id, token, state)
        child = self._children.get(child_id)
        if child is not None and child.fencing_token == token:
            child.state, child.state_source = state, "checkpoint"

    async def stop_all(self) -> None:
        """Stop every child concurrently, bounded by one ``stop_timeout`` in total.

        Used for self-fencing: one pass of cancels, then one wait, so thousands of workers
        stop in one round of loop iterations. Emits no events.
        """
        await self._stop_children(list(self._children.values()))

    # -- queries -------------------------------------------------------------------------

    def is_running(self, child_id: str) -> bool:
        """True while ``child_id`` has a live task here (also during restart backoff)."""
        return child_id in self._children

    def mailbox(self, child_id: str, fencing_token: int | None = None) -> Mailbox:
        """The mailbox of a local child's running instance, its consumer started.

        Raises:
            ChildNotRunning: no instance of the child runs here (or it is restarting).
            StaleHandle: ``fencing_token`` names another owner than the running one.
            NotCallable: the worker defines neither handle_call nor handle_cast.
        """
        child = self._children.get(child_id)
        if child is None or child.stop_requested:
            raise ChildNotRunning(child_id, self._node_id)
        if fencing_token and fencing_token != child.fencing_token:
            raise StaleHandle(child_id, self._node_id, fencing_token, child.fencing_token)
        mailbox = child.mailbox
        if mailbox is None:
            if child.instance is not None and not Mailbox.accepts(child.instance):
                raise NotCallable(
                    child_id, self._node_id, "the worker defines no handle_call/handle_cast"
                )
            raise ChildNotRunning(child_id, self._node_id)
        if child.consumer is None:
            group = self._task_group
            if group is None:
                raise ChildNotRunning(child_id, self._node_id)
            child.consumer = group.create_task(
                mailbox.run(), name=f"hub.messaging.mailbox:{child_id}"
            )
        return mailbox

    def role(self, child_id: str) -> str | None:
        """The role of a local child's instance, or None if it is not running here."""
        child = self._children.get(child_id)
        return child.role if child is not None else None

    def token(self, child_id: str) -> int | None:
        """The fencing token ``child_id`` was started with, or None if it is not running."""
        child = self._children.get(child_id)
        return None if child is None else child.fencing_token

    def child_ids(self) -> frozenset[str]:
        """Ids of every child with a live task here."""
        return frozenset(self._children)

    def __len__(self) -> int:
        return len(self._children)

    # -- internals -----------------------------------------------------------------------

    def _request_stop(self, child: _Child) -> None:
        child.stop_requested = True
        child.stopping.set()
        child.task.cancel()

    async def _stop_children(self, children: list[_Child]) -> None:
        if not children:
            return
        for child in children:
            self._request_stop(child)
        _, pending = await asyncio.wait(
            [child.task for child in children], timeout=self._stop_timeout
        )
        if pending:
            logger.error(
                "%d worker(s) ignored cancellation for %.1fs",
                len(pending),
                self._stop_timeout,
                extra=fields(node_id=self._node_id),
            )
            for child in children:
                if child.task in pending:
                    self._log_ignored_cancellation(child)

    def _forget(self, child: _Child) -> None:
        if self._children.get(child.spec.id) is child:
            del self._children[child.spec.id]

    def _log_ignored_cancellation(self, child: _Child) -> None:
        logger.error(
            "worker %r (fencing token %d) ignored cancellation for %.1fs; still running",
            child.spec.id,
            child.fencing_token,
            self._stop_timeout,
            extra=self._lifecycle.extra(child),
        )
