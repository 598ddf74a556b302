"""hub.command: the built-in subprocess worker (real processes, no etcd)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.wait import wait_until

from hub.command import Command
from hub.core.supervisor import ExitKind, Supervisor, WorkerExit
from hub.errors import WorkerCrashed, WorkerStartFailed
from hub.model import ChildSpec, RestartPolicy
from hub.worker import Context

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups")

TIMEOUT = 10.0


def make_ctx(args: Any, child_id: str = "cmd-1") -> Context:
    return Context(
        hub_id="hub-a",
        child_id=child_id,
        node_id="node-1",
        fencing_token=1234,
        incarnation=0x99,
        args=args,
        metadata={},
    )


def sh(script: str, **extra: Any) -> dict[str, Any]:
    return {"argv": ["sh", "-c", script], **extra}


def is_alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie (PID 1 may never reap orphans here)."""
    if Path("/proc/self/stat").exists():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            return False
        state = stat.rsplit(")", 1)[1].split()[0]
        return state not in {"Z", "X"}
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def read_pids(path: Path) -> list[int]:
    try:
        return [int(line) for line in path.read_text().split()]
    except FileNotFoundError:
        return []


@pytest.fixture
def pid_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "pids"
    yield path
    for pid in read_pids(path):  # never leave sleeps behind, even when a test fails
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass


async def run_then_cancel(
    ctx: Context, ready: Callable[[], bool]
) -> tuple[asyncio.Task[None], float]:
    """Run the command, wait for ``ready()``, cancel it; return the task and the stop time."""
    async with asyncio.TaskGroup() as task_group:
        task = task_group.create_task(Command().run(ctx))
        await wait_until(ready, TIMEOUT, interval=0.005)
        began = time.monotonic()
        task.cancel()
    return task, time.monotonic() - began


# ----------------------------------------------------------------------------- exits


async def test_exit_zero_is_a_normal_exit(no_leaked_tasks: None) -> None:
    await Command().run(make_ctx({"argv": ["true"]}))


async def test_non_zero_exit_raises_worker_crashed(no_leaked_tasks: None) -> None:
    with pytest.raises(WorkerCrashed) as info:
        await Command().run(make_ctx(sh("exit 3")))
    assert info.value.exit_code == 3
    assert info.value.reason == "exited with code 3"
    assert info.value.child_id == "cmd-1"


async def test_killed_by_a_signal_has_a_negative_exit_code(no_leaked_tasks: None) -> None:
    with pytest.raises(WorkerCrashed) as info:
        await Command().run(make_ctx(sh("kill -KILL $$")))
    assert info.value.exit_code == -9
    assert info.value.reason == "killed by SIGKILL"


