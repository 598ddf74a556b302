"""Hub configuration: one frozen, validated value. Invalid options raise ConfigError.

The four strategy options are checked by :mod:`strategies.checks`: each must have every
member of its family's Protocol with sensible values, and together they must not promise
what they cannot deliver (the rules are listed there and in ``docs/strategies.md``).
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hub.errors import ConfigError, InvalidSpec
from hub.etcd.keys import DEFAULT_PREFIX
from hub.etcd.store import DEFAULT_MAX_RESPONSE_BYTES, EtcdConfig, TlsConfig
from hub.messaging.rpc import RpcConfig
from hub.model import ChildSpec, validate_name
from strategies import checks
from strategies.base import DistributionStrategy, PartitionStrategy, RedundancyStrategy
from strategies.distribution import ConsistentHashing
from strategies.migration import ColdSwap, MigrationStrategy
from strategies.partition import Strict
from strategies.redundancy import Singularity

#: etcd refuses requests above 1.5 MiB by default; one spec must fit with room to spare.
DEFAULT_MAX_SPEC_BYTES = 1024 * 1024


def default_node_id() -> str:
    """``{hostname}-{pid}``, reduced to the characters node ids allow."""
    host = re.sub(r"[^A-Za-z0-9_.\-]", "-", socket.gethostname()) or "node"
    return f"{host.lstrip('-_.') or 'node'}-{os.getpid()}"[:128]


@dataclass(frozen=True)
class HubConfig:
    """Everything a Hub needs. See :class:`hub.Hub` for the meaning of each option."""

    hub_id: str
    etcd: EtcdConfig = field(default_factory=EtcdConfig)
    node_id: str = field(default_factory=default_node_id)
    lease_ttl: int = 10
    prefix: str = DEFAULT_PREFIX
    child_specs: tuple[ChildSpec, ...] = ()
    allowed_targets: tuple[str, ...] | None = None
    validate_targets: bool = True
    distribution: DistributionStrategy = field(default_factory=ConsistentHashing)
    migration: MigrationStrategy = field(default_factory=ColdSwap)
    partition: PartitionStrategy = field(default_factory=Strict)
    redundancy: RedundancyStrategy = field(default_factory=Singularity)
    hooks: Mapping[Any, Sequence[Any]] | None = None  # hub.hooks.HookSpec
    hook_timeout: float = 5.0
    weight: int = 1
    capacity: int = 0
    load_interval: float = 5.0
    rpc: RpcConfig | None = field(default_factory=RpcConfig)
    http: str | None = None  # host:port for /healthz, /readyz, /metrics, /api (None: off)
    mailbox_capacity: int = 1000
    labels: Mapping[str, str] = field(default_factory=dict)
    address: str = ""
    drain_timeout: float = 30.0
    worker_stop_timeout: float = 10.0  # above hub.command's default 5 s SIGTERM grace
    max_spec_bytes: int = DEFAULT_MAX_SPEC_BYTES
    startup_timeout: float = 30.0
    resync_interval: float = 30.0

    def __post_init__(self) -> None:
        try:
            validate_name("hub_id", self.hub_id)
            validate_name("node_id", self.node_id)
        except InvalidSpec as exc:
            raise ConfigError(str(exc)) from None
        if not isinstance(self.lease_ttl, int) or self.lease_ttl < 2:
            raise ConfigError("lease_ttl must be an int >= 2 (seconds)")
        if not isinstance(self.weight, int) or self.weight < 1:
            raise ConfigError("weight must be an int >= 1")
        if not isinstance(self.capacity, int) or self.capacity < 0:
            raise ConfigError("capacity must be an int >= 0 (0: no limit)")
        for name in ("drain_timeout", "worker_stop_timeout", "startup_timeout", "resync_interval"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0")
        if self.max_spec_bytes < 1024:
            raise ConfigError("max_spec_bytes must be at least 1024")
        ids = [spec.id for spec in self.child_specs]
        if len(ids) != len(set(ids)):
            raise ConfigError("child_specs contains duplicate ids")
        if self.allowed_targets is not None and isinstance(self.allowed_targets, str):
            raise ConfigError("allowed_targets must be a sequence of patterns, not a str")
        if self.address and self.rpc is not None:
            # With node RPC on, the published address is where peers dial for call/cast:
            # one set here instead (a bare pod IP, say) would send every call astray.
            raise ConfigError(
                "address is the node's RPC address when node RPC is on: "
                "set rpc=RpcConfig(advertise=...) (--rpc-advertise) instead"
            )
        self._check_strategies()

    def _check_strategies(self) -> None:
        """Raise ConfigError for the first strategy option, or combination, that cannot work."""
        for option, check in (
            ("distribution", checks.distribution_problems),
            ("redundancy", checks.redundancy_problems),
            ("migration", checks.migration_problems),
            ("partition", checks.partition_problems),
        ):
            problems = check(getattr(self, option))
            if problems:
                raise ConfigError(f"{option}: {problems[0]}")
        problems = checks.combination_problems(
            distribution=self.distribution,
            redundancy=self.redundancy,
            migration=self.migration,
            partition=self.partition,
        )
        if problems:
            raise ConfigError(f"distribution and redundancy: {problems[0]}")


def make_config(
    hub_id: str,
    *,
    endpoints: Sequence[str] | str = ("127.0.0.1:2379",),
    tls: TlsConfig | None = None,
    username: str | None = None,
    password: str | None = None,
    request_timeout: float = 5.0,
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    allowed_targets: Sequence[str] | None = None,
    child_specs: Sequence[ChildSpec] = (),
    **options: object,
) -> HubConfig:
    """Build a HubConfig from Hub's keyword arguments."""
    if isinstance(endpoints, str):
        endpoints = endpoints.split(",")
    if isinstance(allowed_targets, str):  # tuple("app.*") would allow single characters
        raise ConfigError("allowed_targets must be a sequence of patterns, not a str")
    etcd = EtcdConfig(
        endpoints=tuple(endpoints),
        tls=tls,
        username=username,
        password=password,
        request_timeout=request_timeout,
        max_response_bytes=max_response_bytes,
    )
    try:
        return HubConfig(
            hub_id=hub_id,
            etcd=etcd,
            child_specs=tuple(child_specs),
            allowed_targets=tuple(allowed_targets) if allowed_targets is not None else None,
            **options,  # type: ignore[arg-type]
        )
    except TypeError as exc:
        raise ConfigError(str(exc)) from None
