"""The operator verbs of the processhub command (ls, nodes, inspect, start, stop, move,
drain), run for real as subprocesses against a real etcd and real nodes."""

from __future__ import annotations

import json
import os
import pty
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from support.wait import wait_until_sync

pytestmark = pytest.mark.slow  # CLI and node processes

CLI = [sys.executable, "-m", "hub.operate.cli"]
HUB = "ops"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PROCESSHUB_")}


class Ops:
    """Runs ``processhub VERB --hub ops --endpoints E --prefix P ...``."""

    def __init__(self, endpoint: str, prefix: str) -> None:
        self.endpoint = endpoint
        self.prefix = prefix

    def run(self, verb: str, *argv: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [
                *CLI,
                verb,
                *argv,
                "--hub",
                HUB,
                "--endpoints",
                self.endpoint,
                "--prefix",
                self.prefix,
            ],
            capture_output=True,
            text=True,
            timeout=40,
            env=_env(),
        )
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    def ok(self, verb: str, *argv: str) -> str:
        proc = self.run(verb, *argv)
        assert proc.returncode == 0, f"{verb} {argv}: rc={proc.returncode}\n{proc.stderr}"
        return proc.stdout

    def json(self, verb: str, *argv: str) -> Any:
        return json.loads(self.ok(verb, *argv, "--json"))

    def node(self, node_id: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [
                *CLI,
                "node",
                "--hub",
                HUB,
                "--node-id",
                node_id,
                "--app",
                "hub.operate.demo",
                "--endpoints",
                self.endpoint,
                "--prefix",
                self.prefix,
            ],
            stdout=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert json.loads(line)["event"] == "ready", line
        return proc


@pytest.fixture
def ops(etcd_endpoint: str, hub_prefix: str) -> Iterator[Ops]:
    yield Ops(etcd_endpoint, hub_prefix)


@pytest.fixture
def nodes() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _children(ops: Ops, *argv: str) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in ops.json("ls", *argv)["children"]}


