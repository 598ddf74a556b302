"""The pytest plugin of processhub's testing kit (entry point ``pytest11: processhub``).

pytest loads it wherever processhub and pytest are installed together; ``-p no:processhub``
turns it off. Fixtures (all named ``processhub_*`` so they cannot shadow a project's own):

- ``processhub_etcd`` (session): an :class:`~hub.testing.EtcdServer` (``.endpoints``,
  ``.endpoint``), found or started once per session (order in :mod:`hub.testing._etcd`);
- ``processhub_prefix``: an etcd key prefix no other test uses;
- ``processhub_cluster``: a :class:`~hub.testing.ClusterFactory`,
  ``await processhub_cluster(3, **hub_options)``, every cluster stopped at teardown; on the
  session's etcd, or on another one with ``endpoints=`` (``processhub_fresh_etcd``'s);
- ``processhub_fresh_etcd``: a started :class:`~hub.operate.localetcd.LocalEtcd` for this test
  alone, free to stop, pause and restart;
- ``processhub_no_leaked_tasks``: fails the test if an asyncio task outlives it;
- ``processhub_no_leaked_leases``: fails the test if a lease a Hub granted during it is
  still kept alive after it (see :mod:`hub.testing._leaks`).

A test using the etcd fixtures is marked ``etcd`` (``pytest -m "not etcd"`` skips them).
When no etcd can be had such a test is skipped, or fails with ``--processhub-require-etcd``,
the ini option ``processhub_require_etcd = true`` or ``CI=true`` in the environment: CI
must never silently skip them.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any, NoReturn, TypeVar, cast

import pytest

from hub.errors import ConfigError
from hub.operate.localetcd import LocalEtcd
from hub.testing._cluster import ClusterFactory
from hub.testing._etcd import EtcdServer, EtcdUnavailable, etcd_for_tests
from hub.testing._leaks import LeaseTracker, leaked_tasks

REQUIRE_ETCD_OPTION = "--processhub-require-etcd"
REQUIRE_ETCD_INI = "processhub_require_etcd"
ETCD_MARKER = "etcd: needs a real etcd server (added by processhub's etcd fixtures)"
_ETCD_FIXTURES = frozenset({"processhub_etcd", "processhub_fresh_etcd", "processhub_cluster"})
_INSTALL_HINT = "pip install 'processhub[testing]'"
_LEAK_GRACE = 1.0  # seconds for cancelled tasks to finish before they count as leaked

_Fixture = TypeVar("_Fixture", bound=Callable[..., Any])


def _async_fixture(function: _Fixture) -> _Fixture:
    """pytest-asyncio's fixture decorator (works in strict and auto mode). Without
    pytest-asyncio, a fixture that fails with an install hint: the plugin itself must
    load in any environment that has pytest."""
    try:
        import pytest_asyncio
    except ImportError:
        name = function.__name__

        def missing() -> NoReturn:
            pytest.fail(f"{name} needs pytest-asyncio: {_INSTALL_HINT}", pytrace=False)

        return cast(_Fixture, pytest.fixture(name=name)(missing))
    return cast(_Fixture, pytest_asyncio.fixture(function))


# -- hooks -------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("processhub", "processhub testing kit")
    group.addoption(
        REQUIRE_ETCD_OPTION,
        action="store_true",
        default=False,
        dest="processhub_require_etcd",
        help="fail, instead of skip, tests that need etcd when none can be had "
        "(implied by CI=true)",
    )
    parser.addini(
        REQUIRE_ETCD_INI,
        type="bool",
        default=False,
        help=f"like {REQUIRE_ETCD_OPTION}",
    )


def pytest_configure(config: pytest.Config) -> None:
    registered = config.getini("markers")
    if not any(str(line).split(":")[0].strip() == "etcd" for line in registered):
        config.addinivalue_line("markers", ETCD_MARKER)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _ETCD_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.etcd)


def in_ci(environ: Mapping[str, str] | None = None) -> bool:
    """True when ``$CI`` says so (``true``, ``1``, ``yes``, ``on``)."""
    value = (os.environ if environ is None else environ).get("CI", "")
    return value.strip().lower() in {"1", "true", "yes", "on"}


def etcd_required(config: pytest.Config) -> bool:
    """Whether a missing etcd fails tests rather than skipping them."""
    return bool(
        config.getoption("processhub_require_etcd") or config.getini(REQUIRE_ETCD_INI) or in_ci()
    )


def _unavailable(config: pytest.Config, reason: str) -> NoReturn:
    if etcd_required(config):
        pytest.fail(
            f"etcd required (CI=true or {REQUIRE_ETCD_OPTION}) but none available: {reason}",
            pytrace=False,
        )
    pytest.skip(f"no etcd available: {reason}")


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def processhub_etcd(pytestconfig: pytest.Config) -> Iterator[EtcdServer]:
    """The session's etcd: ``$ETCD_ENDPOINTS``, else Docker, else a local binary."""
    with contextlib.ExitStack() as stack:
        try:
            server = stack.enter_context(etcd_for_tests())
        except ConfigError as exc:  # a misconfiguration fails even outside CI
            pytest.fail(str(exc), pytrace=False)
        except EtcdUnavailable as exc:
            _unavailable(pytestconfig, str(exc))
        yield server


