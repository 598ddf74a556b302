"""The built-in subprocess worker, target ``"hub.command:Command"``.

Runs one external command per instance, with fork+exec (``asyncio.create_subprocess_exec``),
never a bare fork of this process, which holds gRPC channels and an event loop. Example spec::

    ChildSpec(
        id="indexer-7",
        start="hub.command:Command",
        args={"argv": ["indexer", "--shard", "7"], "env": {"LOG": "info"}, "stop_timeout": 10},
    )

``ctx.args`` keys:

* ``argv`` (list of str, required, non-empty): the program and its arguments; ``argv[0]`` is
  looked up on ``PATH``.
* ``env`` (dict of str to str, default ``{}``): merged over this process's environment.
* ``cwd`` (str, default: inherited): working directory.
* ``stop_timeout`` (number > 0, default 5): seconds between ``stop_signal`` and ``SIGKILL``.
* ``stop_signal`` (signal name, default ``"SIGTERM"``): sent to the process group on stop.

The command also gets ``PROCESSHUB_HUB_ID``, ``PROCESSHUB_CHILD_ID``, ``PROCESSHUB_NODE_ID``
and ``PROCESSHUB_FENCING_TOKEN`` (these win over ``env``). stdin is ``/dev/null``; stdout and
stderr are inherited.

Guarantees: the command leads its own session and process group. Exit code 0 is a normal exit;
a non-zero code raises :class:`~hub.errors.WorkerCrashed` with ``exit_code`` set (negative for
"killed by signal N"). On cancellation the group gets ``stop_signal``, then ``SIGKILL`` after
``stop_timeout``; the command is reaped and ``CancelledError`` re-raised. Whenever the command
ends, whatever is left of its process group is killed (like systemd's ``KillMode=control-group``),
so nothing it spawned outlives the worker. Invalid args raise
:class:`~hub.errors.WorkerStartFailed` before anything is spawned. This module creates no tasks.

Warning: a descendant that moves itself to another process group or session (``setsid``,
daemonizing) escapes the group kill. Give the supervisor a ``stop_timeout`` larger than the
command's, or a stop may return before the ``SIGKILL`` is sent (the kill still happens).
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hub.errors import WorkerCrashed, WorkerStartFailed
from hub.logs import fields, get_logger
from hub.worker import Context, describe_exception

__all__ = ["DEFAULT_STOP_SIGNAL", "DEFAULT_STOP_TIMEOUT", "Command"]

logger = get_logger("hub.command")

#: Seconds between the stop signal and SIGKILL, unless ``args["stop_timeout"]`` says otherwise.
DEFAULT_STOP_TIMEOUT = 5.0
#: Signal sent to the process group first, unless ``args["stop_signal"]`` says otherwise.
DEFAULT_STOP_SIGNAL = "SIGTERM"

_KNOWN_KEYS = frozenset({"argv", "env", "cwd", "stop_timeout", "stop_signal"})


@dataclass(frozen=True, slots=True)
class _Options:
    """Validated ``ctx.args``."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: str | None
    stop_timeout: float
    stop_signal: signal.Signals


