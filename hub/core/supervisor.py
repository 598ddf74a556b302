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
"""

from __future__ import annotations

import asyncio
import copy
import enum
import inspect
import random
import time
import types
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ParamSpec, Protocol

from hub.errors import (
    ChildNotRunning,
    ConfigError,
    HubClosed,
    NotCallable,
    StaleHandle,
    TargetNotAllowed,
    WorkerCrashed,
    WorkerStartFailed,
)
from hub.logs import bind_task, fields, get_logger
from hub.messaging.mailbox import DEFAULT_CAPACITY as DEFAULT_MAILBOX_CAPACITY
from hub.messaging.mailbox import Mailbox
from hub.model import ChildSpec, RestartPolicy
from hub.worker import (
    AllowList,
    Context,
    WorkerFn,
    describe_exception,
    resolve_target,
    truncate_reason,
)

__all__ = [
    "ExitKind",
    "Supervisor",
    "SupervisorEvents",
    "WorkerExit",
    "backoff_delay",
]

logger = get_logger("hub.core.supervisor")

_P = ParamSpec("_P")

#: Loop iterations a new instance gets before it counts as started.
START_WINDOW_ITERATIONS = 2
#: Backoff delays are scaled by a random factor in (1 - JITTER, 1] so restarts spread out.
BACKOFF_JITTER = 0.1
#: 2**64 times any sane initial delay is far past any cap; avoids float overflow.
_MAX_BACKOFF_EXPONENT = 64


class ExitKind(enum.StrEnum):
    """How a child ended for good on this node."""

    NORMAL = "normal"  # returned and the policy does not restart it
    CRASHED = "crashed"  # raised (or restart intensity exceeded)
    START_FAILED = "start_failed"  # target not resolvable or raised within the start window


@dataclass(frozen=True, slots=True)
class WorkerExit:
    """The final exit of a child on this node; ``reason`` is a one-line string (<= 500).

    ``restarts`` is how often the supervisor restarted the child before this exit: the
    authoritative count, which records about the child (the owner record) must not take
    from a cache that may lag behind the last ``worker_restarting``.
    """

    child_id: str
    kind: ExitKind
    reason: str
    exit_code: int | None = None
    restarts: int = 0


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


def backoff_delay(attempt: int, *, initial: float, maximum: float, rand: float) -> float:
    """Delay before restart number ``attempt`` (0-based since the last reset).

    ``min(maximum, initial * 2**attempt)`` scaled by ``1 - BACKOFF_JITTER * rand``, so it
    never exceeds ``maximum``.

    Args:
        attempt: restarts since the backoff was last reset.
        initial: the first delay, in seconds.
        maximum: the cap, in seconds.
        rand: a number in ``[0, 1)`` (``random.random()``); fixed in tests.
    """
    base = min(maximum, initial * 2.0 ** min(attempt, _MAX_BACKOFF_EXPONENT))
    return base * (1.0 - BACKOFF_JITTER * rand)


@dataclass(frozen=True, slots=True)
class _Outcome:
    """How one instance ended, before the restart policy is applied."""

    kind: ExitKind
    reason: str
    exit_code: int | None = None


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

    __slots__ = ("child", "closed", "restarts", "started", "supervisor")

    def __init__(self, supervisor: Supervisor, child: _Child, restarts: int) -> None:
        self.supervisor = supervisor
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
        self.supervisor._started(self.child, self.restarts)

    def close(self) -> None:
        self.closed = True


async def _await(value: Awaitable[Any]) -> Any:
    return await value


def _should_restart(policy: RestartPolicy, kind: ExitKind) -> bool:
    if policy is RestartPolicy.PERMANENT:
        return True
    if policy is RestartPolicy.TRANSIENT:
        return kind is ExitKind.CRASHED
    return False


def _failure_reason(exc: BaseException) -> str:
    """Reason for an instance's exception; our own worker errors already carry a clean one."""
    if isinstance(exc, WorkerStartFailed | WorkerCrashed):
        return truncate_reason(f"{type(exc).__name__}: {exc.reason}")
    return describe_exception(exc)


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
        self._hub_id = hub_id
        self._node_id = node_id
        self._events = events
        self._allow = allow
        self._stop_timeout = stop_timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._clock = clock
        self._children: dict[str, _Child] = {}
        self._task_group: asyncio.TaskGroup | None = None
        self._active = False
        self._checkpointer = checkpointer
        self._mailbox_capacity = mailbox_capacity

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
            self._supervise(child), name=f"hub.core.supervisor:{spec.id}"
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
                    extra=self._extra(child),
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
                        extra=self._extra(child),
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

    def _close_mailbox(self, child: _Child) -> None:
        mailbox, consumer = child.mailbox, child.consumer
        child.mailbox, child.consumer = None, None
        if mailbox is not None:
            mailbox.close()
        if consumer is not None:
            consumer.cancel()

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

    def _extra(self, child: _Child) -> dict[str, object]:
        """Log fields of a line about ``child``."""
        return fields(node_id=self._node_id, child_id=child.spec.id, token=child.fencing_token)

    def _log_ignored_cancellation(self, child: _Child) -> None:
        logger.error(
            "worker %r (fencing token %d) ignored cancellation for %.1fs; still running",
            child.spec.id,
            child.fencing_token,
            self._stop_timeout,
            extra=self._extra(child),
        )

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
                extra=self._extra(child),
            )

    def _started(self, child: _Child, restarts: int) -> None:
        """An instance passed its start window: log it, report ``worker_started``."""
        logger.info(
            "child %r started (fencing token %d, restart %d)",
            child.spec.id,
            child.fencing_token,
            restarts,
            extra={**self._extra(child), "restarts": restarts},
        )
        self._notify(
            child, self._events.worker_started, child.spec.id, child.fencing_token, restarts
        )

    def _finish(self, child: _Child, outcome: _Outcome, restarts: int) -> None:
        """Report the final exit; the id is released first so the hub may start it again."""
        self._forget(child)
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

    async def _supervise(self, child: _Child) -> None:
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
                        extra=self._extra(child),
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
                    extra={**self._extra(child), "backoff": delay, "restarts": restarts},
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
            self._forget(child)

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
            checkpointer=self._checkpoint if self._checkpointer is not None else None,
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
            extra=self._extra(child),
        )
        return _Outcome(ExitKind.START_FAILED, reason, _exit_code(error))

    def _crashed(self, child: _Child, reason: str, error: BaseException | None) -> _Outcome:
        logger.error(
            "child %r (fencing token %d) crashed: %s",
            child.spec.id,
            child.fencing_token,
            reason,
            exc_info=error,
            extra=self._extra(child),
        )
        return _Outcome(ExitKind.CRASHED, reason, _exit_code(error))


def _exit_code(error: BaseException | None) -> int | None:
    return error.exit_code if isinstance(error, WorkerCrashed) else None
