"""The life of one child on this node: run an instance, classify its end, back off, run again.

Part of :mod:`hub.core.supervisor` (import from there); the lifecycle diagram, the start
window and the restart policy are documented there. :class:`ChildLifecycle` runs inside the
child's supervising task, which :class:`~hub.core.supervisor.Supervisor` creates in its task
group; each instance runs inside that same task (one task per child keeps starts and stops
cheap), so this module creates no tasks.

Guarantees:

* A worker's exception never leaves :meth:`ChildLifecycle.supervise`: it becomes an
  ``_Outcome`` and, once the policy says no restart, one final ``worker_exited``. A requested
  stop (``_Child.stop_requested``) emits nothing and re-raises the cancellation.
* Event callbacks run synchronously and in isolation: one that raises is logged and ignored.
* The child's id is released (the ``release`` callback) before its final exit is reported,
  so the hub may start it again from inside ``worker_exited``.
"""

from __future__ import annotations

import asyncio
import copy
import random
import types
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ParamSpec, Protocol

from hub.core._restart import (
    ExitKind,
    WorkerExit,
    _exit_code,
    _failure_reason,
    _Outcome,
    _should_restart,
    backoff_delay,
)
from hub.errors import TargetNotAllowed, WorkerStartFailed
from hub.logs import bind_task, fields, get_logger
from hub.messaging.mailbox import Mailbox
from hub.model import ChildSpec
from hub.worker import (
    AllowList,
    Context,
    WorkerFn,
    describe_exception,
    resolve_target,
    truncate_reason,
)

__all__ = ["START_WINDOW_ITERATIONS", "ChildLifecycle", "SupervisorEvents"]

# One logger for the whole supervisor: its records keep the public module's name.
logger = get_logger("hub.core.supervisor")

_P = ParamSpec("_P")

#: Loop iterations a new instance gets before it counts as started.
START_WINDOW_ITERATIONS = 2


class SupervisorEvents(Protocol):
    """Lifecycle notifications, implemented by the hub.

    Called synchronously from the supervisor's tasks: implementations must not block or
    await (queue the work instead). Exceptions are logged and ignored.
    """

    def worker_started(self, child_id: str, fencing_token: int, restarts: int) -> None:
        """An instance passed its start window; ``restarts`` counts earlier restarts."""
        ...

    def worker_restarting(
        self, child_id: str, fencing_token: int, restarts: int, reason: str
    ) -> None:
        """An instance exited (``reason``) and restart number ``restarts`` is in backoff."""
        ...

    def worker_exited(self, child_id: str, fencing_token: int, exit: WorkerExit) -> None:
        """The child ended for good on this node; no more restarts."""
        ...


@dataclass(slots=True, eq=False)
class _Child:
    """Bookkeeping for one supervised child; lives while its supervising task does."""

    spec: ChildSpec
    fencing_token: int
    incarnation: int
    # One event per child, not per instance: a stop may land between two instances.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    stop_requested: bool = False
    task: asyncio.Task[None] = field(init=False)
    #: state the next instance starts from (incoming handover/checkpoint, then the
    #: latest checkpoint this child wrote on this node)
    state: Any = None
    state_source: str | None = None
    #: the current instance object of a class target (for handover_state)
    instance: object | None = None
    role: str = "active"
    #: messages for the current instance (class targets with handle_call/handle_cast)
    mailbox: Mailbox | None = None
    consumer: asyncio.Task[None] | None = None


async def _guard(run: WorkerFn, ctx: Context) -> Exception | None:
    """Run one instance; return its exception so it never reaches a task group."""
    try:
        await run(ctx)
    except Exception as exc:
        return exc
    return None


class _StartWindow:
    """Counts event-loop iterations after a worker began; then reports it started."""

    __slots__ = ("child", "closed", "lifecycle", "restarts", "started")

    def __init__(self, lifecycle: ChildLifecycle, child: _Child, restarts: int) -> None:
        self.lifecycle = lifecycle
        self.child = child
        self.restarts = restarts
        self.started = False
        self.closed = False

    def tick(self, loop: asyncio.AbstractEventLoop, left: int) -> None:
        if self.closed:
            return
        if left > 1:
            loop.call_soon(self.tick, loop, left - 1)
            return
        self.started = True
        self.lifecycle._started(self.child, self.restarts)

    def close(self) -> None:
        self.closed = True