def _parse_options(child_id: str, args: Any) -> _Options:
    """Validate ``ctx.args``; raise :class:`WorkerStartFailed` with the first problem."""

    def fail(reason: str) -> WorkerStartFailed:
        return WorkerStartFailed(child_id, f"hub.command:Command: {reason}")

    if not isinstance(args, Mapping):
        raise fail(f"args must be an object with 'argv', got {type(args).__name__}")
    unknown = sorted(str(key) for key in args if key not in _KNOWN_KEYS)
    if unknown:
        raise fail(f"unknown args key(s) {unknown}; known: {sorted(_KNOWN_KEYS)}")

    argv = args.get("argv")
    if (
        not isinstance(argv, list)
        or not argv
        or not all(isinstance(item, str) for item in argv)
        or not argv[0]
    ):
        raise fail("'argv' must be a non-empty list of strings with a non-empty program")

    env = args.get("env", {})
    if not isinstance(env, Mapping) or not all(
        isinstance(key, str) and key and "=" not in key and isinstance(value, str)
        for key, value in env.items()
    ):
        raise fail("'env' must map non-empty names without '=' to strings")

    cwd = args.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or not cwd):
        raise fail("'cwd' must be a non-empty string")

    stop_timeout = args.get("stop_timeout", DEFAULT_STOP_TIMEOUT)
    if (
        isinstance(stop_timeout, bool)
        or not isinstance(stop_timeout, int | float)
        or not math.isfinite(stop_timeout)
        or stop_timeout <= 0
    ):
        raise fail(f"'stop_timeout' must be a number > 0, got {stop_timeout!r}")

    signal_name = args.get("stop_signal", DEFAULT_STOP_SIGNAL)
    if not isinstance(signal_name, str):
        raise fail(f"'stop_signal' must be a signal name such as 'SIGTERM', got {signal_name!r}")
    full_name = signal_name if signal_name.startswith("SIG") else f"SIG{signal_name}"
    try:
        stop_signal = signal.Signals[full_name]
    except KeyError:
        raise fail(f"'stop_signal' {signal_name!r} is not a signal on this system") from None

    return _Options(
        argv=tuple(argv),
        env=dict(env),
        cwd=cwd,
        stop_timeout=float(stop_timeout),
        stop_signal=stop_signal,
    )


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to the process group; a group that is already gone is fine."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _describe_returncode(code: int) -> str:
    if code >= 0:
        return f"exited with code {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"killed by {name}"


class Command:
    """Worker that runs an external command; see the module docstring for ``ctx.args``."""

    async def run(self, ctx: Context) -> None:
        """Run the command until it exits, or stop its process group when cancelled.

        Raises:
            WorkerStartFailed: invalid ``ctx.args``, or the program could not be executed.
            WorkerCrashed: the command exited with a non-zero code or was killed by a signal
                (``exit_code`` is the code, or minus the signal number).
            asyncio.CancelledError: on stop, after the command was terminated and reaped.
        """
        options = _parse_options(ctx.child_id, ctx.args)
        env = dict(os.environ)
        env.update(options.env)
        env.update(
            {
                "PROCESSHUB_HUB_ID": ctx.hub_id,
                "PROCESSHUB_CHILD_ID": ctx.child_id,
                "PROCESSHUB_NODE_ID": ctx.node_id,
                "PROCESSHUB_FENCING_TOKEN": str(ctx.fencing_token),
            }
        )
        try:
            process = await asyncio.create_subprocess_exec(
                *options.argv,
                cwd=options.cwd,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        except (OSError, ValueError) as exc:
            raise WorkerStartFailed(
                ctx.child_id, f"cannot execute {options.argv[0]!r}: {describe_exception(exc)}"
            ) from exc

        pgid = process.pid  # start_new_session: the command leads its own process group
        try:
            try:
                code = await process.wait()
            except asyncio.CancelledError:
                await self._terminate(ctx, process, pgid, options)
                raise
        finally:
            # Leftovers of the group (background children), also after a second cancel.
            _signal_group(pgid, signal.SIGKILL)

        if code != 0:
            raise WorkerCrashed(ctx.child_id, _describe_returncode(code), exit_code=code)

    async def _terminate(
        self, ctx: Context, process: asyncio.subprocess.Process, pgid: int, options: _Options
    ) -> None:
        """Send the stop signal to the group, SIGKILL after ``stop_timeout``, then reap."""
        _signal_group(pgid, options.stop_signal)
        try:
            async with asyncio.timeout(options.stop_timeout):
                await process.wait()
                return
        except TimeoutError:
            pass
        logger.warning(
            "command of child %r (pid %d) outlived %s by %.1fs; sending SIGKILL",
            ctx.child_id,
            process.pid,
            options.stop_signal.name,
            options.stop_timeout,
            extra=fields(node_id=ctx.node_id, child_id=ctx.child_id, token=ctx.fencing_token),
        )
        _signal_group(pgid, signal.SIGKILL)
        await process.wait()