def test_operator_verbs_end_to_end(ops: Ops, nodes: list[subprocess.Popen[str]]) -> None:
    nodes.append(ops.node("node-a"))

    out = ops.ok(
        "start", "c1", "hub.operate.demo:Counter", "--args", '{"n": 1}', "--tag", "t1", "--wait"
    )
    assert "started c1 on node-a" in out

    # ls: plain table (in a pipe: aligned columns, no colour codes) and JSON
    table = ops.ok("ls")
    header, *rows = table.splitlines()
    assert header.split() == ["ID", "NODE", "STATE", "TOKEN", "RESTARTS", "AGE(S)", "TAG"]
    assert rows[0].split()[:3] == ["c1", "node-a", "running"]
    assert "\x1b[" not in table and all(line == line.rstrip() for line in table.splitlines())
    raw = ops.ok("ls", "--json")
    assert raw == json.dumps(json.loads(raw), indent=2, sort_keys=True) + "\n"  # stable format
    child = _children(ops)["c1"]
    assert child["node"] == "node-a" and child["state"] == "running" and child["tag"] == "t1"
    assert child["token"] > 0 and child["restarts"] == 0
    assert _children(ops, "--tag", "t1").keys() == {"c1"}
    assert _children(ops, "--tag", "other") == {}
    assert _children(ops, "--node", "node-z") == {}

    # nodes
    members = {n["node_id"]: n for n in ops.json("nodes")["nodes"]}
    assert members["node-a"]["children"] == 1
    assert members["node-a"]["state"] == "active"
    int(members["node-a"]["lease"], 16)
    assert "node-a" in ops.ok("nodes")

    # inspect
    doc = ops.json("inspect", "c1")
    assert doc["spec"]["start"] == "hub.operate.demo:Counter"
    assert doc["spec"]["args"] == {"n": 1}
    assert doc["spec"]["metadata"] == {"tag": "t1"}
    assert doc["owner"]["node_id"] == "node-a"
    assert doc["fencing_token"] == child["token"]
    assert [r["node_id"] for r in doc["replicas"]] == ["node-a"]
    assert doc["placement"] == "node-a"
    assert doc["revision"] > 0
    human = ops.ok("inspect", "c1")
    assert re.search(r"^start\s+hub\.operate\.demo:Counter$", human, re.M), human
    assert re.search(r"^owner\s+node-a$", human, re.M), human
    assert re.search(r"^state\s+running$", human, re.M), human
    assert re.search(r"^NODE\s+ROLE\s+STATE\s+TOKEN", human, re.M), human

    # move to a second node
    nodes.append(ops.node("node-b"))
    assert "moved c1 to node-b" in ops.ok("move", "c1", "node-b")
    doc = ops.json("inspect", "c1")
    assert doc["owner"]["node_id"] == "node-b" and doc["spec"]["nodes"] == ["node-b"]

    # unknown child or node: exit 3, one line
    for verb, argv in [
        ("inspect", ("nope",)),
        ("stop", ("nope",)),
        ("move", ("nope", "node-a")),
        ("move", ("c1", "node-z")),
        ("drain", ("node-z",)),
        ("start", ("c9", "hub.operate.demo:Counter", "--node", "node-z")),
    ]:
        proc = ops.run(verb, *argv)
        assert proc.returncode == 3, (verb, argv, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr

    # stop --wait
    assert "stopped c1" in ops.ok("stop", "c1", "--wait")
    assert _children(ops) == {}

    # drain: the node hands its child over and exits 0
    ops.ok("start", "c2", "hub.operate.demo:Counter", "--wait")
    owner = _children(ops)["c2"]["node"]
    other = "node-b" if owner == "node-a" else "node-a"
    proc = nodes[0] if owner == "node-a" else nodes[1]
    assert f"drained {owner}" in ops.ok("drain", owner, "--timeout", "30")
    assert proc.wait(timeout=30) == 0
    wait_until_sync(lambda: _children(ops)["c2"]["node"] == other, 15.0, interval=0.2)


def test_start_from_file(ops: Ops, nodes: list[subprocess.Popen[str]], tmp_path: Any) -> None:
    nodes.append(ops.node("node-f"))
    specs = tmp_path / "specs.json"
    specs.write_text(
        json.dumps(
            [
                {"id": "f1", "start": "hub.operate.demo:Counter", "args": {"x": 1}},
                {"id": "f2", "start": "hub.operate.demo:Counter", "tag": "batch"},
            ]
        )
    )
    proc = ops.run("start", "--file", str(specs), "--wait")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr  # no progress bar in a pipe
    children = _children(ops)
    assert children.keys() == {"f1", "f2"} and children["f2"]["tag"] == "batch"
    assert _children(ops, "--state", "running").keys() == {"f1", "f2"}

    lines = tmp_path / "specs.jsonl"  # JSON Lines: one spec per line, comments allowed
    lines.write_text(
        '# more rooms\n{"id": "f3", "start": "hub.operate.demo:Counter"}\n\n'
        '{"id": "f4", "start": "hub.operate.demo:Counter", "args": {"y": 2}}\n'
    )
    out = ops.ok("start", "--file", str(lines), "--wait")
    assert "started f3 on node-f" in out and "started f4 on node-f" in out
    assert _children(ops, "--state", "running").keys() == {"f1", "f2", "f3", "f4"}


def _run_on_terminal(argv: list[str], timeout: float = 60) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal: (exit code, stdout, what the tty got)."""
    leader, follower = pty.openpty()
    chunks: list[bytes] = []

    def drain_tty() -> None:
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain_tty, daemon=True)
    reader.start()
    try:
        proc = subprocess.run(
            [*CLI, *argv],
            stdout=subprocess.PIPE,
            stderr=follower,
            text=True,
            timeout=timeout,
            env={**_env(), "TERM": "xterm-256color"},
        )
    finally:
        os.close(follower)
    reader.join(timeout=10)
    os.close(leader)
    return proc.returncode, proc.stdout, b"".join(chunks).decode(errors="replace")


def test_drain_shows_progress_on_a_terminal_only(
    ops: Ops, nodes: list[subprocess.Popen[str]]
) -> None:
    nodes.append(ops.node("p1"))
    for i in range(3):
        ops.ok("start", f"p-{i}", "hub.operate.demo:Counter", "--wait")  # all on p1, the only node
    nodes.append(ops.node("p2"))
    etcd = ["--hub", HUB, "--endpoints", ops.endpoint, "--prefix", ops.prefix]
    code, out, tty = _run_on_terminal(["drain", "p1", "--timeout", "30", *etcd])
    assert code == 0, tty
    assert out == "drained p1\n"  # the result on stdout, untouched by the bar
    assert "draining p1" in tty and "\x1b[" in tty  # the bar, on the terminal
    assert nodes[0].wait(timeout=30) == 0
    assert {row["node"] for row in _children(ops).values()} == {"p2"}


def test_malformed_args_is_a_usage_error(ops: Ops) -> None:
    proc = ops.run("start", "c1", "hub.operate.demo:Counter", "--args", "{not json")
    assert proc.returncode == 2
    assert "--args" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_unknown_child_exits_3(ops: Ops) -> None:
    proc = ops.run("inspect", "ghost", "--json")
    assert proc.returncode == 3
    assert "ghost" in proc.stderr and proc.stdout == ""


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("verb", [("ls",), ("nodes",), ("stop", "x")])
def test_unreachable_etcd_fails_fast(verb: tuple[str, ...]) -> None:
    started = time.monotonic()
    proc = subprocess.run(
        [*CLI, *verb, "--hub", HUB, "--endpoints", f"127.0.0.1:{_closed_port()}"],
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(),
    )
    assert time.monotonic() - started < 10
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_watch_streams_starts_moves_and_stops(ops: Ops, nodes: list[subprocess.Popen[str]]) -> None:
    nodes.append(ops.node("w1"))
    watcher = subprocess.Popen(
        [
            *CLI,
            "watch",
            "--hub",
            HUB,
            "--endpoints",
            ops.endpoint,
            "--prefix",
            ops.prefix,
            "--json",
            "--count",
            "3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        assert watcher.stdout is not None
        assert json.loads(watcher.stdout.readline())["event"] == "watching"
        nodes.append(ops.node("w2"))
        ops.ok("start", "wc", "hub.operate.demo:Counter", "--node", "w1", "--wait")
        ops.ok("stop", "wc", "--wait")
        out, err = watcher.communicate(timeout=30)
        assert watcher.returncode == 0, err
        events = [json.loads(line) for line in out.splitlines()]
        assert events[0]["event"] == "node_joined", events
        assert events[0]["node_id"] == "w2"
        assert {e.get("child_id") for e in events[1:]} == {"wc"}
        assert "Traceback" not in err
    finally:
        if watcher.poll() is None:
            watcher.kill()
