"""Hub and HubClient: typed options that match HubConfig, one shared API, no callbacks."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

import hub
import hub.errors
from hub import ClusterApi, Hub, HubClient
from hub.api.options import COMPUTED_DEFAULTS
from hub.config import HubConfig
from hub.errors import ConfigError
from hub.etcd.store import EtcdConfig

#: Constructor parameters that become the EtcdConfig (with its own field names).
ETCD_OPTIONS = {"endpoints", "tls", "username", "password", "request_timeout", "max_response_bytes"}
#: HubConfig fields a client does not use.
NODE_ONLY = {
    "child_specs",
    "migration",
    "partition",
    "hooks",
    "hook_timeout",
    "weight",
    "capacity",
    "load_interval",
    "http",
    "mailbox_capacity",
    "labels",
    "address",
    "drain_timeout",
    "worker_stop_timeout",
    "resync_interval",
}


def options(cls: type) -> dict[str, inspect.Parameter]:
    params = dict(inspect.signature(cls).parameters)
    assert next(iter(params)) == "hub_id"
    del params["hub_id"]
    return params


def config_fields() -> dict[str, dataclasses.Field[object]]:
    return {f.name: f for f in dataclasses.fields(HubConfig) if f.name not in ("hub_id", "etcd")}


@pytest.mark.parametrize("cls", [Hub, HubClient])
def test_every_option_is_typed_keyword_only_and_defaults_like_hub_config(cls: type) -> None:
    fields = config_fields()
    etcd_defaults = {f.name: f.default for f in dataclasses.fields(EtcdConfig)}
    for name, param in options(cls).items():
        assert param.kind is inspect.Parameter.KEYWORD_ONLY, name
        assert param.annotation is not inspect.Parameter.empty, name
        if name in ETCD_OPTIONS:
            expected = etcd_defaults[name]
            if name == "endpoints":
                assert tuple(param.default) == expected
                continue
        elif name in COMPUTED_DEFAULTS:
            expected = None  # "HubConfig's default"
        else:
            assert name in fields, f"{name} is not a HubConfig field"
            field = fields[name]
            if field.default_factory is not dataclasses.MISSING:
                expected = field.default_factory()
            else:
                expected = field.default
        assert param.default == expected, name


def test_hub_takes_every_hub_config_field() -> None:
    assert set(options(Hub)) == set(config_fields()) | ETCD_OPTIONS


def test_a_client_takes_every_option_but_the_node_only_ones() -> None:
    assert set(options(HubClient)) == set(config_fields()) - NODE_ONLY | ETCD_OPTIONS


def test_options_reach_the_config_and_computed_defaults_apply() -> None:
    node = Hub("h", endpoints="10.0.0.1:1,10.0.0.2:2", lease_ttl=4, weight=3, rpc=None)
    assert node.config.etcd.endpoints == ("10.0.0.1:1", "10.0.0.2:2")
    assert (node.config.lease_ttl, node.config.weight, node.config.rpc) == (4, 3, None)
    assert node.config.node_id and node.config.labels == {}
    client = HubClient("h", node_id="ops", validate_targets=False)
    assert client.node_id == "ops" and not client.config.validate_targets
    assert Hub.from_config(node.config).config is node.config
    assert HubClient.from_config(node.config).config is node.config


def test_unknown_and_invalid_options_are_refused() -> None:
    with pytest.raises(TypeError, match="no_such_option"):
        Hub("h", no_such_option=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="weight"):
        HubClient("h", weight=2)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="lease_ttl"):
        Hub("h", lease_ttl=1)


def test_hub_and_client_share_the_api_by_delegation() -> None:
    assert not issubclass(Hub, HubClient) and not issubclass(HubClient, Hub)
    public = [name for name in vars(ClusterApi) if not name.startswith("_")]
    assert {"start_children", "call", "cast", "process_list", "move", "drain"} <= set(public)
    for name in public:
        # The very same function: one signature, one docstring, one body.
        assert inspect.getattr_static(Hub, name) is inspect.getattr_static(ClusterApi, name)
        assert inspect.getattr_static(HubClient, name) is inspect.getattr_static(ClusterApi, name)
        if name in vars(Hub) or name in vars(HubClient):
            pytest.fail(f"{name} is overridden")


def test_component_callbacks_are_not_methods_of_the_users_classes() -> None:
    internal = {
        "worker_started",
        "worker_restarting",
        "worker_exited",
        "registry_changed",
        "dispatch_call",
        "dispatch_cast",
        "checkpoint",
    }
    for cls in (Hub, HubClient):
        assert not internal & set(dir(cls)), cls


def test_the_call_errors_and_client_are_exported() -> None:
    from hub import CallTimeout, ChildMoved, ChildNotRunning, HubFailed, NotCallable, StaleHandle

    assert {CallTimeout, ChildMoved, ChildNotRunning, NotCallable, StaleHandle, HubFailed}
    errors = {
        name
        for name, value in vars(hub.errors).items()
        if isinstance(value, type)
        and issubclass(value, Exception)
        and value.__module__ == "hub.errors"
    }
    assert errors <= set(hub.__all__)
    assert {"Hub", "HubClient", "ClusterApi"} <= set(hub.__all__)
    assert all(hasattr(hub, name) for name in hub.__all__)
