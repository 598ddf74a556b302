"""Configuration of node-to-node RPC: addresses, TLS, the token, and the gRPC options.

Part of :mod:`hub.messaging.rpc` (import from there). :class:`RpcConfig` is validated when
built: a bad address, token, size limit or timeout raises :class:`~hub.errors.ConfigError`,
never a default chosen quietly. :func:`server_options` and :func:`channel_options` are the
only place gRPC channel and server options are chosen, each with its reason beside it.
TLS files are read only when credentials are built (:meth:`ServerTls.credentials`, and
``TlsConfig.credentials`` for the client), not when the config is made.

Pure values: nothing here does I/O other than reading TLS files, and nothing creates tasks.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Final

import grpc

from hub.errors import ConfigError
from hub.etcd.store import TlsConfig

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "KEEPALIVE_TIMEOUT_MS",
    "KEEPALIVE_TIME_MS",
    "MIN_PEER_PING_INTERVAL_MS",
    "RECONNECT_BACKOFF_MS",
    "RpcConfig",
    "ServerTls",
    "channel_options",
    "server_options",
]

#: Default size limit of one message (request or reply, envelope included): gRPC's own.
DEFAULT_MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024
#: Ping a connection every 20 s, only while calls are in flight (the etcd lesson: servers
#: answer pings on idle connections with GOAWAY "too_many_pings"); deadlines do the rest.
KEEPALIVE_TIME_MS: Final = 20_000
#: A ping unanswered for 10 s closes the connection: its calls fail as NodeUnreachable.
KEEPALIVE_TIMEOUT_MS: Final = 10_000
#: The server accepts pings this often, below KEEPALIVE_TIME_MS so our own clients are
#: never told too_many_pings.
MIN_PEER_PING_INTERVAL_MS: Final = 10_000
#: Reconnect quickly after a peer restarts: gRPC's default backoff grows to 120 s.
RECONNECT_BACKOFF_MS: Final = (100, 1_000)

_WILDCARD_HOSTS: Final = frozenset({"0.0.0.0", "::", "[::]", "*"})


def _split_host_port(value: str, what: str, *, allow_port_zero: bool) -> tuple[str, int]:
    """``host:port`` with a port in range; an IPv6 host in brackets; no scheme or path."""
    host, sep, port = value.rpartition(":")
    lowest = 0 if allow_port_zero else 1
    if not sep or not host or not port.isdigit() or not lowest <= int(port) <= 65535:
        raise ConfigError(f"{what} {value!r} must look like host:port (port {lowest}..65535)")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not bare or any(c.isspace() or c in "/@[]" for c in bare):
        raise ConfigError(f"{what} {value!r} must look like host:port")
    if ":" in bare:
        if bare == host:
            raise ConfigError(f"{what} {value!r}: put an IPv6 address in brackets, [::1]:port")
        try:
            ipaddress.IPv6Address(bare)
        except ValueError:
            raise ConfigError(f"{what} {value!r}: {bare!r} is not an IPv6 address") from None
    return host, int(port)


@dataclass(frozen=True, slots=True)
class ServerTls:
    """TLS for the RPC server. With ``client_ca_file``, clients must present a certificate
    signed by that CA (mutual TLS)."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None

    def credentials(self) -> grpc.ServerCredentials:
        """Read the PEM files and build gRPC server credentials.

        Raises:
            ConfigError: a file cannot be read.
        """

        def read(path: str) -> bytes:
            try:
                with open(path, "rb") as fh:
                    return fh.read()
            except OSError as exc:
                raise ConfigError(f"cannot read TLS file {path!r}: {exc}") from exc

        ca = read(self.client_ca_file) if self.client_ca_file is not None else None
        return grpc.ssl_server_credentials(
            [(read(self.key_file), read(self.cert_file))],
            root_certificates=ca,
            require_client_auth=ca is not None,
        )


@dataclass(frozen=True, slots=True)
class RpcConfig:
    """How this node serves and sends node-to-node calls.

    Args:
        bind: ``host:port`` to listen on; port 0 picks a free port.
        advertise: ``host:port`` other nodes use to reach this one (the membership
            record's address). Default: the bound address; required when ``bind`` is a
            wildcard (``0.0.0.0``, ``[::]``).
        tls: server certificate and key, and optionally a CA that client certificates must
            chain to. None: plaintext.
        client_tls: what this node uses to call others (CA to verify servers, optional
            client certificate, ``server_name`` to override the checked name). None:
            plaintext.
        token: shared secret every RPC must carry (``authorization: bearer <token>``);
            the same on every node. None: no token.
        max_message_bytes: largest message (request or reply, envelope included) sent
            or accepted.
        call_timeout: deadline of a call or cast when the caller passes none, seconds.
    """

    bind: str = "127.0.0.1:0"
    advertise: str | None = None
    tls: ServerTls | None = None
    client_tls: TlsConfig | None = None
    token: str | None = field(default=None, repr=False)  # never in logs or reprs
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    call_timeout: float = 5.0

    def __post_init__(self) -> None:
        host, _ = _split_host_port(self.bind, "RPC bind address", allow_port_zero=True)
        if self.advertise is not None:
            _split_host_port(self.advertise, "RPC advertise address", allow_port_zero=False)
        elif host in _WILDCARD_HOSTS:
            raise ConfigError(
                f"RPC bind address {self.bind!r} is a wildcard: set advertise to an address "
                "other nodes can reach"
            )
        if self.token is not None and not (
            self.token
            and self.token.isascii()
            and self.token.isprintable()
            and self.token == self.token.strip()
        ):
            raise ConfigError("RPC token must be non-empty printable ASCII without edge spaces")
        if self.max_message_bytes < 1024:
            raise ConfigError("max_message_bytes must be at least 1024")
        if self.call_timeout <= 0:
            raise ConfigError("call_timeout must be > 0")


def server_options(config: RpcConfig) -> list[tuple[str, Any]]:
    """gRPC server options for ``config`` (size limits, ping policy, exclusive port)."""
    return [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        # gRPC sets SO_REUSEPORT by default: a second node could then share a busy port.
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", MIN_PEER_PING_INTERVAL_MS),
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_PEER_PING_INTERVAL_MS),
    ]


def channel_options(config: RpcConfig) -> list[tuple[str, Any]]:
    """gRPC channel options for ``config`` (size limits, keepalive, reconnect, TLS name)."""
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 0),
        # Keep pinging during a long call with no data frames (the default stops after 2).
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
        ("grpc.min_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
        ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[1]),
    ]
    if config.client_tls is not None and config.client_tls.server_name:
        options.append(("grpc.ssl_target_name_override", config.client_tls.server_name))
    return options
