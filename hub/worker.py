"""The user-facing worker API: :class:`Context`, the :class:`Worker` protocol, start targets.

A child spec names its worker with an import string, ``"package.module:attr"``. The attribute
(dotted paths such as ``"app.rooms:Lobby.Worker"`` are walked) is either

* a class whose instances have ``async def run(self, ctx)``; the supervisor builds a fresh
  instance, with no arguments, for every start and restart; or
* an ``async def run(ctx)`` function.

``run`` returning is a normal exit, raising is a crash, and cancellation means stop: put
cleanup in ``finally`` and let ``CancelledError`` propagate. Example::

    class Room:
        async def run(self, ctx: Context) -> None:
            async with open_room(ctx.child_id, fence=ctx.fencing_token) as room:
                await room.serve()  # cancelled on stop; ctx.stopping is set first

Guarantees: nothing read from etcd is unpickled or evaluated. A target is imported with
:func:`importlib.import_module` only after the optional :class:`AllowList` accepted it, so a
spec can only name code that is already installed on the node. Resolution errors carry a
one-line reason (:class:`~hub.errors.WorkerStartFailed`).

This module creates no tasks: the supervisor (:mod:`hub.core.supervisor`) owns every worker task.

Warning: importing a module runs its top-level code, on the event loop, the first time a
target from it is resolved. Keep worker modules cheap to import.
"""

from __future__ import annotations

import asyncio
import fnmatch
import importlib
import inspect
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from hub.errors import ConfigError, TargetNotAllowed, WorkerStartFailed

__all__ = [
    "MAX_REASON_CHARS",
    "AllowList",
    "Context",
    "Worker",
    "WorkerFn",
    "describe_exception",
    "resolve_target",
    "truncate_reason",
    "validate_target",
]

#: Longest exit or failure reason we keep; reasons end up in etcd records and logs.
MAX_REASON_CHARS = 500


@dataclass(frozen=True, slots=True)
class Context:
    """What a running worker knows about itself; one per start or restart.

    Fencing: ``fencing_token`` is the create revision of ``owners/{child_id}`` in etcd. Every
    new owner of the child (after a failover, a move or a re-acquire) gets a strictly larger
    token, so an external system that remembers the largest token it has seen can reject
    writes that carry a smaller one: a stale instance that has not noticed it lost ownership
    (a paused process, a partitioned node) cannot overwrite the new owner's work. Send the
    token with every external write that must not be duplicated.

    Attributes:
        hub_id: the hub (cluster) this worker belongs to.
        child_id: the cluster-unique child id.
        node_id: the node running this instance.
        fencing_token: owner key create revision; grows with every new owner.
        incarnation: the node's lease id; changes when the node rejoins.
        args: the JSON value from the child spec (a private copy per start).
        metadata: the spec's metadata, read-only.
        restarts: how many times the local supervisor restarted this child on this node.
        stopping: set just before the worker is cancelled, so ``finally`` blocks (and
            ``except CancelledError: ...; raise``) can tell a requested stop from other
            cancellation and finish gracefully.
        state: state this instance starts from: handed over by the previous owner
            (hot swap), or the last checkpoint, or None.
        state_source: ``"handover"``, ``"checkpoint"``, ``"promotion"`` (a passive replica
            became active and kept its own state) or None.
        role: ``"active"``, or ``"passive"`` for a standby replica under active/passive
            replication (its fencing token is 0: it owns nothing and may not checkpoint).
    """

    hub_id: str
    child_id: str
    node_id: str
    fencing_token: int
    incarnation: int
    args: Any
    metadata: Mapping[str, Any]
    restarts: int = 0
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    state: Any = None
    state_source: str | None = None
    role: str = "active"
    checkpointer: Callable[[str, int, Any], Awaitable[None]] | None = field(
        default=None, repr=False, compare=False
    )

    async def checkpoint(self, state: Any) -> None:
        """Persist ``state`` durably, fenced by this instance's token.

        The next owner of the child (after a crash, a move or a restart of the cluster)
        starts with it as ``ctx.state`` unless fresher handed-over state exists. ``state`` is
        bytes or a JSON-serializable value.

        Raises:
            StaleFence: this instance no longer owns the child; the write was refused.
            InvalidSpec: the state is neither bytes nor JSON-serializable, or larger than
                1 MiB encoded (what one etcd request can carry; nothing was written).
            StoreError: etcd could not be reached.
        """
        if self.checkpointer is None:
            raise RuntimeError("checkpoints need a running hub")
        await self.checkpointer(self.child_id, self.fencing_token, state)


