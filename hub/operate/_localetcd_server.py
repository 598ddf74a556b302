"""A single-member etcd process on loopback, owned by one :class:`LocalEtcd` object.

Part of :mod:`hub.operate.localetcd` (import from there), which documents the use. What
this module guarantees about the process:

* It is managed by PID only: :meth:`LocalEtcd.stop` sends ``SIGTERM`` to that PID (and
  ``SIGCONT``, so a paused etcd sees it), then ``SIGKILL`` after ``timeout``, and reaps it.
  Nothing is ever killed by name.
* It does not outlive its owner: a finalizer SIGKILLs an abandoned process, and
  :meth:`LocalEtcd.close` removes the scratch directory (the log, and the data directory
  unless one was given).
* :meth:`LocalEtcd.start` returns only once ``/health`` answers healthy; otherwise it raises
  :class:`LocalEtcdError` with the tail of etcd's log. Auto-picked ports are chosen on the
  first start (retried on a clash, ``_free_ports``) and kept for every later start.

The object is not thread-safe: one owner starts, stops and signals it. It creates no
threads or tasks; the health probe is a blocking HTTP request.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from hub.errors import ConfigError
from hub.operate._etcd_binary import find_etcd_binary, find_etcdctl_binary

__all__ = ["QUOTA_BACKEND_BYTES", "LocalEtcd", "LocalEtcdError", "LocalTls"]

QUOTA_BACKEND_BYTES = 8 * 1024**3
_HOST = "127.0.0.1"
_LOG_TAIL_LINES = 40
_PORT_RETRIES = 3


class LocalEtcdError(RuntimeError):
    """Raised when the local etcd process could not be started."""


@dataclass(frozen=True, slots=True)
class LocalTls:
    """Serve the client port over https (the peer port stays plain: one member only).

    ``cert_file``/``key_file`` are the server's key pair (its SAN must name 127.0.0.1);
    ``ca_file`` is trusted for client certificates. With ``client_cert_auth`` every client
    must present a certificate signed by that CA; the health probe then presents the
    server's own pair, so that certificate must also allow client authentication.
    """

    cert_file: str | os.PathLike[str]
    key_file: str | os.PathLike[str]
    ca_file: str | os.PathLike[str]
    client_cert_auth: bool = True

    def args(self) -> list[str]:
        """etcd flags for this TLS setup."""
        flags = [
            "--cert-file",
            os.fspath(self.cert_file),
            "--key-file",
            os.fspath(self.key_file),
            "--trusted-ca-file",
            os.fspath(self.ca_file),
        ]
        return [*flags, "--client-cert-auth"] if self.client_cert_auth else flags

    def probe_context(self) -> ssl.SSLContext:
        """An SSL context for the health probe."""
        context = ssl.create_default_context(cafile=os.fspath(self.ca_file))
        if self.client_cert_auth:
            context.load_cert_chain(os.fspath(self.cert_file), os.fspath(self.key_file))
        return context


def _free_ports(count: int) -> list[int]:
    """Return ``count`` distinct loopback ports that were free a moment ago."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((_HOST, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _kill_quietly(proc: subprocess.Popen[bytes]) -> None:
    """Finalizer: make sure an abandoned etcd does not outlive the interpreter."""
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            os.kill(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


class LocalEtcd:
    """A single-member etcd server on loopback, owned by this object.

    Args:
        data_dir: where etcd keeps its data; ``None`` means a temporary directory
            removed by :meth:`close`. A given directory is created if missing and is
            never removed.
        client_port: client port on 127.0.0.1; 0 picks a free port.
        peer_port: peer port on 127.0.0.1; 0 picks a free port.
        binary: path (or name on PATH) of the etcd binary; see :func:`find_etcd_binary`.
        name: the member name.
        extra_args: extra command-line flags appended verbatim.
        tls: serve clients over https with these files; None for plain http.

    Raises:
        ConfigError: no etcd binary could be found.
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        client_port: int = 0,
        peer_port: int = 0,
        binary: str | None = None,
        name: str = "processhub-dev",
        extra_args: Sequence[str] = (),
        tls: LocalTls | None = None,
    ) -> None:
        for label, port in (("client_port", client_port), ("peer_port", peer_port)):
            if not 0 <= port <= 65535:
                raise ConfigError(f"{label} must be in 0..65535, got {port}")
        if client_port and client_port == peer_port:
            raise ConfigError("client_port and peer_port must differ")
        self._binary = find_etcd_binary(binary)
        self._name = name
        self._extra_args = tuple(extra_args)
        self._tls = tls
        self._auto_client_port = client_port == 0
        self._auto_peer_port = peer_port == 0
        self._ports_settled = False  # True after the first successful start
        self._client_port = client_port
        self._peer_port = peer_port
        # Private scratch directory: the log file and, if none was given, the data dir.
        self._scratch = Path(tempfile.mkdtemp(prefix="processhub-etcd-"))
        self._scratch_cleanup = weakref.finalize(
            self, shutil.rmtree, str(self._scratch), ignore_errors=True
        )
        self._owns_data_dir = data_dir is None
        self._data_dir = (
            self._scratch / "data" if data_dir is None else Path(data_dir).expanduser().absolute()
        )
        self._log_path = self._scratch / "etcd.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._proc_finalizer: weakref.finalize[[subprocess.Popen[bytes]], LocalEtcd] | None = None
        self._closed = False

    # ----------------------------------------------------------------- properties

    @property
    def binary(self) -> Path:
        """The etcd binary this instance runs."""
        return self._binary

    @property
    def etcdctl(self) -> Path:
        """The matching ``etcdctl`` binary (raises ConfigError if there is none)."""
        return find_etcdctl_binary(self._binary)

    @property
    def client_port(self) -> int:
        """The client port (0 until the first :meth:`start` when auto-picked)."""
        return self._client_port

    @property
    def peer_port(self) -> int:
        """The peer port (0 until the first :meth:`start` when auto-picked)."""
        return self._peer_port

    @property
    def endpoint(self) -> str:
        """``"127.0.0.1:PORT"`` for clients."""
        if self._client_port == 0:
            raise RuntimeError("LocalEtcd has no port yet: call start() first")
        return f"{_HOST}:{self._client_port}"

    @property
    def url(self) -> str:
        """``"http://127.0.0.1:PORT"`` (``https://`` with TLS) for clients."""
        return f"{self.scheme}://{self.endpoint}"

    @property
    def scheme(self) -> str:
        """``"https"`` when started with :class:`LocalTls`, else ``"http"``."""
        return "https" if self._tls is not None else "http"

    @property
    def pid(self) -> int | None:
        """PID of the running etcd process, or ``None`` when it is not running."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    @property
    def data_dir(self) -> Path:
        """The data directory."""
        return self._data_dir

    @property
    def log_path(self) -> Path:
        """etcd's log file (removed by :meth:`close`)."""
        return self._log_path

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 15.0) -> None:
        """Start etcd and wait until ``/health`` reports healthy.

        A no-op if it is already running. Auto-picked ports are chosen on the first
        start (retried on a port clash) and kept for every later start.

        Raises:
            LocalEtcdError: etcd exited or did not become healthy within ``timeout``;
                the message carries the tail of etcd's log.
        """
        if self._closed:
            raise RuntimeError("LocalEtcd is closed")
        if self.is_running():
            return
        auto = not self._ports_settled and (self._auto_client_port or self._auto_peer_port)
        attempts = _PORT_RETRIES if auto else 1
        for attempt in range(1, attempts + 1):
            if auto:
                self._pick_ports()
            try:
                self._launch_and_wait(timeout)
            except LocalEtcdError:
                if attempt == attempts or "address already in use" not in self._log_tail(5):
                    raise
            else:
                self._ports_settled = True
                return

    def _pick_ports(self) -> None:
        taken = {self._client_port, self._peer_port}
        client, peer = [p for p in _free_ports(4) if p not in taken][:2]
        if self._auto_client_port:
            self._client_port = client
        if self._auto_peer_port:
            self._peer_port = peer

    def _command(self) -> list[str]:
        client_url = f"{self.scheme}://{_HOST}:{self._client_port}"
        peer_url = f"http://{_HOST}:{self._peer_port}"
        return [
            str(self._binary),
            "--name",
            self._name,
            "--data-dir",
            str(self._data_dir),
            "--listen-client-urls",
            client_url,
            "--advertise-client-urls",
            client_url,
            "--listen-peer-urls",
            peer_url,
            "--initial-advertise-peer-urls",
            peer_url,
            "--initial-cluster",
            f"{self._name}={peer_url}",
            "--initial-cluster-state",
            "new",
            "--log-level",
            "warn",
            "--auto-compaction-retention",
            "0",
            "--quota-backend-bytes",
            str(QUOTA_BACKEND_BYTES),
            *(self._tls.args() if self._tls is not None else ()),
            *self._extra_args,
        ]

    def _launch_and_wait(self, timeout: float) -> None:
        self._data_dir.parent.mkdir(parents=True, exist_ok=True)
        if not self._owns_data_dir:
            self._data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        log: IO[bytes]
        with open(self._log_path, "ab") as log:
            log.write(f"--- starting {' '.join(self._command())}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C is ours to forward
                close_fds=True,
            )
        self._proc = proc
        self._proc_finalizer = weakref.finalize(self, _kill_quietly, proc)
        deadline = time.monotonic() + timeout
        while True:
            code = proc.poll()
            if code is not None:
                self._forget_process()
                raise LocalEtcdError(
                    f"etcd exited with code {code} during start-up; log tail:\n{self._log_tail()}"
                )
            remaining = deadline - time.monotonic()
            if self.is_healthy(timeout=max(0.05, min(1.0, remaining))):
                return
            if time.monotonic() >= deadline:
                self.kill()
                raise LocalEtcdError(
                    f"etcd at {self.endpoint} not healthy after {timeout:.1f}s; "
                    f"log tail:\n{self._log_tail()}"
                )
            time.sleep(0.05)

    def is_healthy(self, timeout: float = 1.0) -> bool:
        """True if ``GET /health`` answers ``{"health": "true", ...}`` within ``timeout``."""
        if self._client_port == 0:
            return False
        try:
            context = self._tls.probe_context() if self._tls is not None else None
            url = f"{self.url}/health"
            with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
                body = json.loads(response.read().decode("utf-8", "replace"))
        except (OSError, ValueError):  # URLError, timeouts, refused, bad JSON
            return False
        return isinstance(body, dict) and body.get("health") == "true"

    def is_running(self) -> bool:
        """True while the etcd process exists (even if paused or not yet healthy)."""
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop etcd gracefully: SIGTERM, wait ``timeout`` s, then SIGKILL. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self._signal(signal.SIGTERM)
            self._signal(signal.SIGCONT)  # a paused process would never see SIGTERM
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                proc.wait()
        self._forget_process()

    def kill(self) -> None:
        """Kill etcd at once with SIGKILL (a crash; the data dir stays). Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self._signal(signal.SIGKILL)
            proc.wait()
        self._forget_process()

    def pause(self) -> None:
        """Freeze etcd with SIGSTOP: connections stay open but nothing answers.

        Returns once the kernel reports the process stopped (a signal is delivered
        asynchronously; a request already being served could otherwise still be answered).
        """
        self._require_running()
        self._signal(signal.SIGSTOP)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and self._proc_state() not in ("T", "t", None):
            time.sleep(0.005)

    def _proc_state(self) -> str | None:
        """The process state letter from /proc (``T`` = stopped), None if unknown."""
        if self.pid is None:
            return None
        try:
            with open(f"/proc/{self.pid}/stat") as fh:
                return fh.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return None

    def resume(self) -> None:
        """Unfreeze etcd after :meth:`pause` (SIGCONT)."""
        self._require_running()
        self._signal(signal.SIGCONT)

    def restart(self, timeout: float = 15.0) -> None:
        """Stop, then start again on the same ports and data directory."""
        self.stop()
        self.start(timeout=timeout)

    def close(self) -> None:
        """Stop etcd and remove the temporary directories. Idempotent."""
        if self._closed:
            return
        try:
            self.stop()
        finally:
            self._closed = True
            self._scratch_cleanup()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.is_running() else "stopped"
        port = self._client_port or "auto"
        return f"<LocalEtcd {_HOST}:{port} {state} data_dir={str(self._data_dir)!r}>"

    # ------------------------------------------------------------------- helpers

    def _signal(self, sig: signal.Signals) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)

    def _require_running(self) -> None:
        if not self.is_running():
            raise RuntimeError("etcd is not running")

    def _forget_process(self) -> None:
        if self._proc_finalizer is not None:
            self._proc_finalizer.detach()
        self._proc_finalizer = None
        self._proc = None

    def _log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        try:
            text = self._log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of etcd's log."""
        return self._log_tail(lines)
