"""Node processes for multi-process tests: ``processhub node`` subprocesses we can kill.

Each :class:`NodeProcess` runs ``python -m hub.operate.cli node`` with the recorder app (or the
apps given), waits for its ``ready`` line, and can be stopped gracefully (SIGTERM: drain)
or killed (SIGKILL). :meth:`NodeProcess.container` instead runs a node configured only by
its environment, as a container is (see ``support.podenv``). A :class:`Cluster` tracks
them, remembers when it killed which pid (for the checker), and stops everything at the
end. :func:`http_json` talks to the nodes' HTTP endpoints.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


class NodeProcess:
    """One node subprocess."""

    def __init__(
        self,
        *,
        hub_id: str,
        endpoint: str,
        node_id: str,
        prefix: str,
        lease_ttl: int,
        record_dir: Path,
        extra_args: list[str] | None = None,
        apps: Sequence[str] = ("support.recorder",),
        env: Mapping[str, str] | None = None,
    ) -> None:
        """``env`` is added to the test's own environment; ``apps`` are the ``--app``s."""
        cmd = [
            sys.executable,
            "-m",
            "hub.operate.cli",
            "--log-level",
            os.environ.get("PROCESSHUB_TEST_NODE_LOG", "warning"),
            "node",
            "--hub",
            hub_id,
            "--node-id",
            node_id,
            "--endpoints",
            endpoint,
            "--prefix",
            prefix,
            "--lease-ttl",
            str(lease_ttl),
            *(arg for app in apps for arg in ("--app", app)),
            "--drain-timeout",
            "20",
            *(extra_args or []),
        ]
        self._prepare(node_id, record_dir, cmd, {**os.environ, **(env or {})})

    def _prepare(self, node_id: str, record_dir: Path, cmd: list[str], env: dict[str, str]) -> None:
        self.node_id = node_id
        self.record_dir = record_dir
        self.cmd = cmd
        self.env = env
        self.proc: subprocess.Popen[str] | None = None
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        #: every JSON line the node printed, in order (``events`` is consumed by waits)
        self.history: list[dict[str, Any]] = []

    @classmethod
    def container(
        cls, *, node_id: str, argv: Sequence[str], env: Mapping[str, str], record_dir: Path
    ) -> NodeProcess:
        """A node configured like a container: ``argv`` with ``env`` as its environment.

        Only what an image would add is added: ``PATH``, and ``PYTHONPATH`` standing in for
        the installed package (the repository, and ``tests/`` for the recorder); and
        ``PROCESSHUB_RECORD_DIR`` for the recorder. Nothing else leaks from the test's
        environment.
        """
        node = cls.__new__(cls)
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        node._prepare(node_id, record_dir, list(argv), {**base, **env})
        return node

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> NodeProcess:
        env = dict(self.env)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "tests"), str(REPO)])
        env["PROCESSHUB_RECORD_DIR"] = str(self.record_dir)
        log = open(self.record_dir / f"{self.node_id}-{time.monotonic_ns()}.stderr", "w")
        self.proc = subprocess.Popen(
            self.cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env
        )
        log.close()
        threading.Thread(target=self._read, daemon=True).start()
        self.wait_event("ready", timeout)
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                self.history.append(event)
                self.events.put(event)

    def wait_event(self, event: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.node_id}: no {event!r} event within {timeout}s")
            try:
                message = self.events.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.node_id} exited with {self.proc.returncode} before {event!r}"
                    ) from None
                continue
            if message.get("event") == event:
                return message

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sigterm(self) -> float:
        """Send SIGTERM (as the kubelet does) without waiting; returns the monotonic time."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return time.monotonic()

    def terminate(self, timeout: float = 30.0) -> int:
        """Graceful stop (SIGTERM -> drain -> exit); returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> float:
        """SIGKILL; returns the monotonic time by which the process was certainly dead."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        return time.monotonic()


class Cluster:
    """A set of node processes of one hub, plus what the checker needs to know."""

    def __init__(
        self,
        *,
        hub_id: str,
        endpoint: str,
        prefix: str,
        lease_ttl: int,
        record_dir: Path,
        extra_args: list[str] | None = None,
        apps: Sequence[str] = ("support.recorder",),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.extra_args = extra_args or []
        self.apps = tuple(apps)
        self.env = dict(env or {})
        self.hub_id = hub_id
        self.endpoint = endpoint
        self.prefix = prefix
        self.lease_ttl = lease_ttl
        self.record_dir = record_dir
        self.nodes: dict[str, NodeProcess] = {}
        self.killed_at: dict[int, float] = {}
        self._counter = 0

    def add(
        self,
        node_id: str | None = None,
        *,
        endpoint: str | None = None,
        apps: Sequence[str] | None = None,
    ) -> NodeProcess:
        """Start one more node; ``apps`` replaces the cluster's ``--app`` list for it."""
        self._counter += 1
        node_id = node_id or f"node-{self._counter}"
        node = NodeProcess(
            hub_id=self.hub_id,
            endpoint=endpoint or self.endpoint,
            node_id=node_id,
            prefix=self.prefix,
            lease_ttl=self.lease_ttl,
            record_dir=self.record_dir,
            extra_args=self.extra_args,
            apps=self.apps if apps is None else apps,
            env=self.env,
        )
        self.nodes[node_id] = node
        return node.start()

    def live(self) -> list[NodeProcess]:
        return [n for n in self.nodes.values() if n.alive()]

    def live_pids(self) -> set[int]:
        return {n.pid for n in self.live()}

    def kill(self, node_id: str) -> None:
        node = self.nodes[node_id]
        self.killed_at[node.pid] = node.kill()

    def terminate(self, node_id: str) -> int:
        return self.nodes[node_id].terminate()

    def close(self) -> None:
        for node in self.nodes.values():
            if node.alive():
                node.proc.kill()  # type: ignore[union-attr]
                node.proc.wait()  # type: ignore[union-attr]


def http_json(method: str, address: str, path: str, timeout: float = 10.0) -> tuple[int, Any]:
    """One HTTP request to ``address`` (``host:port``): ``(status, JSON body or text)``.

    Raises:
        OSError: connection refused or reset, or a timeout (nothing was answered).
    """
    host, _, port = address.rpartition(":")
    connection = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        raw = response.read()
    finally:
        connection.close()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw.decode(errors="replace")
