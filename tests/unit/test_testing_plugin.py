"""The testing kit's pytest plugin, in inner pytest sessions (pytester), without etcd.

An etcd that cannot be had is simulated with ``PROCESSHUB_TEST_ETCD=local`` and an etcd
binary path that does not exist: the selection fails at once, without Docker or ports.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hub.testing import ClusterFactory, EtcdServer, HubCluster, plugin, poll, wait_for
from hub.testing._etcd import endpoints_from_env, selection_mode
from hub.testing.plugin import in_ci

NEEDS_ETCD = """
    def test_uses_etcd(processhub_etcd):
        assert processhub_etcd.endpoint

    def test_without_etcd():
        pass
"""


# Hypothesis' plugin costs a second per inner session and is not under test here.
INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\naddopts = -p no:hypothesispytest\n"


@pytest.fixture(autouse=True)
def _quiet_inner_sessions(request: pytest.FixtureRequest) -> None:
    """Inner sessions get pytest-asyncio's loop scope set, as users are told to."""
    if "pytester" in request.fixturenames:
        request.getfixturevalue("pytester").makeini(INI)


@pytest.fixture
def no_etcd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No etcd can be found, and nothing says CI."""
    for name in ("ETCD_ENDPOINTS", "CI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PROCESSHUB_TEST_ETCD", "local")
    monkeypatch.setenv("PROCESSHUB_ETCD_BIN", str(tmp_path / "no-such-etcd"))


def test_loaded_through_its_pytest11_entry_point(pytestconfig: pytest.Config) -> None:
    # pytest names a plugin loaded from an entry point after the entry point.
    assert pytestconfig.pluginmanager.get_plugin("processhub") is plugin


def test_the_kit_imports_without_pytest_or_docker() -> None:
    code = textwrap.dedent(
        """
        import sys
        for name in ("pytest", "_pytest", "pytest_asyncio", "testcontainers", "docker"):
            sys.modules[name] = None  # any import of them now fails
        import hub.testing
        assert hub.testing.HubCluster and hub.testing.etcd_for_tests
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_fixtures_are_there_without_a_conftest(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--fixtures")
    for name in (
        "processhub_etcd",
        "processhub_prefix",
        "processhub_cluster",
        "processhub_fresh_etcd",
        "processhub_no_leaked_tasks",
    ):
        result.stdout.fnmatch_lines([f"{name}*"])


def test_missing_etcd_skips_outside_ci(pytester: pytest.Pytester, no_etcd: None) -> None:
    pytester.makepyfile(NEEDS_ETCD)
    result = pytester.runpytest("-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*no etcd available: local: *no-such-etcd*"])


@pytest.mark.parametrize("how", ["CI=true", "flag", "ini"])
def test_missing_etcd_fails_when_required(
    pytester: pytest.Pytester, no_etcd: None, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    pytester.makepyfile(NEEDS_ETCD)
    args: list[str] = []
    if how == "CI=true":
        monkeypatch.setenv("CI", "true")
    elif how == "flag":
        args.append("--processhub-require-etcd")
    else:
        pytester.makeini(INI + "processhub_require_etcd = true\n")
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*etcd required*but none available*"])


def test_an_unknown_selection_mode_fails_even_outside_ci(
    pytester: pytest.Pytester, no_etcd: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROCESSHUB_TEST_ETCD", "dokcer")
    pytester.makepyfile(NEEDS_ETCD)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*PROCESSHUB_TEST_ETCD must be auto, docker or local*"])


def test_etcd_endpoints_from_the_environment_come_first(
    pytester: pytest.Pytester, no_etcd: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ETCD_ENDPOINTS", "http://10.9.8.7:2379, etcd-2:2379")
    pytester.makepyfile(
        """
        def test_endpoints(processhub_etcd):
            assert processhub_etcd.endpoints == ("10.9.8.7:2379", "etcd-2:2379")
            assert processhub_etcd.endpoint == "10.9.8.7:2379"
            assert processhub_etcd.source == "env"
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_etcd_tests_are_marked(pytester: pytest.Pytester, no_etcd: None) -> None:
    pytester.makepyfile(
        NEEDS_ETCD
        + """
    def test_fresh(processhub_fresh_etcd):
        pass

    async def test_cluster(processhub_cluster):
        pass
    """
    )
    result = pytester.runpytest("-m", "not etcd")
    result.assert_outcomes(passed=1, deselected=3)
    pytester.runpytest("--strict-markers", "-m", "etcd", "--co").assert_outcomes()


def test_prefixes_are_unique(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        SEEN = []

        @pytest.mark.parametrize("n", range(20))
        def test_prefix(processhub_prefix, n):
            assert processhub_prefix.startswith("/processhub-test-")
            assert not processhub_prefix.endswith("/")
            assert processhub_prefix not in SEEN
            SEEN.append(processhub_prefix)
        """
    )
    pytester.runpytest().assert_outcomes(passed=20)


def test_the_plugin_loads_without_pytest_asyncio(pytester: pytest.Pytester) -> None:
    """Installed next to pytest but not pytest-asyncio, the plugin must not break pytest;
    only the async fixtures fail, with an install hint."""
    # `python -m pytest` runs in pytester.path, so this shadows the real package.
    pytester.makepyfile(pytest_asyncio="raise ImportError('not installed')")
    pytester.makepyfile(
        """
        def test_plain():
            pass

        def test_cluster(processhub_cluster):
            pass
        """
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:asyncio", "test_the_plugin_loads_without_pytest_asyncio.py"
    )
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*processhub_cluster needs pytest-asyncio*"])


def test_environment_parsing() -> None:
    assert endpoints_from_env({}) == ()
    assert endpoints_from_env({"ETCD_ENDPOINTS": " a:1 ,, http://b:2 "}) == ("a:1", "b:2")
    assert selection_mode({}) == "auto"
    assert selection_mode({"PROCESSHUB_TEST_ETCD": " Local "}) == "local"
    assert in_ci({"CI": "TRUE"}) and in_ci({"CI": "1"})
    assert not in_ci({}) and not in_ci({"CI": "false"})
    assert EtcdServer(("h:1", "h:2"), "env").endpoint == "h:1"


def test_node_ids_are_not_a_cluster_option() -> None:
    with pytest.raises(ValueError, match="node ids"):
        HubCluster(["127.0.0.1:1"], prefix="/p", node_id="a")


async def test_waits_end_with_a_timeout_error_that_says_why() -> None:
    with pytest.raises(TimeoutError, match="nothing yet"):
        await poll(lambda: None, 0.05, explain=lambda: "nothing yet")
    with pytest.raises(TimeoutError, match="never true"):
        await wait_for(lambda: False, 0.05, message="never true")
    assert await poll(lambda: 7, 0) == 7

    async def ready() -> bool:
        return True

    await wait_for(ready, 0)


async def test_a_factory_call_may_name_other_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    """``processhub_cluster(endpoints=...)`` once raised "multiple values for argument
    'endpoints'"; the session's etcd is not even asked for then."""
    started: list[tuple[list[str], object]] = []

    async def start(self: HubCluster, nodes: object) -> HubCluster:
        started.append((self.endpoints, nodes))
        return self

    monkeypatch.setattr(HubCluster, "start", start)

    def no_session_etcd() -> tuple[str, ...]:
        pytest.fail("the session's etcd was asked for")

    factory = ClusterFactory(no_session_etcd, "/p")
    cluster = await factory(2, endpoints=["10.0.0.1:2379"], hub_id="x")
    assert started == [(["10.0.0.1:2379"], 2)]
    assert (cluster.hub_id, cluster.prefix) == ("x", "/p")
