"""HubConfig validation: bad options fail at construction with a ConfigError."""

from __future__ import annotations

import pytest

from hub.config import make_config
from hub.errors import ConfigError
from hub.messaging.rpc import RpcConfig


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