@pytest.fixture
def processhub_prefix() -> str:
    """A key prefix no other test uses, e.g. ``/processhub-test-1a2b3c4d``."""
    return f"/processhub-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def processhub_fresh_etcd(pytestconfig: pytest.Config) -> Iterator[LocalEtcd]:
    """A started LocalEtcd for this test alone (free to stop, pause, restart)."""
    try:
        etcd = LocalEtcd(name="processhub-fresh")
    except ConfigError as exc:
        _unavailable(pytestconfig, str(exc))
    with contextlib.closing(etcd):
        etcd.start()
        yield etcd


@_async_fixture
async def processhub_cluster(
    request: pytest.FixtureRequest, processhub_prefix: str
) -> AsyncIterator[ClusterFactory]:
    """``cluster = await processhub_cluster(3, **hub_options)``: in-process nodes on the
    session's etcd (started on first use), or on ``endpoints=[...]``; every cluster is
    closed at teardown, whatever the test did.

    With ``processhub_fresh_etcd``, request that fixture *before* this one, so that the
    clusters are closed while their etcd still runs.
    """

    def session_etcd() -> tuple[str, ...]:
        server: EtcdServer = request.getfixturevalue("processhub_etcd")
        return server.endpoints

    factory = ClusterFactory(session_etcd, processhub_prefix)
    yield factory
    await factory.close()


@_async_fixture
async def processhub_no_leaked_tasks() -> AsyncIterator[None]:
    """Fail the test if an asyncio task is still pending when it ends.

    Request it *first* among the test's fixtures so that its teardown runs after every
    other fixture's. Tasks get a short grace period to finish being cancelled.
    """
    yield
    leaked = await leaked_tasks(_LEAK_GRACE)
    for task in leaked:
        task.cancel()  # reported below; do not let them run into the next test
    assert not leaked, f"{len(leaked)} asyncio task(s) left pending: " + ", ".join(
        repr(t) for t in leaked
    )


@_async_fixture
async def processhub_no_leaked_leases() -> AsyncIterator[LeaseTracker]:
    """Fail the test if a lease a Hub granted during it is still kept alive after it.

    Leases of nodes the test killed (``Hub.abort``) are revoked, as their TTL would do;
    others are given their remaining TTL to expire. Request it first, like
    ``processhub_no_leaked_tasks``.
    """
    tracker = LeaseTracker()
    with tracker.installed():
        yield tracker
    leaks = await tracker.leaked()
    assert not leaks, "leases left alive: " + "; ".join(leaks)
