"""Benchmark node processes, driven over their JSON control channel (see bench/node.py).

:class:`NodeProc` starts ``python bench/node.py`` in its own session (a terminal's Ctrl-C
reaches only the driver), sends requests and matches replies by id. Every process is
stopped by its PID: :meth:`NodeProc.terminate` (SIGTERM, graceful drain),
:meth:`NodeProc.kill` (SIGKILL). :func:`kill_all_started` is the last-resort cleanup the
driver runs on any exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

#: Every node process started in this interpreter, for the last-resort cleanup.
_STARTED: list[asyncio.subprocess.Process] = []


def kill_all_started() -> None:
    """SIGKILL every node process we started that has not been reaped yet (by PID)."""
    for proc in _STARTED:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)


class NodeError(RuntimeError):
    """A node replied with an error, exited, or did not answer in time."""


class NodeProc:
    """One benchmark node process."""

    def __init__(
        self,
        node_id: str,
        endpoint: str,
        *,
        ttl: int,
        log_dir: Path,
        hub: str = "bench",
        prefix: str = "/processhub",
        log_level: str = "warning",
        migration: str | None = None,
        profile_from_start: Path | None = None,
    ) -> None:
        self.node_id = node_id
        self.cmd = [
            sys.executable,
            str(REPO / "bench" / "node.py"),
            "--endpoint",
            endpoint,
            "--node-id",
            node_id,
            "--hub",
            hub,
            "--prefix",
            prefix,
            "--ttl",
            str(ttl),
            "--log-level",
            log_level,
        ]
        if migration is not None:  # "hot": the node runs Hub(migration=HotSwap())
            self.cmd += ["--migration", migration]
        if profile_from_start is not None:  # cProfile from process start (profile_stop ends it)
            self.cmd += ["--profile-from-start", str(profile_from_start)]
        self.log_path = log_dir / f"{node_id}-{time.monotonic_ns()}.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.pid = 0
        self.ready: dict[str, Any] = {}
        self._next_id = 0
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._armed: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 60.0) -> dict[str, Any]:
        """Spawn the process and wait for its ``ready`` event."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
        with self.log_path.open("wb") as log:  # a local file: opening it does not block
            self.proc = await asyncio.create_subprocess_exec(
                *self.cmd,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env=env,
                start_new_session=True,
                limit=64 * 1024 * 1024,
            )
        _STARTED.append(self.proc)
        self.pid = self.proc.pid
        self._reader = asyncio.create_task(self._read(), name=f"bench:read:{self.node_id}")
        self.ready = await self.wait_event("ready", timeout)
        return self.ready

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            while line := await self.proc.stdout.readline():
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                rid = msg.get("id")
                if rid is None:
                    self._events.put_nowait(msg)
                    continue
                table = self._armed if msg.get("armed") else self._replies
                fut = table.pop(rid, None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
        finally:
            gone = NodeError(f"{self.node_id} exited (log: {self.log_path})")
            for fut in [*self._replies.values(), *self._armed.values()]:
                if not fut.done():
                    fut.set_exception(gone)
                    fut.exception()  # an awaiter still gets it; nobody else logs it
            self._events.put_nowait({"event": "eof"})

    def _send(
        self, cmd: str, args: dict[str, Any], armed: bool
    ) -> tuple[asyncio.Future[dict[str, Any]], asyncio.Future[dict[str, Any]]]:
        if self.proc is None or self.proc.stdin is None or self.proc.returncode is not None:
            raise NodeError(f"{self.node_id} is not running")
        self._next_id += 1
        rid = self._next_id
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._replies[rid] = reply
        arm: asyncio.Future[dict[str, Any]] = loop.create_future()
        if armed:
            self._armed[rid] = arm
        line = json.dumps({"id": rid, "cmd": cmd, **args}) + "\n"
        self.proc.stdin.write(line.encode())
        return reply, arm

    async def request(self, cmd: str, timeout: float = 60.0, **args: Any) -> dict[str, Any]:
        """Send a command and return its reply; raise NodeError on an error reply."""
        reply, _ = self._send(cmd, args, armed=False)
        try:
            async with asyncio.timeout(timeout):
                msg = await reply
        except TimeoutError:
            raise NodeError(f"{self.node_id}: no reply to {cmd!r} within {timeout}s") from None
        if "error" in msg:
            raise NodeError(f"{self.node_id}: {cmd}: {msg['error']}")
        return msg

    async def arm(
        self, cmd: str, arm_timeout: float = 30.0, **args: Any
    ) -> asyncio.Future[dict[str, Any]]:
        """Send a waiting command; return once it is armed, with the future of its result."""
        reply, arm = self._send(cmd, args, armed=True)
        try:
            async with asyncio.timeout(arm_timeout):
                await asyncio.wait({arm, reply}, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            raise NodeError(f"{self.node_id}: {cmd!r} not armed within {arm_timeout}s") from None
        if reply.done() and not arm.done():
            msg = reply.result()
            raise NodeError(f"{self.node_id}: {cmd}: {msg.get('error', msg)}")
        return reply

    async def wait_event(self, name: str, timeout: float = 60.0) -> dict[str, Any]:
        """The next event line called ``name`` (raises if the process ends first)."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    msg = await self._events.get()
                    if msg.get("event") == name:
                        return msg
                    if msg.get("event") == "eof":
                        raise NodeError(
                            f"{self.node_id} exited before {name!r} (log: {self.log_path})"
                        )
        except TimeoutError:
            raise NodeError(f"{self.node_id}: no {name!r} within {timeout}s") from None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def terminate(self) -> float:
        """SIGTERM (graceful: the node drains, then leaves); returns the send time."""
        t = time.monotonic()
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
        return t

    def kill(self) -> float:
        """SIGKILL; returns the send time."""
        t = time.monotonic()
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        return t

    async def wait_exit(self, timeout: float = 60.0) -> int | None:
        """Wait for the process to end (SIGKILL after ``timeout``); returns its code."""
        if self.proc is None:
            return None
        try:
            async with asyncio.timeout(timeout):
                code = await self.proc.wait()
        except TimeoutError:
            self.kill()
            code = await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._reader, 5)
        return code

    async def close(self) -> None:
        """Stop the process now (SIGKILL by PID) and reap it."""
        if self.proc is None:
            return
        if self.proc.stdin is not None:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()
        self.kill()
        await self.proc.wait()
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