async def test_environment_and_cwd(
    no_leaked_tasks: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PH_TEST_INHERITED", "from-parent")
    out = tmp_path / "env.txt"
    workdir = tmp_path / "work"
    workdir.mkdir()
    args = sh(
        'env > "$OUT"; echo "CWD=$(pwd -P)" >> "$OUT"',
        env={"OUT": str(out), "MY_VAR": "mine", "PROCESSHUB_CHILD_ID": "spoofed"},
        cwd=str(workdir),
    )
    await Command().run(make_ctx(args))
    lines = out.read_text().splitlines()
    env = dict(line.split("=", 1) for line in lines if "=" in line)
    assert env["PROCESSHUB_HUB_ID"] == "hub-a"
    assert env["PROCESSHUB_CHILD_ID"] == "cmd-1"  # ours win over args["env"]
    assert env["PROCESSHUB_NODE_ID"] == "node-1"
    assert env["PROCESSHUB_FENCING_TOKEN"] == "1234"
    assert env["MY_VAR"] == "mine"
    assert env["PH_TEST_INHERITED"] == "from-parent"
    assert env["CWD"] == str(workdir.resolve())


async def test_leftover_group_members_are_killed_after_the_command_exits(
    no_leaked_tasks: None, pid_file: Path
) -> None:
    await Command().run(make_ctx(sh('sleep 100 & echo $! > "$PIDS"', env={"PIDS": str(pid_file)})))
    (background,) = read_pids(pid_file)
    await wait_until(lambda: not is_alive(background), TIMEOUT)


# ----------------------------------------------------------------------------- stopping


async def test_cancellation_kills_the_process_group(no_leaked_tasks: None, pid_file: Path) -> None:
    script = (
        'sleep 100 & echo $! > "$PIDS"; sleep 100 & echo $! >> "$PIDS"; echo $$ >> "$PIDS"; wait'
    )
    ctx = make_ctx(sh(script, env={"PIDS": str(pid_file)}, stop_timeout=30))
    task, elapsed = await run_then_cancel(ctx, lambda: len(read_pids(pid_file)) == 3)
    assert task.cancelled()
    pids = read_pids(pid_file)
    await wait_until(lambda: not any(is_alive(pid) for pid in pids), TIMEOUT)
    print(f"SIGTERM stopped the group in {elapsed:.3f}s")
    assert elapsed < 30  # SIGTERM was enough: no SIGKILL after stop_timeout


async def test_sigkill_after_stop_timeout_when_stop_signal_is_ignored(
    no_leaked_tasks: None, pid_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    script = 'trap "" TERM; sleep 100 & echo $! > "$PIDS"; echo $$ >> "$PIDS"; wait'
    ctx = make_ctx(sh(script, env={"PIDS": str(pid_file)}, stop_timeout=0.3))
    task, elapsed = await run_then_cancel(ctx, lambda: len(read_pids(pid_file)) == 2)
    assert task.cancelled()
    print(f"SIGTERM ignored; SIGKILL stopped the group after {elapsed:.3f}s")
    assert elapsed >= 0.25
    pids = read_pids(pid_file)
    await wait_until(lambda: not any(is_alive(pid) for pid in pids), TIMEOUT)
    assert any("sending SIGKILL" in r.getMessage() for r in caplog.records)


async def test_custom_stop_signal(no_leaked_tasks: None, tmp_path: Path) -> None:
    out = tmp_path / "got"
    script = 'trap \'echo USR1 > "$OUT"; exit 0\' USR1; echo up > "$OUT.up"; sleep 100 & wait'
    ctx = make_ctx(sh(script, env={"OUT": str(out)}, stop_signal="USR1", stop_timeout=30))
    task, _ = await run_then_cancel(ctx, lambda: Path(f"{out}.up").exists())
    assert task.cancelled()
    assert out.read_text().strip() == "USR1"


# ----------------------------------------------------------------------------- bad args


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["ls"], "args must be an object with 'argv', got list"),
        ({}, "'argv' must be a non-empty list of strings"),
        ({"argv": []}, "'argv' must be a non-empty list of strings"),
        ({"argv": "ls -l"}, "'argv' must be a non-empty list of strings"),
        ({"argv": ["ls", 3]}, "'argv' must be a non-empty list of strings"),
        ({"argv": [""]}, "'argv' must be a non-empty list of strings"),
        ({"argv": ["true"], "env": {"A": 1}}, "'env' must map non-empty names"),
        ({"argv": ["true"], "env": {"A=B": "x"}}, "'env' must map non-empty names"),
        ({"argv": ["true"], "env": ["A"]}, "'env' must map non-empty names"),
        ({"argv": ["true"], "cwd": 5}, "'cwd' must be a non-empty string"),
        ({"argv": ["true"], "stop_timeout": 0}, "'stop_timeout' must be a number > 0"),
        ({"argv": ["true"], "stop_timeout": True}, "'stop_timeout' must be a number > 0"),
        ({"argv": ["true"], "stop_timeout": "5"}, "'stop_timeout' must be a number > 0"),
        ({"argv": ["true"], "stop_signal": "SIGNOPE"}, "'stop_signal' 'SIGNOPE' is not a signal"),
        ({"argv": ["true"], "stop_signal": 15}, "'stop_signal' must be a signal name"),
        ({"argv": ["true"], "argvv": ["x"]}, "unknown args key(s) ['argvv']"),
    ],
)
async def test_invalid_args_fail_to_start(args: Any, fragment: str) -> None:
    with pytest.raises(WorkerStartFailed) as info:
        await Command().run(make_ctx(args))
    assert fragment in info.value.reason
    assert info.value.reason.startswith("hub.command:Command: ")


async def test_program_that_cannot_be_executed(no_leaked_tasks: None, tmp_path: Path) -> None:
    with pytest.raises(WorkerStartFailed) as info:
        await Command().run(make_ctx({"argv": ["no-such-program-processhub"]}))
    assert info.value.reason.startswith(
        "cannot execute 'no-such-program-processhub': FileNotFoundError"
    )
    with pytest.raises(WorkerStartFailed) as info:
        await Command().run(make_ctx({"argv": ["true"], "cwd": str(tmp_path / "missing")}))
    assert "FileNotFoundError" in info.value.reason


# ----------------------------------------------------------------------------- supervised


class Exits:
    def __init__(self) -> None:
        self.exits: list[WorkerExit] = []
        self.started: list[str] = []

    def worker_started(self, child_id: str, fencing_token: int, restarts: int) -> None:
        self.started.append(child_id)

    def worker_restarting(
        self, child_id: str, fencing_token: int, restarts: int, reason: str
    ) -> None:
        pass

    def worker_exited(self, child_id: str, fencing_token: int, exit: WorkerExit) -> None:
        self.exits.append(exit)


async def test_supervised_command_reports_its_exit_code(
    no_leaked_tasks: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="hub.core.supervisor")
    events = Exits()
    supervisor = Supervisor(hub_id="hub-a", node_id="node-1", events=events)
    ready = asyncio.Event()
    async with asyncio.TaskGroup() as task_group:
        run_task = task_group.create_task(supervisor.run(ready=ready))
        await ready.wait()
        supervisor.start(
            ChildSpec(
                id="cmd-3",
                start="hub.command:Command",
                args=sh("sleep 0.05; exit 3"),
                restart=RestartPolicy.TEMPORARY,
            ),
            fencing_token=8,
            incarnation=1,
        )
        supervisor.start(
            ChildSpec(id="cmd-bad", start="hub.command:Command", args={"argv": []}),
            fencing_token=8,
            incarnation=1,
        )
        await wait_until(lambda: len(events.exits) == 2, TIMEOUT)
        run_task.cancel()
    by_id = {exit_.child_id: exit_ for exit_ in events.exits}
    assert by_id["cmd-3"] == WorkerExit(
        "cmd-3", ExitKind.CRASHED, "WorkerCrashed: exited with code 3", exit_code=3
    )
    assert by_id["cmd-bad"].kind is ExitKind.START_FAILED
    assert "'argv' must be a non-empty list" in by_id["cmd-bad"].reason
    assert events.started == ["cmd-3"]
