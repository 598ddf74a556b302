"""HubConfig validation: bad options fail at construction with a ConfigError."""

from __future__ import annotations

import pytest

from hub.config import make_config
from hub.errors import ConfigError
from hub.messaging.rpc import RpcConfig
from strategies import (
    Availability,
    BoundedLoad,
    DynamicQuorum,
    Guarantee,
    Guided,
    HotSwap,
    MajorityQuorum,
    PlacementInput,
    Replication,
    Singularity,
    StaticQuorum,
    Strict,
)


def test_address_with_node_rpc_on_is_refused() -> None:
    # A bare pod IP as `address` once replaced the RPC address in the node record, and every
    # call to that node dialled port 443. The RPC advertise address is the one to set.
    with pytest.raises(ConfigError, match="rpc=RpcConfig\\(advertise"):
        make_config("h", address="10.0.0.7")


def test_address_without_node_rpc_is_published_as_given() -> None:
    assert make_config("h", address="10.0.0.7:9000", rpc=None).address == "10.0.0.7:9000"


def test_rpc_advertise_alone_is_fine() -> None:
    config = make_config("h", rpc=RpcConfig(bind="0.0.0.0:7070", advertise="10.0.0.7:7070"))
    assert config.rpc is not None and config.rpc.advertise == "10.0.0.7:7070"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"lease_ttl": 1}, "lease_ttl"),
        ({"weight": 0}, "weight"),
        ({"drain_timeout": 0}, "drain_timeout"),
        ({"allowed_targets": "app.*"}, "allowed_targets"),
        ({"no_such_option": 1}, "no_such_option"),
    ],
)
def test_bad_options_raise_config_error(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_config("h", **options)


# -- strategies: every option must be a whole strategy of its family ------------------------


class Placed:
    """A distribution strategy's placer with every child on one node."""

    def owner(self, child_id: str) -> str | None:
        return "n1"

    def owners(self, child_id: str, n: int = 1) -> tuple[str, ...]:
        return ("n1",)


class Distribution:
    guarantees = frozenset({Guarantee.DETERMINISTIC})

    def placer(self, placement: PlacementInput) -> Placed:
        return Placed()


class TwoActive:
    guarantees: frozenset[Guarantee] = frozenset()
    mode = "active_active"

    def count(self, members: int) -> int:
        return 2


def attrs(**members: object) -> object:
    """An object with exactly these attributes."""
    return type("Custom", (), members)()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"distribution": object()}, "distribution: object has no `guarantees`"),
        ({"distribution": attrs(guarantees=frozenset())}, "distribution: Custom has no `placer`"),
        (
            {"distribution": attrs(guarantees=frozenset(), placer=3)},
            "distribution: Custom.placer is not callable",
        ),
        ({"redundancy": 2}, "redundancy: int has no `guarantees`"),
        (
            {"redundancy": attrs(guarantees=frozenset(), mode="active_active")},
            r"redundancy: Custom has no `count` \(a RedundancyStrategy has guarantees, mode, c",
        ),
        ({"migration": attrs(guarantees=frozenset())}, "migration: Custom has no `handover`"),
        (
            {"partition": attrs(guarantees=frozenset(), decide=Strict.decide)},
            "partition: Custom has no `persists_state`",
        ),
    ],
)
def test_an_incomplete_strategy_is_refused_naming_option_and_member(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        make_config("h", **options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"redundancy": attrs(guarantees={Guarantee.AT_MOST_ONE_OWNER}, mode="x", count=len)},
            "redundancy: Custom.guarantees must be a frozenset of Guarantee",
        ),
        (
            {"distribution": attrs(guarantees=frozenset({"deterministic"}), placer=len)},
            "distribution: Custom.guarantees must be a frozenset of Guarantee",
        ),
        (
            {"redundancy": attrs(guarantees=frozenset(), mode="primary", count=len)},
            "redundancy: Custom.mode must be 'active_passive' or 'active_active'",
        ),
        (
            {"redundancy": attrs(guarantees=frozenset(), mode="active_active", count=len)},
            r"redundancy: Custom.count\(0\) raised TypeError",
        ),
        (
            {
                "distribution": attrs(
                    guarantees=frozenset(), placer=staticmethod(lambda placement: None)
                )
            },
            "distribution: Custom.placer.. must return a Placer",
        ),
        (
            {
                "distribution": attrs(
                    guarantees=frozenset(),
                    placer=staticmethod(lambda placement: Placed()),
                    rebuild_interval=0,
                )
            },
            "distribution: Custom.rebuild_interval must be a number of seconds > 0",
        ),
        (
            {
                "migration": attrs(
                    guarantees=frozenset(), handover=True, state_timeout=1.0, handover_ttl=1
                )
            },
            "migration: Custom.handover_ttl must be >= 5 with handover=True",
        ),
        (
            {
                "partition": attrs(
                    guarantees=Strict.guarantees,
                    persists_state=None,
                    decide=Strict.decide,
                    next_expiry=Strict.next_expiry,
                    reset_cluster_size=Strict.reset_cluster_size,
                )
            },
            "partition: Custom.persists_state must be a bool",
        ),
    ],
)
def test_a_strategy_with_bad_member_values_is_refused(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        make_config("h", **options)


def test_guarantees_that_contradict_the_strategy_are_refused() -> None:
    class OneOwnerButTwoActive(TwoActive):
        guarantees = frozenset({Guarantee.AT_MOST_ONE_OWNER})

    with pytest.raises(ConfigError, match="promises AT_MOST_ONE_OWNER, but with mode"):
        make_config("h", redundancy=OneOwnerButTwoActive())

    class OutageProof(TwoActive):
        guarantees = frozenset({Guarantee.AVAILABLE_DURING_OUTAGE})

    with pytest.raises(ConfigError, match=r"redundancy: .*only a partition strategy"):
        make_config("h", redundancy=OutageProof())
    with pytest.raises(ConfigError, match=r"partition: .*both AT_MOST_ONE_OWNER and AVAIL"):

        class Both(Availability):
            guarantees = frozenset({Guarantee.AT_MOST_ONE_OWNER, Guarantee.AVAILABLE_DURING_OUTAGE})

        make_config("h", partition=Both())


def test_guided_needs_a_fixed_instance_count() -> None:
    for guided in (Guided(), Guided(fallback="ring")):
        with pytest.raises(ConfigError, match="Guided needs one instance count"):
            make_config("h", distribution=guided, redundancy=Replication("cluster"))
    make_config("h", distribution=Guided(), redundancy=Replication(2))
    make_config("h", distribution=Guided(), redundancy=Singularity())


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"partition": Availability(), "migration": HotSwap()},
        {"partition": Availability(), "redundancy": Replication(2)},
        {"partition": MajorityQuorum(), "redundancy": Replication("cluster")},
        {"partition": DynamicQuorum(50), "redundancy": Replication(3, mode="active_passive")},
        {"partition": StaticQuorum(2), "distribution": BoundedLoad(), "migration": HotSwap()},
        {"distribution": Distribution(), "redundancy": TwoActive()},
    ],
    ids=repr,
)
def test_combinations_that_can_work_are_accepted(options: dict[str, object]) -> None:
    config = make_config("h", **options)
    for option, value in options.items():
        assert getattr(config, option) is value
