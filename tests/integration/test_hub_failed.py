"""A component that fails while the hub runs: an orderly stop and a typed error, on etcd.

A component is forced to raise after startup by replacing its ``run`` on the instance
before the hub starts. The user's ``async with`` body is then interrupted and the error
out of the block is :class:`HubFailed` naming the component, its exception chained, never
a bare CancelledError; the node stopped in order: its workers ended, its lease was revoked
(not left to expire) and no task is left behind (``no_leaked_tasks``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from hub import ChildSpec, Hub, HubClient, HubClosed, HubFailed
from hub.etcd.store import Store

from . import workers

pytestmark = pytest.mark.usefixtures("no_leaked_tasks")

TIMEOUT = 10.0


@pytest.fixture(autouse=True)
def _reset_workers() -> Any:
    workers.reset()
    yield
    workers.reset()


def failing_after(trigger: asyncio.Event, what: str) -> Callable[[], Coroutine[Any, Any, None]]:
    """A component ``run`` that works until ``trigger`` is set, then raises."""

    async def run() -> None:
        await trigger.wait()
        raise RuntimeError(what)

    return run


async def wait_forever() -> None:
    """What the body does until the failure interrupts it (the timeout is a ceiling)."""
    async with asyncio.timeout(TIMEOUT):
        await asyncio.Event().wait()


def make_hub(endpoint: str, prefix: str) -> Hub:
    return Hub("hf", endpoints=[endpoint], node_id="f1", prefix=prefix, lease_ttl=5)


async def test_a_failing_component_stops_the_node_and_interrupts_the_body(
    no_leaked_tasks: None, etcd_endpoint: str, hub_prefix: str
) -> None:
    hub = make_hub(etcd_endpoint, hub_prefix)
    trigger = asyncio.Event()
    hub.quorum.run = failing_after(trigger, "quorum bug")  # type: ignore[method-assign]
    interrupted = False
    with pytest.raises(HubFailed) as info:
        async with hub:
            result = await hub.start_child(
                ChildSpec("w", f"{workers.__name__}:Sleeper"), wait=True, timeout=TIMEOUT
            )
            assert result.ok, result.errors
            lease = hub.session.lease_id
            try:
                trigger.set()
                await wait_forever()
            except asyncio.CancelledError:
                interrupted = True
                raise
    assert interrupted
    failure = info.value
    assert failure.component == "quorum"
    assert isinstance(failure.__cause__, RuntimeError) and "quorum bug" in str(failure.__cause__)
    assert hub.failed.is_set() and hub.failure is failure
    assert not hub.is_alive()
    current = asyncio.current_task()
    assert current is not None and current.cancelling() == 0
    # Stopped in order: the worker ended and the lease was revoked, not left to expire.
    assert workers.CANCELLED.get("w") == 1
    assert not hub.supervisor.is_running("w")
    async with Store(hub.config.etcd) as store:
        assert await store.lease_ttl(lease) == -1
        assert await store.get(hub.keys.node("f1")) is None
        assert await store.get(hub.keys.owner("w")) is None
        assert await store.get(hub.keys.spec("w")) is not None  # desired state is durable
    with pytest.raises(HubClosed):
        await hub.call("w", "hi")
    await hub.stop()  # already stopped, already reported: nothing more


async def test_without_async_with_the_failure_is_reported_by_failed_and_stop(
    no_leaked_tasks: None, etcd_endpoint: str, hub_prefix: str
) -> None:
    hub = make_hub(etcd_endpoint, hub_prefix)
    trigger = asyncio.Event()
    hub.reconciler.run = failing_after(trigger, "reconciler bug")  # type: ignore[method-assign]
    await hub.start()
    trigger.set()
    async with asyncio.timeout(TIMEOUT):
        await hub.failed.wait()  # this task is not cancelled: it learns it from the event
    assert hub.failure is not None and hub.failure.component == "reconciler"
    with pytest.raises(HubFailed, match="reconciler"):
        await hub.stop()
    await hub.stop()


async def test_a_client_whose_informer_fails_reports_it_the_same_way(
    no_leaked_tasks: None, etcd_endpoint: str, hub_prefix: str
) -> None:
    client = HubClient("hf", endpoints=[etcd_endpoint], prefix=hub_prefix)
    trigger = asyncio.Event()
    informer_run = client.informer.run

    async def run() -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(informer_run())
            await trigger.wait()
            raise RuntimeError("watch bug")

    client.informer.run = run  # type: ignore[method-assign]
    with pytest.raises(HubFailed) as info:
        async with client:
            trigger.set()
            await wait_forever()
    assert info.value.component == "informer"
    assert not client.is_alive()


async def test_a_startup_failure_is_raised_as_itself(
    no_leaked_tasks: None, etcd_endpoint: str, hub_prefix: str
) -> None:
    hub = make_hub(etcd_endpoint, hub_prefix)

    async def broken_register() -> int:
        raise OSError("cannot write the node record")

    hub.membership.register = broken_register  # type: ignore[method-assign]
    with pytest.raises(OSError, match="node record"):
        async with hub:
            pytest.fail("the body must not run")
    assert not hub.is_alive() and not hub.failed.is_set()
    await hub.stop()
