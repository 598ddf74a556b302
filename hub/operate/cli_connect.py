"""What every ``processhub`` subcommand shares: exit codes, ``PROCESSHUB_*`` lookup and the
etcd connection options (flags, environment, checks before anything connects)."""

from __future__ import annotations

import argparse
import os
from typing import Any

from hub.errors import ConfigError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what `yes | head` reports


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"PROCESSHUB_{name}", default)


def _csv(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _add_etcd_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--endpoints",
        default=_env("ENDPOINTS") or os.environ.get("ETCD_ENDPOINTS") or "127.0.0.1:2379",
        help="etcd endpoints, comma-separated host:port (env PROCESSHUB_ENDPOINTS)",
    )
    p.add_argument("--prefix", default=_env("PREFIX", "/processhub"), help="etcd key prefix")
    p.add_argument("--etcd-ca", default=_env("ETCD_CA"), help="CA bundle for etcd TLS")
    p.add_argument("--etcd-cert", default=_env("ETCD_CERT"), help="client certificate")
    p.add_argument("--etcd-key", default=_env("ETCD_KEY"), help="client private key")
    p.add_argument(
        "--etcd-server-name",
        default=_env("ETCD_SERVER_NAME"),
        help="name to check in etcd's certificate (needed with several IP endpoints and TLS)",
    )
    p.add_argument("--etcd-user", default=_env("ETCD_USER"), help="etcd user name")
    p.add_argument(
        "--etcd-password-env",
        default="PROCESSHUB_ETCD_PASSWORD",
        help="name of the environment variable holding the etcd password",
    )


def _etcd_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Connection options from the flags, checked before anything connects (exit 2)."""
    from hub.etcd.store import TlsConfig

    kwargs: dict[str, Any] = {"endpoints": _csv(args.endpoints), "prefix": args.prefix}
    if args.etcd_ca or args.etcd_cert or args.etcd_key:
        if bool(args.etcd_cert) != bool(args.etcd_key):
            raise ConfigError("--etcd-cert and --etcd-key go together")
        kwargs["tls"] = TlsConfig(
            _readable(args.etcd_ca, "--etcd-ca"),
            _readable(args.etcd_cert, "--etcd-cert"),
            _readable(args.etcd_key, "--etcd-key"),
            server_name=args.etcd_server_name or None,
        )
    if args.etcd_user:
        password = os.environ.get(args.etcd_password_env)
        if password is None:
            raise ConfigError(
                f"--etcd-user {args.etcd_user}: set the password in ${args.etcd_password_env}"
            )
        kwargs["username"] = args.etcd_user
        kwargs["password"] = password
    return kwargs


def _readable(path: str | None, flag: str) -> str | None:
    """``path`` if it can be opened: a missing certificate is a usage error, not a traceback."""
    if path:
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise ConfigError(f"{flag} {path}: {exc.strerror or exc}") from None
    return path
