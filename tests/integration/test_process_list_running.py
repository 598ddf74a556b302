"""``process_list()`` lists running children: a child parked as ``failed`` (its restart
intensity ran out) is not running, on either scope."""

from __future__ import annotations

from support.wait import wait_until

from hub import ChildSpec, Hub, OwnerState
from integration import parked_workers, state_workers


async def test_a_child_parked_as_failed_is_not_in_process_list(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    parked_workers.reset()
    parked_workers.gate("broken").set()  # crashes right after every start
    async with Hub(
        "pl", endpoints=[etcd_endpoint], node_id="a", lease_ttl=3, prefix=hub_prefix
    ) as hub:
        result = await hub.start_children(
            [
                ChildSpec(id="fine", start=f"{state_workers.__name__}:Counter"),
                ChildSpec(
                    id="broken",
                    start=f"{parked_workers.__name__}:CrashAfterGate",
                    max_restarts=0,
                    max_seconds=60,
                ),
            ]
        )
        assert result.ok, result.errors

        def parked_and_fine() -> bool:
            broken, fine = hub.get_pid("broken"), hub.get_pid("fine")
            return (
                broken is not None
                and broken.state is OwnerState.FAILED
                and fine is not None
                and fine.is_running
            )

        await wait_until(parked_and_fine, 15, message="'broken' was not parked")
        assert set(hub.process_list()) == {"fine"}
        assert set(hub.process_list("local")) == {"fine"}
        assert hub.get_pid("broken") is not None  # still known, just not running
