"""A user-written strategy (examples/custom_strategy.py) drives a real cluster."""

from __future__ import annotations

import sys
from contextlib import AsyncExitStack
from pathlib import Path

from support.wait import wait_until

from hub import ChildSpec, Hub
from integration import state_workers
from strategies import DistributionStrategy, PlacementInput

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from examples.custom_strategy import Rendezvous  # noqa: E402


def test_the_guide_shows_the_example_as_it_is() -> None:
    guide = (ROOT / "docs" / "strategies.md").read_text()
    assert (ROOT / "examples" / "custom_strategy.py").read_text() in guide


async def test_a_custom_distribution_strategy_places_every_child(
    etcd_endpoint: str, hub_prefix: str
) -> None:
    strategy = Rendezvous()
    assert isinstance(strategy, DistributionStrategy)
    async with AsyncExitStack() as stack:
        hubs = [
            await stack.enter_async_context(
                Hub(
                    "cs",
                    endpoints=[etcd_endpoint],
                    node_id=name,
                    lease_ttl=3,
                    prefix=hub_prefix,
                    distribution=strategy,
                )
            )
            for name in ("n1", "n2", "n3")
        ]
        ids = [f"r-{i}" for i in range(60)]
        result = await hubs[0].start_children(
            [ChildSpec(id=c, start=f"{state_workers.__name__}:Counter") for c in ids],
            wait=True,
            timeout=10,
        )
        assert result.ok
        expected = strategy.placer(PlacementInput({"n1": 1, "n2": 1, "n3": 1}))
        assert {h.child_id: h.node_id for h in result.started} == {
            c: expected.owner(c) for c in ids
        }
        assert len({h.node_id for h in result.started}) == 3
        await hubs[2].stop()
        after = strategy.placer(PlacementInput({"n1": 1, "n2": 1}))
        await wait_until(
            lambda: all(
                (h := hubs[0].get_pid(c)) is not None
                and h.is_running
                and h.node_id == after.owner(c)
                for c in ids
            ),
            10,
        )