#: A resolved start target: call it with the context to run one instance of the worker.
WorkerFn = Callable[[Context], Awaitable[None]]


class Worker(Protocol):
    """A class-based worker: instantiated with no arguments, then ``await worker.run(ctx)``.

    Returning is a normal exit, raising is a crash, cancellation means stop.
    """

    async def run(self, ctx: Context) -> None:
        """Do the work until done (return), failed (raise) or stopped (cancelled)."""
        ...


class AllowList:
    """The start targets a node agrees to import: ``fnmatch`` patterns over the whole target.

    Example: ``AllowList(["app.rooms:*", "hub.command:Command"])``. ``*`` also matches ``.``
    and ``:``, so ``"app.*"`` allows every target under the ``app`` package. Matching is
    case-sensitive. An empty list allows nothing; "no allow-list" is spelled ``None`` by the
    callers and allows everything.

    Raises:
        ConfigError: ``patterns`` is a bare string or holds an empty or non-string pattern.
    """

    __slots__ = ("_patterns", "_regex")

    def __init__(self, patterns: Sequence[str]) -> None:
        if isinstance(patterns, str):
            raise ConfigError("allow-list patterns must be a sequence of strings, not a str")
        collected = tuple(patterns)
        for pattern in collected:
            if not isinstance(pattern, str) or not pattern:
                raise ConfigError(f"allow-list pattern {pattern!r} must be a non-empty str")
        self._patterns = collected
        # One compiled alternation: a check is one regex match, however many patterns.
        self._regex = re.compile("|".join(fnmatch.translate(p) for p in collected) or r"(?!)")

    @property
    def patterns(self) -> tuple[str, ...]:
        """The patterns, in the order given."""
        return self._patterns

    def allows(self, target: str) -> bool:
        """Return True if some pattern matches the full ``target`` string."""
        return self._regex.match(target) is not None

    def check(self, target: str) -> None:
        """Return if ``target`` is allowed.

        Raises:
            TargetNotAllowed: no pattern matches ``target``.
        """
        if not self.allows(target):
            raise TargetNotAllowed(target)

    def __repr__(self) -> str:
        return f"AllowList({list(self._patterns)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AllowList):
            return NotImplemented
        return self._patterns == other._patterns

    def __hash__(self) -> int:
        return hash(self._patterns)


def describe_exception(exc: BaseException) -> str:
    """A one-line reason for ``exc``: ``"ValueError: boom"``, at most 500 characters.

    Uses the type name and ``str(exc)``, never ``repr`` of arguments or pickling, so huge or
    hostile objects cannot bloat a record.
    """
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not break the supervisor
        message = "<unprintable>"
    reason = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return truncate_reason(reason)


def truncate_reason(reason: str) -> str:
    """Cut ``reason`` to :data:`MAX_REASON_CHARS` characters, marking the cut with ``…``."""
    if len(reason) <= MAX_REASON_CHARS:
        return reason
    return reason[: MAX_REASON_CHARS - 1] + "…"


def _is_dotted_name(text: str) -> bool:
    return bool(text) and all(part.isidentifier() for part in text.split("."))


def _is_async_function(obj: object) -> bool:
    return inspect.iscoroutinefunction(obj)