class ChildLifecycle:
    """Runs children's instances under their restart policies, for one supervisor.

    Owned by one :class:`~hub.core.supervisor.Supervisor`, which validated the settings and
    keeps the table of live children; :meth:`supervise` is the body of a child's task.

    Args:
        hub_id: put in every :class:`~hub.worker.Context`.
        node_id: put in every :class:`~hub.worker.Context`.
        events: receives lifecycle notifications (see :class:`SupervisorEvents`).
        allow: targets this node may import; ``None`` allows all.
        backoff_initial: the first restart delay, in seconds.
        backoff_max: the cap on restart delays, in seconds.
        clock: monotonic seconds, for restart intensity and backoff reset.
        checkpoint: handed to workers as ``ctx.checkpointer``; None: no checkpoints.
        mailbox_capacity: size of a class worker's mailbox.
        release: drops a child from the supervisor's table; called before its final exit
            is reported and again when its task ends.
    """

    def __init__(
        self,
        *,
        hub_id: str,
        node_id: str,
        events: SupervisorEvents,
        allow: AllowList | None,
        backoff_initial: float,
        backoff_max: float,
        clock: Callable[[], float],
        checkpoint: Callable[[str, int, Any], Awaitable[None]] | None,
        mailbox_capacity: int,
        release: Callable[[_Child], None],
    ) -> None:
        self._hub_id = hub_id
        self._node_id = node_id
        self._events = events
        self._allow = allow
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._clock = clock
        self._checkpoint = checkpoint
        self._mailbox_capacity = mailbox_capacity
        self._release = release

    def extra(self, child: _Child) -> dict[str, object]:
        """Log fields of a line about ``child``."""
        return fields(node_id=self._node_id, child_id=child.spec.id, token=child.fencing_token)

    def _notify(
        self, child: _Child, call: Callable[_P, None], *args: _P.args, **kwargs: _P.kwargs
    ) -> None:
        """Call one event callback; its exceptions are logged and ignored."""
        try:
            call(*args, **kwargs)
        except Exception:
            logger.exception(
                "events.%s raised for child %r; ignored",
                getattr(call, "__name__", "callback"),
                child.spec.id,
                extra=self.extra(child),
            )

    def _started(self, child: _Child, restarts: int) -> None:
        """An instance passed its start window: log it, report ``worker_started``."""
        logger.info(
            "child %r started (fencing token %d, restart %d)",
            child.spec.id,
            child.fencing_token,
            restarts,
            extra={**self.extra(child), "restarts": restarts},
        )
        self._notify(
            child, self._events.worker_started, child.spec.id, child.fencing_token, restarts
        )

    def _finish(self, child: _Child, outcome: _Outcome, restarts: int) -> None:
        """Report the final exit; the id is released first so the hub may start it again."""
        self._release(child)
        if child.stop_requested:
            return
        exit_ = WorkerExit(
            child_id=child.spec.id,
            kind=outcome.kind,
            reason=outcome.reason,
            exit_code=outcome.exit_code,
            restarts=restarts,
        )
        self._notify(child, self._events.worker_exited, child.spec.id, child.fencing_token, exit_)

    async def supervise(self, child: _Child) -> None:
        """One child's life on this node: run, apply the policy, back off, run again."""
        spec = child.spec
        # This task's log context: the worker's own log lines name the child too.
        bind_task(node_id=self._node_id, child_id=spec.id, token=child.fencing_token)
        restarts = 0
        recent_restarts: deque[float] = deque()  # clock() of restarts inside the window
        backoff_attempt = 0
        try:
            while True:
                began = self._clock()
                outcome = await self._run_instance(child, restarts)
                if outcome.kind is ExitKind.START_FAILED or not _should_restart(
                    spec.restart, outcome.kind
                ):
                    self._finish(child, outcome, restarts)
                    return
                if child.stop_requested:
                    return
                now = self._clock()
                if now - began >= spec.max_seconds:
                    backoff_attempt = 0
                while recent_restarts and now - recent_restarts[0] > spec.max_seconds:
                    recent_restarts.popleft()
                if len(recent_restarts) >= spec.max_restarts:
                    reason = truncate_reason(
                        f"restart intensity exceeded: more than {spec.max_restarts} restart(s) "
                        f"within {spec.max_seconds:g}s; last exit: {outcome.reason}"
                    )
                    logger.error(
                        "child %r (fencing token %d) parked: %s",
                        spec.id,
                        child.fencing_token,
                        reason,
                        extra=self.extra(child),
                    )
                    self._finish(
                        child, _Outcome(ExitKind.CRASHED, reason, outcome.exit_code), restarts
                    )
                    return
                recent_restarts.append(now)
                restarts += 1
                delay = backoff_delay(
                    backoff_attempt,
                    initial=self._backoff_initial,
                    maximum=self._backoff_max,
                    rand=random.random(),
                )
                backoff_attempt += 1
                logger.info(
                    "child %r (fencing token %d) restarting in %.3fs (restart %d): %s",
                    spec.id,
                    child.fencing_token,
                    delay,
                    restarts,
                    outcome.reason,
                    extra={**self.extra(child), "backoff": delay, "restarts": restarts},
                )
                self._notify(
                    child,
                    self._events.worker_restarting,
                    spec.id,
                    child.fencing_token,
                    restarts,
                    outcome.reason,
                )
                await asyncio.sleep(delay)
        finally:
            self._release(child)

    async def _run_instance(self, child: _Child, restarts: int) -> _Outcome:
        """Resolve, build and run one instance until it ends; classify how it ended."""
        spec = child.spec
        try:
            run = resolve_target(spec.start, self._allow, child_id=spec.id)
        except WorkerStartFailed as exc:
            return self._start_failed(child, exc.reason)
        except TargetNotAllowed as exc:
            return self._start_failed(child, str(exc))
        child.instance = getattr(run, "__self__", None)
        if child.instance is not None and Mailbox.accepts(child.instance):
            child.mailbox = Mailbox(spec.id, self._node_id, child.instance, self._mailbox_capacity)
        try:
            return await self._run_started_instance(child, run, restarts)
        finally:
            self._close_mailbox(child)

    async def _run_started_instance(self, child: _Child, run: WorkerFn, restarts: int) -> _Outcome:
        spec = child.spec
        state = child.state
        alter = getattr(child.instance, "alter_handover_state", None)
        if state is not None and child.state_source == "handover" and callable(alter):
            try:
                state = alter(state)
            except Exception as exc:
                return self._start_failed(
                    child, f"alter_handover_state raised: {describe_exception(exc)}", exc
                )
        ctx = Context(
            hub_id=self._hub_id,
            child_id=spec.id,
            node_id=self._node_id,
            fencing_token=child.fencing_token,
            incarnation=child.incarnation,
            # Private copies: a worker mutating its args must not change the next restart's.
            args=copy.deepcopy(spec.args) if spec.args else {},
            metadata=types.MappingProxyType(dict(spec.metadata)),
            restarts=restarts,
            stopping=child.stopping,
            state=state,
            state_source=child.state_source if state is not None else None,
            role=child.role,
            checkpointer=self._checkpoint,
        )
        # The instance runs inside this (the child's) task: one task per child keeps starts
        # and stops cheap. A call_soon chain marks the end of the start window.
        loop = asyncio.get_running_loop()
        window = _StartWindow(self, child, restarts)
        loop.call_soon(window.tick, loop, START_WINDOW_ITERATIONS)
        task = asyncio.current_task()
        try:
            error = await _guard(run, ctx)
        except asyncio.CancelledError:
            window.close()
            if child.stop_requested or (task is not None and task.cancelling()):
                raise  # a stop
            # The worker raised CancelledError by itself (e.g. awaited a cancelled future).
            if not window.started:
                return self._start_failed(child, "CancelledError: cancelled itself at start")
            return self._crashed(child, "CancelledError: cancelled without a stop request", None)
        window.close()
        if not window.started:
            if error is not None:
                return self._start_failed(child, _failure_reason(error), error)
            # A normal return inside the window: it did start, then exited normally.
            self._started(child, restarts)
        if error is None:
            return _Outcome(ExitKind.NORMAL, "normal")
        return self._crashed(child, _failure_reason(error), error)

    def _start_failed(
        self, child: _Child, reason: str, error: BaseException | None = None
    ) -> _Outcome:
        logger.error(
            "child %r (fencing token %d) failed to start: %s",
            child.spec.id,
            child.fencing_token,
            reason,
            exc_info=error,
            extra=self.extra(child),
        )
        return _Outcome(ExitKind.START_FAILED, reason, _exit_code(error))

    def _crashed(self, child: _Child, reason: str, error: BaseException | None) -> _Outcome:
        logger.error(
            "child %r (fencing token %d) crashed: %s",
            child.spec.id,
            child.fencing_token,
            reason,
            exc_info=error,
            extra=self.extra(child),
        )
        return _Outcome(ExitKind.CRASHED, reason, _exit_code(error))

    def _close_mailbox(self, child: _Child) -> None:
        mailbox, consumer = child.mailbox, child.consumer
        child.mailbox, child.consumer = None, None
        if mailbox is not None:
            mailbox.close()
        if consumer is not None:
            consumer.cancel()
