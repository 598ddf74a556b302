"""How to reach etcd: endpoints, TLS, credentials, deadlines and message limits.

Plain, validated configuration (:class:`EtcdConfig`, :class:`TlsConfig`); the client that
uses it is :class:`hub.etcd.store.Store`. Invalid settings raise
:class:`~hub.errors.ConfigError` when the config is built, not at the first call.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Final

import grpc

from hub.errors import ConfigError

__all__ = ["DEFAULT_MAX_RESPONSE_BYTES", "EtcdConfig", "TlsConfig"]

#: Default gRPC receive limit of the etcd channel: the largest response a node accepts. It
#: bounds the memory one reply can take (protobuf decoding about doubles it) and holds 42
#: values of etcd's default maximum size. A larger reply fails as ResponseTooLarge and is
#: never half-read.
DEFAULT_MAX_RESPONSE_BYTES: Final = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """TLS for the etcd connection. ``cert_file``/``key_file`` enable client-cert auth."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None  # override the name checked in the server certificate

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: str | None) -> bytes | None:
            if path is None:
                return None
            with open(path, "rb") as fh:
                return fh.read()

        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("TLS cert_file and key_file must be given together")
        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca_file),
            private_key=read(self.key_file),
            certificate_chain=read(self.cert_file),
        )


def _is_host_port(endpoint: str) -> bool:
    """``host:port`` with a port in 1..65535; an IPv6 host in brackets; no scheme or path."""
    host, sep, port = endpoint.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        return False
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        return bool(host) and all(c in "0123456789abcdefABCDEF:." for c in host)
    return bool(host) and not any(c.isspace() or c in "/@[]:" for c in host)


@dataclass(frozen=True, slots=True)
class EtcdConfig:
    """How to reach etcd.

    Args:
        endpoints: ``host:port`` strings. Several endpoints must be IP addresses (gRPC
            multi-address target); a single endpoint may be a DNS name.
        tls: TLS settings; None for plaintext.
        username, password: etcd auth; both or neither.
        request_timeout: deadline of every unary call, seconds.
        keepalive_time: gRPC keepalive ping interval, seconds (etcd refuses pings more
            often than every 5 s by default).
        max_response_bytes: the channel's receive limit, the largest etcd response this
            client accepts (see DEFAULT_MAX_RESPONSE_BYTES); at least 1 MiB.
    """

    endpoints: tuple[str, ...] = ("127.0.0.1:2379",)
    tls: TlsConfig | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in logs or reprs
    request_timeout: float = 5.0
    keepalive_time: float = 10.0
    keepalive_timeout: float = 5.0
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES

    def __post_init__(self) -> None:
        if isinstance(self.endpoints, str):
            object.__setattr__(self, "endpoints", tuple(self.endpoints.split(",")))
        eps = tuple(e.strip() for e in self.endpoints if e.strip())
        if not eps:
            raise ConfigError("at least one etcd endpoint is required")
        for ep in eps:
            if not _is_host_port(ep):
                raise ConfigError(f"etcd endpoint {ep!r} must look like host:port")
        object.__setattr__(self, "endpoints", eps)
        self.target()  # several endpoints: IP addresses of one family (ConfigError)
        if (self.username is None) != (self.password is None):
            raise ConfigError("etcd username and password must be given together")
        if self.request_timeout <= 0:
            raise ConfigError("request_timeout must be > 0")
        if not isinstance(self.max_response_bytes, int) or self.max_response_bytes < 1024 * 1024:
            raise ConfigError("max_response_bytes must be an int of at least 1 MiB (1048576)")

    def target(self) -> str:
        """The gRPC target string for these endpoints."""
        if len(self.endpoints) == 1:
            host, _, port = self.endpoints[0].rpartition(":")
            return f"{host.strip('[]')}:{port}" if ":" not in host.strip("[]") else f"{host}:{port}"
        hosts = []
        family = None
        for ep in self.endpoints:
            host, _, port = ep.rpartition(":")
            try:
                addr = ipaddress.ip_address(host.strip("[]"))
            except ValueError:
                raise ConfigError(
                    "several etcd endpoints must be IP addresses; use one DNS name instead"
                ) from None
            fam = "ipv4" if addr.version == 4 else "ipv6"
            if family not in (None, fam):
                raise ConfigError("etcd endpoints mix IPv4 and IPv6")
            family = fam
            hosts.append(f"{addr}:{port}" if fam == "ipv4" else f"[{addr}]:{port}")
        return f"{family}:{','.join(hosts)}"