def _is_worker_class(obj: object) -> bool:
    return inspect.isclass(obj) and _is_async_function(getattr(obj, "run", None))


#: Resolved targets; starting thousands of children of one target imports it once.
_LOADED: dict[str, object] = {}

#: Modules of ours that moved: a spec stored in etcd under the old name still starts.
MOVED_MODULES = {"hub.demo": "hub.operate.demo"}


def _load_target(target: str, child_id: str) -> object:
    """Import ``target`` and return the class or async function it names."""
    module_name, sep, attr_path = target.partition(":")
    if not sep or not _is_dotted_name(module_name) or not _is_dotted_name(attr_path):
        raise WorkerStartFailed(child_id, f"target {target!r} must look like 'package.module:attr'")
    module_name = MOVED_MODULES.get(module_name, module_name)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise WorkerStartFailed(child_id, f"unknown module {module_name!r}: {exc}") from exc
        # The module exists but one of its own imports is missing.
        raise WorkerStartFailed(
            child_id, f"module {module_name!r} failed to import: {describe_exception(exc)}"
        ) from exc
    except Exception as exc:
        raise WorkerStartFailed(
            child_id, f"module {module_name!r} failed to import: {describe_exception(exc)}"
        ) from exc

    obj: object = module
    parts = attr_path.split(".")
    for index, part in enumerate(parts):
        walked = ".".join(parts[: index + 1])
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise WorkerStartFailed(
                child_id, f"module {module_name!r} has no attribute {walked!r}"
            ) from None
        except Exception as exc:  # a module-level __getattr__ or a property raised
            raise WorkerStartFailed(
                child_id,
                f"looking up {walked!r} in module {module_name!r} failed: "
                f"{describe_exception(exc)}",
            ) from exc

    if not _is_worker_class(obj) and not _is_async_function(obj):
        raise WorkerStartFailed(
            child_id,
            f"target {target!r} is not an async function or a class with async run(ctx)",
        )
    return obj


def resolve_target(target: str, allow: AllowList | None = None, *, child_id: str = "") -> WorkerFn:
    """Turn a start target into the callable that runs one instance of the worker.

    For a class, a new instance is built (no arguments) and its bound ``run`` is returned;
    for an async function, the function itself. Call it once per start.

    Args:
        target: ``"package.module:attr"``.
        allow: the node's allow-list; ``None`` allows every target.
        child_id: only used in error messages.

    Returns:
        An async callable taking the :class:`Context`.

    Raises:
        TargetNotAllowed: ``allow`` does not match ``target`` (checked before importing).
        WorkerStartFailed: the target is malformed, its module is unknown or fails to import,
            the attribute is missing, it is neither an async function nor a class with an
            async ``run``, or the class constructor raised. ``.reason`` says which.
    """
    if allow is not None:
        allow.check(target)
    obj = _LOADED.get(target)
    if obj is None:
        obj = _load_target(target, child_id)
        if len(_LOADED) >= 1024:
            _LOADED.clear()
        _LOADED[target] = obj  # only successes: a missing module may be installed later
    if inspect.isclass(obj):
        worker_class = cast("type[Worker]", obj)
        try:
            instance = worker_class()
        except Exception as exc:
            raise WorkerStartFailed(
                child_id, f"constructing {target!r} failed: {describe_exception(exc)}"
            ) from exc
        return instance.run
    return cast(WorkerFn, obj)


def validate_target(target: str, allow: AllowList | None = None) -> str | None:
    """Check a target on the caller side, before anything is written.

    Imports the module and looks up the attribute, but builds no instance.

    Returns:
        ``None`` if the target is usable here, else a one-line reason.
    """
    try:
        if allow is not None:
            allow.check(target)
        _load_target(target, "")
    except TargetNotAllowed as exc:
        return str(exc)
    except WorkerStartFailed as exc:
        return exc.reason
    return None
